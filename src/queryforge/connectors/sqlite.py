"""SQLite database files (`sqlite:path/to/file.sqlite`): Arrow in and out through ADBC."""

from __future__ import annotations

import sqlite3
from typing import ClassVar

import adbc_driver_sqlite.dbapi as adbc_sqlite
import pyarrow as pa
from sqlglot import exp

from .base import ColumnInfo, StagedLoad, TableInfo
from .sql import LEDGER, STAGING_SCHEMA, SqlConnector


class SQLiteConnector(SqlConnector):
    scheme = "sqlite"
    dialect: ClassVar[str] = "sqlite"
    supports_schemas: ClassVar[bool] = False
    # ADBC's SQLite driver types columns from the first batch of values (1024 rows by default); an
    # empty result would type every column int64, text and dates included.
    describe_rows: ClassVar[int] = 1024

    _con: sqlite3.Connection | None = None

    @property
    def path(self) -> str:
        return str(self.resolve_path(self.location()))

    @property
    def con(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def execute(self, sql: str) -> None:
        self.con.execute(sql)

    def timestamp_value(self, value: str | None) -> exp.Expr:
        # SQLite has no timestamp type; DATETIME() would drop the microseconds that order versions.
        return exp.Literal.string(value) if value else exp.Null()

    def fetch_arrow(self, sql: str) -> pa.Table:
        with adbc_sqlite.connect(self.path) as con, con.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def ingest(self, schema: str | None, name: str, data: pa.RecordBatchReader) -> int:
        with adbc_sqlite.connect(self.path) as con, con.cursor() as cur:
            rows = cur.adbc_ingest(name, data, mode="create")
            con.commit()
        return (
            int(rows)
            if rows is not None and rows >= 0
            else int(self.con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
        )

    def table_columns(self, schema: str | None, name: str) -> list[tuple[str, str]] | None:
        rows = self.con.execute("SELECT name, type FROM pragma_table_info(?)", [name]).fetchall()
        return [(r[0], r[1] or "ANY") for r in rows] or None

    def kind_of(self, schema: str | None, name: str) -> str | None:
        found = self.con.execute(
            "SELECT type FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')", [name]
        ).fetchone()
        return str(found[0]) if found else None

    def create_view(self, target: exp.Table, load: StagedLoad, exists: bool) -> None:
        """SQLite has no CREATE OR REPLACE VIEW: drop and create, in the publish transaction."""
        if exists:
            self.execute(self.sql(exp.Drop(tables=[target], kind="VIEW", exists=True)))
        self.execute(f"CREATE VIEW {self.sql(target)} AS {load.view}")

    def diff_relations(self, load: StagedLoad) -> dict[str, int]:
        return self.diff_by_copy(load)  # SQLite has no EXCEPT ALL

    def staging_tables(self) -> list[str]:
        prefix = f"{STAGING_SCHEMA}__"
        rows = self.con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ? ORDER BY name",
            [len(prefix), prefix],
        ).fetchall()
        return [r[0].removeprefix(prefix) for r in rows if r[0] != f"{prefix}{LEDGER}"]

    def drop_staging(self, name: str) -> None:
        self.execute(f'DROP TABLE IF EXISTS "{STAGING_SCHEMA}__{name}"')

    def introspect(self) -> list[TableInfo]:
        found = self.con.execute(  # views too (load mode view): counted only for tables
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE '\\_qf\\_%' ESCAPE '\\' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        out = []
        for name, kind in found:
            info = self.con.execute(
                'SELECT name, type, "notnull", pk FROM pragma_table_info(?)', [name]
            ).fetchall()
            count = self.con.execute(f'SELECT count(*) FROM "{name}"').fetchone() if kind == "table" else None
            out.append(
                TableInfo(
                    name=name,
                    columns=tuple(ColumnInfo(c, t or "ANY", not nn) for c, t, nn, _ in info),
                    row_estimate=int(count[0]) if count else None,
                    primary_key=tuple(c for c, _, _, pk in sorted(info, key=lambda r: r[3]) if pk),
                )
            )
        return out
