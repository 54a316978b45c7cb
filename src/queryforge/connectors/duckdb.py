"""DuckDB database files, including the local warehouse (`duckdb:.queryforge/warehouse.duckdb`)."""

from __future__ import annotations

from typing import ClassVar

import duckdb
import pyarrow as pa
from sqlglot import exp

from ..errors import TransientError
from ..libs.duckdb_arrow import arrow_table
from ..libs.duckdb_open import open_duckdb
from .base import ColumnInfo, ConnectionConfig, StagedLoad, TableInfo, TargetRef
from .sql import SqlConnector, content_hash, diff_in_duckdb


class DuckDBConnector(SqlConnector):
    scheme = "duckdb"
    dialect: ClassVar[str] = "duckdb"

    def __init__(self, config: ConnectionConfig, root: object) -> None:
        super().__init__(config, root)  # type: ignore[arg-type]
        self._con: duckdb.DuckDBPyConnection | None = None

    @property
    def path(self) -> str:
        where = self.location()
        return ":memory:" if where in ("", ":memory:") else str(self.resolve_path(where))

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            if self.path != ":memory:":
                self.resolve_path(self.location()).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._con = open_duckdb(self.path, read_only=not self.config.writable and self._exists())
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                # Another process holds the file (lock), or this one has it open with other
                # settings (an in-process slot writing while another reads): both pass.
                if "lock" in str(exc).lower() or "different configuration" in str(exc).lower():
                    raise TransientError(
                        f"DuckDB file of connection '{self.name}' is in use by another run",
                        hint="wait for the other run to finish; it is retried",
                    ) from exc
                raise
        return self._con

    def _exists(self) -> bool:
        return self.path != ":memory:" and self.resolve_path(self.location()).exists()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def execute(self, sql: str) -> None:
        try:
            self.con.execute(sql)
        except duckdb.TransactionException as exc:
            raise self._conflict(exc) from exc

    def fetch_arrow(self, sql: str) -> pa.Table:
        try:
            return arrow_table(self.con, sql)  # bound once (libs/duckdb_arrow.py)
        except duckdb.TransactionException as exc:
            raise self._conflict(exc) from exc

    def _conflict(self, exc: duckdb.TransactionException) -> TransientError:
        """Two runs wrote the same rows at once: the later one rolls back and may simply try again."""
        return TransientError(
            f"Write conflict in DuckDB connection '{self.name}' with another run: {str(exc).splitlines()[0]}",
            hint="it is tried again; runs that write one table are best not run at the same time",
        )

    def ingest(self, schema: str | None, name: str, data: pa.RecordBatchReader) -> int:
        """The staged rows, counted by DuckDB as it writes them (CREATE TABLE ... AS answers with
        the number of rows written): no second scan of the staged table to count it."""
        self.con.register("_qf_ingest", data)
        create = exp.Create(
            this=self.table_expr(schema, name),
            kind="TABLE",
            expression=exp.select(exp.Star()).from_("_qf_ingest"),
        )
        try:
            written = self.con.execute(self.sql(create)).fetchall()
        except duckdb.TransactionException as exc:
            raise self._conflict(exc) from exc
        finally:
            self.con.unregister("_qf_ingest")
        return int(written[0][0]) if written and written[0] else 0

    def table_columns(self, schema: str | None, name: str) -> list[tuple[str, str]] | None:
        # duckdb_columns() answers in about half the time of information_schema.columns (a run of
        # a load asks ~6 times), with the same names and types.
        rows = self.con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
            [schema or "main", name],
        ).fetchall()
        return [(r[0], r[1]) for r in rows] or None

    def kind_of(self, schema: str | None, name: str) -> str | None:
        found = self.con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema or "main", name],
        ).fetchall()
        return None if not found else "view" if found[0][0] == "VIEW" else "table"

    def introspect(self) -> list[TableInfo]:
        tables = self.con.execute(  # views too (load mode view): no row estimate without running them
            "SELECT schema_name, table_name, estimated_size FROM duckdb_tables() WHERE schema_name <> ? "
            "UNION ALL SELECT schema_name, view_name, NULL FROM duckdb_views() "
            "WHERE NOT internal AND schema_name <> ? ORDER BY 1, 2",
            ["_qf_staging", "_qf_staging"],
        ).fetchall()
        out = []
        for schema, name, estimate in tables:
            cols = self.con.execute(
                "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [schema, name],
            ).fetchall()
            out.append(
                TableInfo(
                    name=name,
                    schema=None if schema == "main" else schema,
                    columns=tuple(ColumnInfo(c, t, bool(n)) for c, t, n in cols),
                    row_estimate=estimate,
                )
            )
        return out

    def diff_relations(self, load: StagedLoad) -> dict[str, int]:
        return diff_in_duckdb(
            self.con,
            self.sql(self.staging_expr(load)),
            self.sql(self.target_expr(load.target)),
            load.mode,
            load.keys,
            staged_cols=load.columns or None,  # as staging read them back
            compare=load.check_columns,
        )

    def fingerprint(self, target: TargetRef) -> str | None:
        schema, name = target.schema_and_name
        if self.table_columns(schema, name) is None:
            return None
        return content_hash(self.con, self.sql(self.target_expr(target)))
