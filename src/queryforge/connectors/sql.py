"""Write-audit-publish mechanics shared by every SQL database connector.

A subclass declares its dialect and how to connect, run SQL and ingest Arrow; staging,
diffs, fingerprints, snapshots and the one-transaction publish are written once, here,
as sqlglot expressions transpiled to the connector's dialect.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
from sqlglot import exp

from .. import faults
from ..errors import SpecError, StepFailed, UserError, did_you_mean
from ..sql.parse import DIALECT, SqlProblem, ident, parse_select
from .base import Connector, Snapshot, StagedLoad, TargetRef

STAGING_SCHEMA = "_qf_staging"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


class SqlConnector(Connector):
    """A database that speaks SQL. Subclasses override the few methods that truly differ."""

    dialect: ClassVar[str] = DIALECT
    supports_schemas: ClassVar[bool] = True
    can_write = True

    # ------------------------------------------------------------ per-backend primitives
    def execute(self, sql: str) -> None:
        raise NotImplementedError

    def fetch_arrow(self, sql: str) -> pa.Table:
        raise NotImplementedError

    def ingest(self, schema: str | None, name: str, data: pa.RecordBatchReader) -> int:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def table_columns(self, schema: str | None, name: str) -> list[tuple[str, str]] | None:
        """Columns of a table, or None when it does not exist."""
        raise NotImplementedError

    # ------------------------------------------------------------ helpers
    def sql(self, expression: exp.Expr) -> str:
        return expression.sql(dialect=self.dialect)

    def table_expr(self, schema: str | None, name: str) -> exp.Table:
        return exp.Table(this=ident(name), db=ident(schema) if schema else None)

    def target_expr(self, target: TargetRef) -> exp.Table:
        schema, name = target.schema_and_name
        if schema and not self.supports_schemas:
            raise SpecError(
                f"Connection '{self.name}' has no schemas, so table '{target.table}' cannot be used",
                hint=f"write table: {name}",
            )
        return self.table_expr(schema, name)

    def staging_location(self, run_id: str, step_id: str) -> tuple[str | None, str]:
        name = f"{_safe(run_id)}__{_safe(step_id)}"
        if self.supports_schemas:
            return STAGING_SCHEMA, name
        return None, f"{STAGING_SCHEMA}__{name}"

    def staging_expr(self, load: StagedLoad) -> exp.Table:
        schema, _, name = load.staging_name.rpartition(".")
        return self.table_expr(schema or None, name)

    def scalar(self, expression: exp.Expr) -> Any:
        table = self.fetch_arrow(self.sql(expression))
        return table.column(0)[0].as_py() if table.num_rows else None

    # ------------------------------------------------------------ reading
    def read(
        self, table: str | None = None, query: str | None = None, columns: list[str] | None = None
    ) -> pa.RecordBatchReader:
        if query is not None:
            return self.fetch_arrow(query).to_reader()
        assert table is not None
        target = self.target_expr(TargetRef(self.name, table))
        schema, name = TargetRef(self.name, table).schema_and_name
        if self.table_columns(schema, name) is None:
            raise UserError(
                f"Table '{table}' does not exist in connection '{self.name}'",
                hint=f"run 'queryforge catalog {self.name}' to list its tables",
            )
        cols: list[exp.Expr] = [exp.column(ident(c)) for c in columns] if columns else [exp.Star()]
        return self.fetch_arrow(self.sql(exp.select(*cols).from_(target))).to_reader()

    def describe(
        self, *, table: str | None, query: str | None, columns: list[str] | None, where: str
    ) -> list[tuple[str, str]]:
        """Column names and DuckDB types of what an extract would read, without reading the data."""
        if query is not None:
            sample = self.fetch_arrow(
                self.sql(
                    exp.select(exp.Star())
                    .from_(
                        exp.Subquery(
                            this=parse_select_for(query, where), alias=exp.TableAlias(this=ident("q"))
                        )
                    )
                    .limit(0)
                )
            )
        else:
            assert table is not None
            schema, name = TargetRef(self.name, table).schema_and_name
            existing = self.table_columns(schema, name)
            if existing is None:
                names = [t.qualified for t in self.introspect()]
                raise UserError(
                    f"Table '{table}' does not exist in connection '{self.name}'",
                    where=where,
                    hint=did_you_mean(table, names),
                )
            if columns:
                known = [c for c, _ in existing]
                for c in columns:
                    if c.lower() not in {k.lower() for k in known}:
                        raise UserError(
                            f"Column '{c}' does not exist in table '{table}' of connection '{self.name}'",
                            where=where,
                            hint=did_you_mean(c, known),
                        )
            cols: list[exp.Expr] = [exp.column(ident(c)) for c in columns] if columns else [exp.Star()]
            sample = self.fetch_arrow(
                self.sql(exp.select(*cols).from_(self.target_expr(TargetRef(self.name, table))).limit(0))
            )
        with duckdb.connect() as con:
            con.register("sample", sample)
            return [(r[0], r[1]) for r in con.execute("DESCRIBE sample").fetchall()]

    # ------------------------------------------------------------ write
    def stage(self, run_id: str, load: StagedLoad, data: pa.RecordBatchReader) -> StagedLoad:
        schema, name = self.staging_location(run_id, load.step_id)
        if schema:
            self.execute(
                self.sql(exp.Create(this=exp.Schema(this=ident(schema)), kind="SCHEMA", exists=True))
            )
        self.execute(self.sql(exp.Drop(tables=[self.table_expr(schema, name)], kind="TABLE", exists=True)))
        rows = self.ingest(schema, name, data)
        load.staging_name = f"{schema}.{name}" if schema else name
        load.rows = rows
        load.columns = self.table_columns(schema, name) or []
        if load.mode == "merge":
            self._check_merge_keys(load)
        load.fingerprint_before = self.fingerprint(load.target)
        load.diff = self.diff(load)
        return load

    def _check_merge_keys(self, load: StagedLoad) -> None:
        names = {c.lower() for c, _ in load.columns}
        missing = [k for k in load.keys if k.lower() not in names]
        if missing:
            raise SpecError(
                f"Merge key '{missing[0]}' is not a column of the data loaded by step '{load.step_id}'"
            )
        keys = [exp.column(ident(k)) for k in load.keys]
        dupes = exp.select(exp.func("count", exp.Star())).from_(
            exp.select(*keys)
            .from_(self.staging_expr(load))
            .group_by(*keys)
            .having(exp.GT(this=exp.func("count", exp.Star()), expression=exp.Literal.number(1)))
            .subquery("d")
        )
        count = self.scalar(dupes)
        if count:
            raise StepFailed(
                f"The data merged by step '{load.step_id}' has {count} duplicate key"
                f"{'s' if count > 1 else ''} on ({', '.join(load.keys)})",
                hint="add a 'dedupe' step on the merge keys before the load",
            )

    def diff(self, load: StagedLoad) -> dict[str, int]:
        """Rows added / removed / changed that publishing this load would cause."""
        schema, name = load.target.schema_and_name
        prod_cols = self.table_columns(schema, name)
        if prod_cols is None or load.mode == "append":
            return {"added": load.rows, "removed": 0, "changed": 0}
        if [c.lower() for c, _ in prod_cols] != [
            c.lower() for c, _ in load.columns
        ] and load.mode == "replace":
            return {"added": load.rows, "removed": self.snapshot(load.target).rows, "changed": 0}
        return self.diff_relations(load)

    def diff_relations(self, load: StagedLoad) -> dict[str, int]:
        """Generic diff: both tables copied into an in-process DuckDB (backends override with native SQL)."""
        with duckdb.connect() as con:
            con.register(
                "staged", self.fetch_arrow(self.sql(exp.select(exp.Star()).from_(self.staging_expr(load))))
            )
            con.register(
                "prod",
                self.fetch_arrow(self.sql(exp.select(exp.Star()).from_(self.target_expr(load.target)))),
            )
            return diff_in_duckdb(con, "staged", "prod", load.mode, load.keys)

    def publish(self, loads: list[StagedLoad]) -> None:
        with self.transaction():
            for load in loads:
                self._publish_one(load)
                faults.point("publish.in_transaction")
        for load in loads:
            self.execute(self.sql(exp.Drop(tables=[self.staging_expr(load)], kind="TABLE", exists=True)))

    def _publish_one(self, load: StagedLoad) -> None:
        target = self.target_expr(load.target)
        staged = self.staging_expr(load)
        schema, name = load.target.schema_and_name
        existing = self.table_columns(schema, name)
        if schema and existing is None:
            self.execute(
                self.sql(exp.Create(this=exp.Schema(this=ident(schema)), kind="SCHEMA", exists=True))
            )
        if load.mode == "replace" or existing is None:
            self.execute(self.sql(exp.Drop(tables=[target], kind="TABLE", exists=True)))
            self.execute(
                self.sql(
                    exp.Create(this=target, kind="TABLE", expression=exp.select(exp.Star()).from_(staged))
                )
            )
            return
        staged_names = [c for c, _ in load.columns]
        self._check_evolution(load, existing)
        cols = [exp.column(ident(c)) for c in staged_names]
        if load.mode == "merge":
            keys = [exp.column(ident(k)) for k in load.keys]
            key_tuple = keys[0] if len(keys) == 1 else exp.Tuple(expressions=keys)
            delete = exp.Delete(
                this=target,
                where=exp.Where(
                    this=exp.In(
                        this=key_tuple,
                        query=exp.select(*[k.copy() for k in keys]).from_(staged.copy()).subquery(),
                    )
                ),
            )
            self.execute(self.sql(delete))
        insert = exp.Insert(
            this=exp.Schema(this=target, expressions=[ident(c) for c in staged_names]),
            expression=exp.select(*cols).from_(staged),
        )
        self.execute(self.sql(insert))

    def _check_evolution(self, load: StagedLoad, existing: list[tuple[str, str]]) -> None:
        have = {c.lower() for c, _ in existing}
        new = [c for c, _ in load.columns if c.lower() not in have]
        if new:
            raise StepFailed(
                f"Step '{load.step_id}' would add column{'s' if len(new) > 1 else ''} "
                f"{', '.join(new)} to {load.target.connection}.{load.target.table}, and its schema "
                f"policy is 'fail'",
                hint="use mode: replace, or add the column to the table first",
            )

    def discard(self, loads: list[StagedLoad]) -> None:
        for load in loads:
            if load.staging_name:
                self.execute(self.sql(exp.Drop(tables=[self.staging_expr(load)], kind="TABLE", exists=True)))

    def snapshot(self, target: TargetRef) -> Snapshot:
        schema, name = target.schema_and_name
        cols = self.table_columns(schema, name)
        if cols is None:
            return Snapshot(target=target.table, exists=False)
        rows = self.scalar(exp.select(exp.func("count", exp.Star())).from_(self.target_expr(target)))
        return Snapshot(target=target.table, exists=True, columns=tuple(cols), rows=int(rows or 0))

    def fingerprint(self, target: TargetRef) -> str | None:
        """A content hash of a production table, to detect changes between audit and commit."""
        schema, name = target.schema_and_name
        if self.table_columns(schema, name) is None:
            return None
        data = self.fetch_arrow(self.sql(exp.select(exp.Star()).from_(self.target_expr(target))))
        with duckdb.connect() as con:
            con.register("t", data)
            return content_hash(con, "t")

    def preview(self, load: StagedLoad, limit: int = 10) -> pa.Table:
        return self.fetch_arrow(self.sql(exp.select(exp.Star()).from_(self.staging_expr(load)).limit(limit)))


def diff_in_duckdb(
    con: duckdb.DuckDBPyConnection, staged: str, prod: str, mode: str, keys: list[str]
) -> dict[str, int]:
    """Diff two relations visible to one DuckDB connection (names are trusted internal names)."""
    if mode == "merge" and keys:
        on = " AND ".join(f's."{k}" IS NOT DISTINCT FROM p."{k}"' for k in keys)
        prod_cols = {r[0].lower() for r in con.execute(f"DESCRIBE {prod}").fetchall()}
        same = " AND ".join(
            _same_value(name, kind) if name.lower() in prod_cols else "false"
            for name, kind, *_ in con.execute(f"DESCRIBE {staged}").fetchall()
        )
        row = con.execute(
            f"SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {prod} p WHERE {on})),"
            f" count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {prod} p WHERE {on}) AND NOT EXISTS ("
            f"SELECT 1 FROM {prod} p WHERE {on} AND {same})) FROM {staged} s"
        ).fetchall()[0]
        assert row is not None
        return {"added": int(row[0]), "removed": 0, "changed": int(row[1])}
    row = con.execute(
        f"SELECT (SELECT count(*) FROM (SELECT * FROM {staged} EXCEPT ALL SELECT * FROM {prod})),"
        f" (SELECT count(*) FROM (SELECT * FROM {prod} EXCEPT ALL SELECT * FROM {staged}))"
    ).fetchall()[0]
    assert row is not None
    return {"added": int(row[0]), "removed": int(row[1]), "changed": 0}


def _same_value(column: str, kind: str) -> str:
    """Equality for the diff; floating sums differ in the last bits between runs, so they get a tolerance."""
    c = column.replace('"', '""')
    if kind.upper() in ("DOUBLE", "FLOAT", "REAL"):
        return (
            f'((s."{c}" IS NULL AND p."{c}" IS NULL) OR abs(s."{c}" - p."{c}") <= '
            f'1e-9 * greatest(abs(s."{c}"), abs(p."{c}"), 1))'
        )
    return f's."{c}" IS NOT DISTINCT FROM p."{c}"'


def content_hash(con: duckdb.DuckDBPyConnection, relation: str) -> str:
    """Row count, order-insensitive row hash and column names of a relation DuckDB can see."""
    row = con.execute(f"SELECT count(*), coalesce(bit_xor(hash(t)), 0) FROM {relation} t").fetchall()[0]
    names = [d[0] for d in con.execute(f"SELECT * FROM {relation} LIMIT 0").description]
    assert row is not None
    return f"{row[0]}:{row[1]}:{','.join(names)}"


def parse_select_for(query: str, where: str) -> exp.Query:
    """A user's extract query, which must be one read-only SELECT."""
    try:
        return parse_select(query)
    except SqlProblem as exc:
        raise SpecError(
            f"Extract query is not allowed: {exc}", where=where, hint="write a single SELECT statement"
        ) from None
