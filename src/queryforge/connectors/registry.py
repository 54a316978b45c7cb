"""The connections of a workspace: named configs turned into connectors on first use."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, UserError, did_you_mean
from .base import ConnectionConfig, Connector, connector_for
from .files import FilesConnector
from .sql import SqlConnector

FILES = "files"  # the implicit connection for `path:` extracts and loads: the workspace folder


class ConnectionSet:
    """Connectors by name, opened lazily, closed together (DuckDB files lock across processes)."""

    def __init__(self, configs: dict[str, ConnectionConfig], root: Path, default_target: str) -> None:
        self.configs = dict(configs)
        self.configs.setdefault(FILES, ConnectionConfig(name=FILES, url="file:.", writable=True))
        self.root = root
        self.default_target = default_target
        self._open: dict[str, Connector] = {}

    def get(self, name: str, where: str = "") -> Connector:
        if name not in self._open:
            config = self.configs.get(name)
            if config is None:
                raise ConfigError(
                    f"Unknown connection '{name}'",
                    where=where or "queryforge.yaml",
                    hint=did_you_mean(name, [c for c in self.configs if c != FILES])
                    or "define it under 'connections:' in queryforge.yaml",
                )
            self._open[name] = connector_for(config, self.root)
        return self._open[name]

    def sql(self, name: str, where: str = "") -> SqlConnector:
        connector = self.get(name, where)
        if not isinstance(connector, SqlConnector):
            raise UserError(
                f"Connection '{name}' is not a database, so it has no tables",
                where=where,
                hint="read files with 'extract: {path: ...}'",
            )
        return connector

    @property
    def files(self) -> FilesConnector:
        connector = self.get(FILES)
        assert isinstance(connector, FilesConnector)
        return connector

    def close(self) -> None:
        for connector in self._open.values():
            connector.close()
        self._open.clear()
