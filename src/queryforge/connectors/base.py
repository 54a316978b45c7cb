"""The connector interface: introspect, read, stage, publish -- one small class per URL scheme.

Data crosses a connector as Arrow. SQL-speaking connectors share the write-audit-publish
mechanics in `SqlConnector`: statements are built as sqlglot expressions in the canonical
dialect and transpiled, so a new database mostly declares its dialect and how to run SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa

from ..errors import ConfigError, PermissionDenied, did_you_mean
from .paths import real_path


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    nullable: bool = True
    description: str | None = None  # from the project's YAML (`load: {columns: ...}`), never the database


@dataclass(frozen=True)
class TableInfo:
    name: str
    schema: str | None = None
    columns: tuple[ColumnInfo, ...] = ()
    row_estimate: int | None = None
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[tuple[str, str], ...] = ()  # (column, "table.column" it references)
    description: str | None = None  # from the project's YAML, never the database

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class TargetRef:
    """A production table (or file) a load writes to."""

    connection: str
    table: str

    @property
    def schema_and_name(self) -> tuple[str | None, str]:
        if "." in self.table:
            schema, name = self.table.split(".", 1)
            return schema, name
        return None, self.table


@dataclass
class StagedLoad:
    """One load's output, written to the run's staging place, waiting for publish."""

    step_id: str
    target: TargetRef
    mode: str
    keys: list[str]
    staging_name: str
    rows: int
    columns: list[tuple[str, str]]
    fingerprint_before: str | None = None
    diff: dict[str, int] = field(default_factory=dict)
    on_schema_change: str = "fail"  # or "add_columns": new columns of the data are added to the table
    check_columns: list[str] = field(default_factory=list)  # snapshot: what makes a new version
    # mode view: the view's SELECT in the target's dialect; nothing is staged, nothing copied
    view: str = ""
    sources: dict[str, str | None] = field(default_factory=dict)  # view: table read -> its fingerprint
    replaces: str = ""  # view: "table" when the publish may replace a table of this pipeline's


# The history columns a `snapshot` load adds (SCD type 2): when each version was valid, and the current one.
SNAPSHOT_COLUMNS = ("valid_from", "valid_to", "is_current")


@dataclass(frozen=True)
class Snapshot:
    target: str
    exists: bool
    columns: tuple[tuple[str, str], ...] = ()
    rows: int = 0


@dataclass(frozen=True)
class ReadRequest:
    """What an extract step asks of a connection: a table, a query, or an API endpoint.

    `cursor`/`since` make it incremental: only rows whose cursor column is greater than `since`
    are wanted (connectors push this down where they can; the executor filters again).
    """

    table: str | None = None
    query: str | None = None
    columns: tuple[str, ...] | None = None
    endpoint: str | None = None
    stream: str | None = None
    types: tuple[tuple[str, str], ...] | None = None  # a stream's declared message columns
    options: Mapping[str, Any] = field(default_factory=dict)
    cursor: str | None = None
    since: Any = None
    batch_rows: int = 100_000


def duckdb_columns(schema: pa.Schema) -> list[tuple[str, str]]:
    """Column names and DuckDB type names of an Arrow schema (how the engine will see the data)."""
    import duckdb

    with duckdb.connect() as con:
        con.register("sample", schema.empty_table())
        return [(r[0], r[1]) for r in con.execute("DESCRIBE sample").fetchall()]


@dataclass(frozen=True)
class RoleFinding:
    """One way the database role of a connection is more powerful than the connection's purpose.

    QueryForge's SQL policy is a guard rail; the role's privileges are the wall. `warn`: a read-only
    connection whose role could write; `danger`: the role could read server files, run programs or
    reach outside its session (superuser, FILE, dblink, ...), whatever the connection says.
    """

    code: str  # stable id for scripts: superuser, write_grant, server_files, ...
    severity: Literal["warn", "danger"]
    message: str
    fix: str  # one line: the statement (or setting) that removes the power

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class ConnectionConfig:
    name: str
    url: str
    writable: bool = False
    options: dict[str, Any] = field(default_factory=dict)


class Connector:
    """Base of all connectors; subclasses register themselves by URL scheme."""

    scheme: ClassVar[str]
    supports_snapshot: ClassVar[bool] = False  # load mode snapshot (SCD type 2 history)
    supports_views: ClassVar[bool] = False  # load mode view (a view over the connection's own tables)
    aliases: ClassVar[tuple[str, ...]] = ()
    can_write: ClassVar[bool] = False
    # Whether `role_report` looks at the database role's privileges (server databases do).
    checks_privileges: ClassVar[bool] = False
    registry: ClassVar[dict[str, type[Connector]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "scheme" in cls.__dict__:
            for name in (cls.scheme, *cls.aliases):
                Connector.registry[name] = cls

    def __init__(self, config: ConnectionConfig, root: Path) -> None:
        self.config = config
        self.root = root

    @property
    def name(self) -> str:
        return self.config.name

    def location(self) -> str:
        """The part of the URL after the scheme."""
        return self.config.url.split(":", 1)[1] if ":" in self.config.url else self.config.url

    def resolve_path(self, text: str) -> Path:
        """The real path a location names (`..` and symlinks resolved), relative to the workspace."""
        return real_path(text.removeprefix("//"), self.root)

    # --------------------------------------------------------- reading
    def introspect(self) -> list[TableInfo]:
        raise NotImplementedError

    def read(self, request: ReadRequest) -> pa.RecordBatchReader:
        """Stream what `request` names as Arrow batches (never the whole source in memory at once)."""
        raise NotImplementedError

    def describe(self, request: ReadRequest, where: str) -> list[tuple[str, str]]:
        """Column names and DuckDB types of what `read(request)` would return, for static validation."""
        raise NotImplementedError

    def test(self) -> str:
        """Connect and say what answered (e.g. the server version); raise a QueryForgeError if nothing did."""
        raise NotImplementedError

    def role_report(self) -> list[RoleFinding]:
        """What the connection's database role may do beyond its purpose (read, or write when
        `writable`); empty when the role fits, or when the connector has no roles to inspect."""
        return []

    # --------------------------------------------------------- writing (write-audit-publish)
    def ensure_writable(self, where: str) -> None:
        if not self.config.writable or not self.can_write:
            reason = "is read-only" if self.can_write else f"({self.scheme}) cannot be written to"
            raise PermissionDenied(
                f"Connection '{self.name}' {reason}",
                where=where,
                hint="mark it 'writable: true' in queryforge.yaml" if self.can_write else None,
            )

    def stage(self, run_id: str, load: StagedLoad, data: pa.RecordBatchReader) -> StagedLoad:
        raise NotImplementedError

    def publish(self, loads: list[StagedLoad]) -> None:
        """Move all staged loads of this connection into production in one transaction."""
        raise NotImplementedError

    def discard(self, loads: list[StagedLoad]) -> None:
        raise NotImplementedError

    def was_published(self, load: StagedLoad) -> bool | None:
        """Whether this load's publish committed, from a record written in the publish transaction;
        None when the connector keeps no such record (then staging and fingerprints tell)."""
        return None

    def staged_exists(self, load: StagedLoad) -> bool:
        """Whether the load's staged data is still there. Publishing removes it in the same transaction
        (or atomic rename), so after a crash mid-publish its absence is the sign the publish committed."""
        raise NotImplementedError

    def relation_kind(self, target: TargetRef) -> str | None:
        """What the target is now: "table", "view", or None when absent (or not a database)."""
        return None

    def stage_view(self, run_id: str, load: StagedLoad) -> StagedLoad:
        """Stage a load of mode view: nothing is copied; the view's query is tried and counted."""
        raise PermissionDenied(
            f"Connection '{self.name}' ({self.scheme}) cannot hold a view",
            where=f"step '{load.step_id}'",
            hint="use mode: replace to copy the data",
        )

    def snapshot(self, target: TargetRef) -> Snapshot:
        raise NotImplementedError

    def fingerprint(self, target: TargetRef) -> str | None:
        raise NotImplementedError

    def preview(self, load: StagedLoad, limit: int = 10) -> pa.Table:
        raise NotImplementedError

    def close(self) -> None:
        """Release locks and handles (DuckDB files are single-writer across processes)."""

    @contextmanager
    def session(self) -> Iterator[Connector]:
        try:
            yield self
        finally:
            self.close()


def connector_for(config: ConnectionConfig, root: Path) -> Connector:
    scheme = config.url.split(":", 1)[0].lower() if ":" in config.url else "file"
    cls = Connector.registry.get(scheme)
    if cls is None:
        raise ConfigError(
            f"Unknown connector '{scheme}' for connection '{config.name}'",
            where="queryforge.yaml",
            hint=did_you_mean(scheme, Connector.registry),
        )
    return cls(config, root)
