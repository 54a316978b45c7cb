"""The connections of a workspace: named configs turned into connectors on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError, did_you_mean
from ..secrets import remember
from ..spec.params import PLACEHOLDER, substitute
from .base import ConnectionConfig, Connector, connector_for
from .files import FilesConnector
from .paths import PathFence, real_path
from .sql import SqlConnector

DATABASE_FILES = (".sqlite", ".sqlite3", ".db", ".duckdb")
DEFAULT_SCHEMAS = frozenset({"main", "public"})
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


def _env_values(raw: Any) -> Iterator[str]:
    """The values of the `${env:NAME}` placeholders in a raw config string: the secrets themselves."""
    if isinstance(raw, str):
        for body in PLACEHOLDER.findall(raw):
            if body.startswith("env:") and (value := os.environ.get(body[4:].strip())) is not None:
                yield value


class ConnectionSet:
    """Connectors by name, opened lazily, closed together (DuckDB files lock across processes)."""

    def __init__(self, configs: dict[str, ConnectionConfig], root: Path, default_target: str) -> None:
        self.configs = dict(configs)
        self.configs.setdefault(FILES, ConnectionConfig(name=FILES, url="file:.", writable=True))
        self.root = root
        self.default_target = default_target
        self.fence = PathFence.of(root)
        self._open: dict[str, Connector] = {}

    def use_fence(self, fence: PathFence) -> None:
        """Judge every path by `fence` from now on (the compiler passes the strict one for drafts)."""
        self.fence = fence
        for connector in self._open.values():
            if isinstance(connector, FilesConnector):
                connector.fence = fence

    def get(self, name: str, where: str = "") -> Connector:
        if name not in self._open:
            config = self.configs.get(name) or self.file_database(name, where)
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
                    remember(value, whole=True)  # the pieces of a URL around a secret are not secret
                    for secret in _env_values(raw):
                        remember(secret)
            if "password" in options:
                remember(options["password"])
            connector = connector_for(replace(config, url=url, options=options), self.root)
            if isinstance(connector, FilesConnector):
                connector.fence = self.fence
            self._open[name] = connector
        return self._open[name]

    @staticmethod
    def database_file_name(path: str) -> str | None:
        """The implicit connection name of a database file in the workspace (`@data/legacy.sqlite`)."""
        return f"@{path}" if path.lower().endswith(DATABASE_FILES) else None

    def file_database(self, name: str, where: str = "") -> ConnectionConfig | None:
        """`@path` names a SQLite or DuckDB file (relative to the workspace), read-only and fenced.

        The connector opens the real path the fence judged, not the name again.
        """
        if not name.startswith("@"):
            return None
        path = name[1:]
        resolved = self.database_file(name, who=f"connection '{name}'", field="name", where=where)
        scheme = "duckdb" if path.lower().endswith(".duckdb") else "sqlite"
        if not resolved.is_file():
            raise UserError(
                f"Database file '{path}' does not exist", hint="paths are relative to the workspace"
            )
        return ConnectionConfig(name=name, url=f"{scheme}:{resolved}", writable=False)

    def database_file(self, name: str, *, who: str, field: str, where: str | None = None) -> Path:
        """The real file an `@path` connection name reaches, passed through the fence."""
        return self.fence.check(name[1:], real_path(name[1:], self.root), who=who, field=field, where=where)

    # ------------------------------------------------------------ the path fence
    def fence_step(self, step: str, kind: str, body: Mapping[str, Any], where: str | None = None) -> None:
        """Refuse (PathRefused) any field of an extract or load body naming a file the fence forbids.

        The one place that knows which fields name files: `extract.path` (globs, database files),
        `@file` connections of extracts and loads, and a load's file target (`load.path`, or
        `load.table` of a files connection). The ask gate and the compiler both call it.
        """
        who = f"step '{step}'"
        path, connection = body.get("path"), body.get("connection")
        if isinstance(connection, str) and connection.startswith("@"):
            self.database_file(connection, who=who, field=f"{kind}.connection", where=where)
        if kind == "extract" and isinstance(path, str):
            if self.database_file_name(path):
                self.database_file(f"@{path}", who=who, field="extract.path", where=where)
            else:
                self.files.fenced(path, who=who, field="extract.path", where=where)
        if kind != "load":
            return
        name = connection if isinstance(connection, str) else (FILES if path else self.default_target)
        field_, target = ("load.path", path) if isinstance(path, str) else ("load.table", body.get("table"))
        if isinstance(target, str) and self.holds_files(name):
            connector = self.get(name, where or "")
            assert isinstance(connector, FilesConnector)
            connector.fenced_target(target, who=who, field=field_, where=where)

    def place(self, kind: str, body: Mapping[str, Any]) -> tuple[str, str] | None:
        """Where an extract reads or a load writes, as what it reaches rather than how it is spelled.

        (real file path, "") for a file (`..`, `//` and symlinks resolved; a files connection's table
        is a file in its folder), (database file or connection name, table) for a table, without its
        default catalog and schema. None when the body names no place (or a connection that does
        not exist: compiling says so). The same fields `fence_step` judges.
        """
        path, connection, table = body.get("path"), body.get("connection"), body.get("table")
        if isinstance(path, str) and path and "://" not in path:
            return str(real_path(path, self.root)), _table_key(str(table), "") if table else ""
        name = (
            connection if isinstance(connection, str) else (self.default_target if kind == "load" else None)
        )
        if name is None or not table:
            return None
        if name.startswith("@"):
            return str(real_path(name[1:], self.root)), _table_key(str(table), "")
        if self.holds_files(name):
            connector = self.get(name)
            assert isinstance(connector, FilesConnector)
            return str(real_path(str(table), connector.folder)), ""
        return (name.lower(), _table_key(str(table), name)) if name in self.configs else None

    def holds_files(self, name: str) -> bool:
        """Whether a configured connection is a folder of files (decided without opening it)."""
        config = self.configs.get(name)
        if config is None:
            return False
        scheme = config.url.split(":", 1)[0].lower() if ":" in config.url else "file"
        return scheme in Connector.registry and issubclass(Connector.registry[scheme], FilesConnector)

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


def _table_key(table: str, connection: str) -> str:
    """A table name as the place it reaches: case-folded, default catalog and schema dropped."""
    parts = [p.strip('"`').lower() for p in table.split(".") if p]
    while len(parts) > 1 and parts[0] in {connection.lower(), *DEFAULT_SCHEMAS}:
        parts = parts[1:]
    return ".".join(parts)
