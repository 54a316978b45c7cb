"""The connections of a workspace: named configs turned into connectors on first use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError, did_you_mean
from ..secrets import remember
from ..spec.params import substitute
from .base import ConnectionConfig, Connector, connector_for
from .files import FilesConnector
from .sql import SqlConnector

DATABASE_FILES = (".sqlite", ".sqlite3", ".db", ".duckdb")
FILES = "files"  # the implicit connection for `path:` extracts and loads: the workspace folder


def _pairs(raw: Any, resolved: Any) -> Iterator[tuple[Any, Any]]:
    """(raw, resolved) for every string leaf of two parallel nested structures."""
    if isinstance(raw, dict) and isinstance(resolved, dict):
        for key, value in raw.items():
            yield from _pairs(value, resolved.get(key))
    elif isinstance(raw, list) and isinstance(resolved, list):
        for a, b in zip(raw, resolved, strict=False):
            yield from _pairs(a, b)
    else:
        yield raw, resolved


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
            config = self.configs.get(name) or self.file_database(name)
            if config is None:
                raise ConfigError(
                    f"Unknown connection '{name}'",
                    where=where or "queryforge.yaml",
                    hint=did_you_mean(name, [c for c in self.configs if c != FILES])
                    or "define it under 'connections:' in queryforge.yaml",
                )
            # Secrets (${env:...}) are resolved only for a connection that is used.
            where_ = f"queryforge.yaml: connections.{name}"
            options = substitute(config.options, {}, where=where_)
            url = substitute(config.url, {}, where=where_)
            for raw, value in [(config.url, url), *_pairs(config.options, options)]:
                if raw != value:
                    remember(value)
            if "password" in options:
                remember(options["password"])
            self._open[name] = connector_for(replace(config, url=url, options=options), self.root)
        return self._open[name]

    @staticmethod
    def database_file_name(path: str) -> str | None:
        """The implicit connection name of a database file in the workspace (`@data/legacy.sqlite`)."""
        return f"@{path}" if path.lower().endswith(DATABASE_FILES) else None

    def file_database(self, name: str) -> ConnectionConfig | None:
        """`@path` names a SQLite or DuckDB file inside the workspace, read-only."""
        if not name.startswith("@"):
            return None
        path = name[1:]
        scheme = "duckdb" if path.lower().endswith(".duckdb") else "sqlite"
        if not (self.root / path).is_file():
            raise UserError(
                f"Database file '{path}' does not exist", hint="paths are relative to the workspace"
            )
        return ConnectionConfig(name=name, url=f"{scheme}:{path}", writable=False)

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
