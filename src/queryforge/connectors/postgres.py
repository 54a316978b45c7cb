"""PostgreSQL (`postgresql://user@host:5432/db`): Arrow in and out through ADBC (binary COPY).

Control statements (DDL, the publish transaction) go through psycopg; data never does: reads are
streamed by ADBC's `COPY (query) TO STDOUT` and staging is filled by `adbc_ingest` (binary COPY
FROM). Reads run in a READ ONLY transaction with `SET LOCAL` time limits; COPY takes exactly one
SELECT, so a read can never be a second statement. Replace is an atomic swap: inside the publish
transaction the staged table is renamed into place, so a replace costs no copy.
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import adbc_driver_postgresql.dbapi as adbc_pg
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from .. import faults
from ..errors import QueryForgeError, StepFailed
from ..sql.parse import ident
from .base import ColumnInfo, ReadRequest, RoleFinding, StagedLoad, TableInfo, TargetRef
from .driver_errors import map_postgres_error
from .sql import (
    JdbcAccess,
    SqlConnector,
    StreamMark,
    diff_counts,
    diff_query,
    fingerprint_text,
    literal,
    next_batch,
    transpile,
)

READ_TIMEOUT_MS = (
    15 * 60 * 1000
)  # a read statement may run this long (connection option `statement_timeout_ms`)
LOCK_TIMEOUT_MS = 60 * 1000

# Built-in roles whose members read or write the server's files, run programs on it, or signal
# other sessions' backends.
SERVER_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")
SIGNAL_ROLE = "pg_signal_backend"
# Functions that reach outside the READ ONLY transaction (dblink runs in its own session) or read
# and write the server's files, wherever an extension installed them.
OUTSIDE_FUNCTIONS = (
    "dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_send_query", "dblink_open",
    "lo_import", "lo_export", "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file",
    "pg_file_write", "pg_file_rename", "pg_file_unlink",
)  # fmt: skip
# Functions that run a SQL string (or read whole tables) past any policy on the statement's text.
SQL_STRING_FUNCTIONS = tuple(
    f"{what}_to_{kind}"
    for what in ("query", "table", "schema", "database", "cursor")
    for kind in ("xml", "xmlschema", "xml_and_xmlschema")
    if not (what == "cursor" and kind == "xml_and_xmlschema")
)
# What the role may do, in one catalog query (has_*_privilege folds in ownership, PUBLIC and
# inherited roles). A function counts only when its schema is usable too.
ROLE_QUERY = r"""
SELECT current_user, current_database(), r.rolsuper, r.rolcreaterole, r.rolcreatedb,
  has_database_privilege(current_database(), 'CREATE'),
  ARRAY(SELECT n.nspname::text FROM pg_namespace n WHERE has_schema_privilege(n.oid, 'CREATE')
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%%'
        ORDER BY 1),
  ARRAY(SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg\_%%' AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
        ORDER BY 1),
  ARRAY(SELECT b.rolname::text FROM pg_roles b WHERE b.rolname = ANY(%s)
        AND pg_has_role(current_user, b.oid, 'MEMBER') ORDER BY 1),
  ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname = ANY(%s)
        AND has_function_privilege(p.oid, 'EXECUTE') AND has_schema_privilege(p.pronamespace, 'USAGE')
        ORDER BY 1),
  ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname = ANY(%s)
        AND has_function_privilege(p.oid, 'EXECUTE') AND has_schema_privilege(p.pronamespace, 'USAGE')
        ORDER BY 1)
FROM pg_roles r WHERE r.rolname = current_user
"""
DOCS = "docs/connectors.md#least-privilege"
# The comment QueryForge puts on the views it publishes: a table only such views read is replaced
# in place (its views keep working); one a view of somebody else's reads is not replaced at all.
VIEW_COMMENT = "Published by QueryForge"


class PostgresConnector(SqlConnector):
    scheme = "postgresql"
    aliases = ("postgres",)
    dialect: ClassVar[str] = "postgres"
    guarded_reads: ClassVar[bool] = True
    checks_privileges: ClassVar[bool] = True
    default_schema = "public"

    _con: psycopg.Connection[Any] | None = None

    # ------------------------------------------------------------ connecting
    @property
    def uri(self) -> str:
        """The libpq URI with the `password` option (a resolved secret) put in."""
        parts = urlsplit(self.config.url.replace("postgres://", "postgresql://", 1))
        password = self.config.options.get("password")
        if password is None or "@" not in parts.netloc:
            return urlunsplit(parts._replace(scheme="postgresql"))
        user, host = parts.netloc.rsplit("@", 1)
        user = user.split(":", 1)[0]
        netloc = f"{user}:{quote(str(password), safe='')}@{host}"
        return urlunsplit(parts._replace(scheme="postgresql", netloc=netloc))

    @property
    def database(self) -> str:
        return unquote(urlsplit(self.config.url).path.lstrip("/")) or "postgres"

    @property
    def con(self) -> psycopg.Connection[Any]:
        if self._con is None or self._con.closed:  # a restarted server leaves a closed connection
            with map_postgres_error(self.name):
                self._con = psycopg.connect(self.uri, autocommit=True, connect_timeout=10)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._forget_append_connection()

    _append_con: Any = None  # the ADBC connection a stream's direct appends keep between batches

    def _forget_append_connection(self) -> None:
        con, self._append_con = self._append_con, None
        if con is not None:
            with suppress(Exception):  # closing rolls back whatever was not committed
                con.close()

    @contextmanager
    def _adbc(self) -> Iterator[Any]:
        with map_postgres_error(self.name), adbc_pg.connect(self.uri) as con:
            yield con

    # ------------------------------------------------------------ primitives
    def execute(self, sql: str) -> None:
        with map_postgres_error(self.name):
            self.con.execute(sql.encode())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with map_postgres_error(self.name), self.con.transaction():
            self.con.execute(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}".encode())
            yield

    def fetch_arrow(self, sql: str) -> pa.Table:
        return self.stream_arrow(sql, 100_000).read_all()

    def stream_arrow(self, sql: str, batch_rows: int) -> pa.RecordBatchReader:
        """Stream a read-only query; the ADBC connection lives as long as the reader is consumed."""
        timeout = int(self.config.options.get("statement_timeout_ms", READ_TIMEOUT_MS))
        stack = self._adbc()
        con = stack.__enter__()
        try:
            cur = con.cursor()
            with map_postgres_error(self.name):
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(f"SET LOCAL statement_timeout = {timeout}")
                cur.execute(sql)
                source = cur.fetch_record_batch()
                # The query runs while the first batch is produced: its failure (a timeout, a write
                # refused by READ ONLY) is raised here, classified, not later inside the consumer.
                first = next_batch(source)
        except BaseException as exc:
            stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        schema = arrow_schema(source.schema)

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                with map_postgres_error(self.name):
                    if first is not None:
                        yield normalize(first, schema)
                    for batch in source:
                        yield normalize(batch, schema)
            finally:
                cur.close()
                con.rollback()
                stack.__exit__(None, None, None)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def ingest(self, schema: str | None, name: str, data: pa.RecordBatchReader) -> int:
        """Create the table from the Arrow schema, then COPY the data in (one ADBC connection)."""
        wide = storable_schema(data.schema, self.name)
        if wide != data.schema:
            data = pa.RecordBatchReader.from_batches(wide, (batch.cast(wide) for batch in data))
        where = schema or self.default_schema
        with self._adbc() as con, con.cursor() as cur:
            self._create_from_arrow(cur, where, name, wide)
            rows = cur.adbc_ingest(name, data, mode="append", db_schema_name=where)
            con.commit()
        return int(rows)

    def create_staging_table(self, schema: str | None, name: str, columns: pa.Schema) -> None:
        where = schema or self.default_schema
        with self._adbc() as con, con.cursor() as cur:
            self._create_from_arrow(cur, where, name, storable_schema(columns, self.name))
            con.commit()

    def _create_from_arrow(self, cur: Any, where: str, name: str, columns: pa.Schema) -> None:
        """The empty table for data of this schema. ADBC creates decimal columns as unconstrained
        `numeric`, which reads back as DOUBLE; each gets the precision and scale of its Arrow type
        before any row is copied."""
        cur.adbc_ingest(name, columns.empty_table(), mode="create", db_schema_name=where)
        table = self.sql(self.table_expr(where, name))
        for f in columns:
            if pa.types.is_decimal(f.type) and f.type.precision <= 1000:
                column = self.sql(ident(f.name))
                kind = f"numeric({f.type.precision},{f.type.scale})"
                cur.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {kind}")

    direct_appends: ClassVar[bool] = True

    def append_batch(
        self, appends: list[tuple[TargetRef, pa.RecordBatchReader]], mark: StreamMark
    ) -> list[int]:
        """COPY straight into the targets, then the position row: one ADBC connection (kept for the
        stream's next batch: connecting costs more than a small batch's COPY), one commit. The
        position table exists: the stream's first batch, always staged, created it."""
        written: list[int] = []
        try:
            with map_postgres_error(self.name):
                if self._append_con is None:
                    self._append_con = adbc_pg.connect(self.uri)
                con = self._append_con
                with con.cursor() as cur:
                    cur.execute(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}")
                    for target, data in appends:
                        wide = storable_schema(data.schema, self.name)
                        if wide != data.schema:
                            data = pa.RecordBatchReader.from_batches(wide, (b.cast(wide) for b in data))
                        schema, name = target.schema_and_name
                        where = schema or self.default_schema
                        written.append(int(cur.adbc_ingest(name, data, mode="append", db_schema_name=where)))
                        faults.point("publish.in_transaction")
                    for statement in self.stream_batch_statements(mark):
                        cur.execute(statement)
                    faults.point("stream.in_transaction")
                    con.commit()
        except BaseException as exc:
            self._forget_append_connection()  # rolled back with it
            if isinstance(exc, Exception):
                self._refuse_if_taken(mark)
            raise
        return written

    # ------------------------------------------------------------ for engines that move data themselves
    def jdbc(self) -> JdbcAccess | None:
        """The server by TCP for PostgreSQL's JDBC driver; None for a Unix socket (JDBC has none).
        Reads open read-only with the same statement time limit as `stream_arrow`; inserts are
        batched into multi-row statements by the driver (`reWriteBatchedInserts`)."""
        parts = urlsplit(self.uri)
        params = parse_qs(parts.query)
        host = parts.hostname or ""
        if not host or host.startswith("/") or "host" in params or "," in parts.netloc:
            return None
        host = f"[{host}]" if ":" in host else host
        base = f"jdbc:postgresql://{host}:{parts.port or 5432}/{quote(self.database, safe='')}"
        extra = [f"sslmode={quote(params['sslmode'][0], safe='')}"] if "sslmode" in params else []
        timeout = int(self.config.options.get("statement_timeout_ms", READ_TIMEOUT_MS))
        return JdbcAccess(
            url=base + ("?" + "&".join(extra) if extra else ""),
            write_url=base + "?" + "&".join([*extra, "reWriteBatchedInserts=true"]),
            driver="org.postgresql.Driver",
            user=unquote(parts.username or "") or getpass.getuser(),
            password=unquote(parts.password or ""),
            read_init="SELECT set_config('default_transaction_read_only', 'on', false), "
            f"set_config('statement_timeout', '{timeout}', false)",
        )

    def estimate_rows(self, request: ReadRequest) -> int | None:
        """The planner's row estimate of the extract's query (EXPLAIN plans it, never runs it),
        asked in a READ ONLY transaction; None when it cannot be planned (the read will say why)."""
        sql = "EXPLAIN (FORMAT JSON) " + self.sql(self.source_query(request))
        try:
            with map_postgres_error(self.name), self.con.transaction():
                self.con.execute(b"SET TRANSACTION READ ONLY")
                self.con.execute(f"SET LOCAL statement_timeout = {int(LOCK_TIMEOUT_MS)}".encode())
                row = self.con.execute(sql.encode()).fetchone()
        except QueryForgeError:
            return None
        try:
            return int(row[0][0]["Plan"]["Plan Rows"]) if row else None
        except (LookupError, TypeError, ValueError):
            return None

    def table_columns(self, schema: str | None, name: str) -> list[tuple[str, str]] | None:
        with map_postgres_error(self.name):
            rows = self.con.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                [schema or self.default_schema, name],
            ).fetchall()
        return [(r[0], r[1]) for r in rows] or None

    def kind_of(self, schema: str | None, name: str) -> str | None:
        with map_postgres_error(self.name):
            found = self.con.execute(
                "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                [schema or self.default_schema, name],
            ).fetchone()
        return None if found is None else "view" if found[0] == "v" else "table"

    default_view_schema = "public"

    def lock_sources(self, load: StagedLoad) -> None:
        """SHARE mode: writers of the view's sources wait for the publish to commit, so the sources
        verified are the sources the view shows when it appears."""
        if load.sources:
            tables = ", ".join(self.sql(self.source_table(name)) for name in sorted(load.sources))
            self.execute(f"LOCK TABLE {tables} IN SHARE MODE")

    def create_view(self, target: exp.Table, load: StagedLoad, exists: bool) -> None:
        """CREATE OR REPLACE VIEW keeps views that read this one; PostgreSQL refuses it when columns
        are dropped, renamed or retyped, and then the view is dropped and created (in the transaction)."""
        statement = f"CREATE OR REPLACE VIEW {self.sql(target)} AS {load.view}"
        if not exists:
            self.execute(statement)
        else:
            self.execute("SAVEPOINT qf_view")
            try:
                self.execute(statement)
            except QueryForgeError:
                self.execute("ROLLBACK TO SAVEPOINT qf_view")
                self.execute(self.sql(exp.Drop(tables=[target], kind="VIEW")))
                self.execute(f"CREATE VIEW {self.sql(target)} AS {load.view}")
            self.execute("RELEASE SAVEPOINT qf_view")
        note = f"{VIEW_COMMENT} (load step {load.step_id})".replace("'", "''")
        self.execute(f"COMMENT ON VIEW {self.sql(target)} IS '{note}'")

    def test(self) -> str:
        with map_postgres_error(self.name):
            row = self.con.execute("SELECT current_user, version()").fetchone()
        assert row is not None
        return f"connected as {row[0]} to {row[1].split(',')[0]}"

    def role_report(self) -> list[RoleFinding]:
        with map_postgres_error(self.name):
            row = self.con.execute(
                ROLE_QUERY,
                [[*SERVER_ROLES, SIGNAL_ROLE], list(OUTSIDE_FUNCTIONS), list(SQL_STRING_FUNCTIONS)],
            ).fetchone()
        assert row is not None
        return postgres_findings(RoleFacts(*row), writable=self.config.writable)

    # ------------------------------------------------------------ catalog
    def introspect(self) -> list[TableInfo]:
        with map_postgres_error(self.name):
            tables = self.con.execute(
                "SELECT n.nspname, c.relname, greatest(c.reltuples, 0)::bigint, c.reltuples < 0 "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname NOT IN "
                "('pg_catalog', 'information_schema', %s) AND n.nspname NOT LIKE 'pg\\_%%' "
                "AND NOT c.relispartition ORDER BY 1, 2",
                [self.staging_schema],
            ).fetchall()
            columns = self.con.execute(
                "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
                "NOT a.attnotnull FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attnum > 0 AND NOT a.attisdropped "
                "AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY n.nspname, c.relname, a.attnum"
            ).fetchall()
            keys = self.con.execute(
                "SELECT n.nspname, c.relname, con.contype, a.attname, fn.nspname, fc.relname, fa.attname "
                "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "CROSS JOIN LATERAL unnest(con.conkey, coalesce(con.confkey, con.conkey)) "
                "WITH ORDINALITY AS k(attnum, fattnum, ord) "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
                "LEFT JOIN pg_class fc ON fc.oid = con.confrelid "
                "LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace "
                "LEFT JOIN pg_attribute fa ON fa.attrelid = fc.oid AND fa.attnum = k.fattnum "
                "WHERE con.contype IN ('p', 'f') ORDER BY con.conname, k.ord"
            ).fetchall()
        cols: dict[tuple[str, str], list[ColumnInfo]] = {}
        for schema, table, column, kind, nullable in columns:
            cols.setdefault((schema, table), []).append(ColumnInfo(column, kind, bool(nullable)))
        pks: dict[tuple[str, str], list[str]] = {}
        fks: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for schema, table, kind, column, fschema, ftable, fcolumn in keys:
            if kind == "p":
                pks.setdefault((schema, table), []).append(column)
            else:
                ref = (
                    f"{ftable}.{fcolumn}"
                    if fschema == self.default_schema
                    else f"{fschema}.{ftable}.{fcolumn}"
                )
                fks.setdefault((schema, table), []).append((column, ref))
        return [
            TableInfo(
                name=table,
                schema=None if schema == self.default_schema else schema,
                columns=tuple(cols.get((schema, table), ())),
                row_estimate=None if unknown else int(estimate),
                primary_key=tuple(pks.get((schema, table), ())),
                foreign_keys=tuple(fks.get((schema, table), ())),
            )
            for schema, table, estimate, unknown in tables
        ]

    # ------------------------------------------------------------ native audit and publish
    def fingerprint(self, target: TargetRef) -> str | None:
        """Count and two exact sums of seeded 64-bit hashes of each row, in one pass in the database.

        A row is hashed as the text of `ROW(c1, ..., cn)`, which quotes values and leaves NULL empty,
        so NULL is not 'NULL' and values cannot slide between columns. Sums (numeric) count equal rows
        twice where XOR cancelled them. `OFFSET 0` keeps the row text computed once for both hashes;
        hashtextextended costs what the old XOR did, where md5 cost three times as much.
        """
        schema, name = target.schema_and_name
        cols = self.table_columns(schema, name)
        if cols is None:
            return None
        row_text = f"ROW({', '.join(self.sql(ident(c)) for c, _ in cols)})::text"
        sums = ", ".join(f"coalesce(sum(hashtextextended(r, {seed})), 0)" for seed in (0, 1))
        rows = f"SELECT {row_text} AS r FROM {self.sql(self.target_expr(target))} OFFSET 0"
        with map_postgres_error(self.name):
            row = self.con.execute(f"SELECT count(*), {sums} FROM ({rows}) AS qf_rows".encode()).fetchone()
        assert row is not None
        return fingerprint_text(row, cols)

    def replace_table(self, load: StagedLoad, exists: bool) -> None:
        """Swap: drop production and rename the staged table into its place (no copy). A table that
        QueryForge's views read is replaced in place instead (PostgreSQL binds a view to its table,
        not its name); under any other view the swap fails, saying what depends on the table."""
        readers = self._views_reading(load.target) if exists else {}
        if readers and all((c or "").startswith(VIEW_COMMENT) for c in readers.values()):
            self._replace_under_views(load, sorted(readers))
            return
        target = self.target_expr(load.target)
        schema, name = load.target.schema_and_name
        staging_schema, staging_name = load.staging_name.split(".", 1)
        if exists:
            self.drop_table(target)
        staged = self.sql(self.table_expr(staging_schema, staging_name))
        self.execute(f"ALTER TABLE {staged} SET SCHEMA {self.sql(ident(schema or self.default_schema))}")
        moved = self.sql(self.table_expr(schema or self.default_schema, staging_name))
        self.execute(f"ALTER TABLE {moved} RENAME TO {self.sql(ident(name))}")

    def _views_reading(self, target: TargetRef) -> dict[str, str | None]:
        """The views that read a table (PostgreSQL would refuse to drop it under them), each with
        its comment."""
        schema, name = target.schema_and_name
        with map_postgres_error(self.name):
            rows = self.con.execute(
                "SELECT DISTINCT format('%%I.%%I', vn.nspname, v.relname), "
                "obj_description(v.oid, 'pg_class') FROM pg_depend d "
                "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
                "JOIN pg_namespace vn ON vn.oid = v.relnamespace "
                "JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass "
                "AND n.nspname = %s AND c.relname = %s AND v.oid <> c.oid ORDER BY 1",
                [schema or self.default_schema, name],
            ).fetchall()
        return {str(r[0]): r[1] for r in rows}

    def _replace_under_views(self, load: StagedLoad, readers: list[str]) -> None:
        """Replace the rows of a table that views read, keeping the table (and so the views): new
        columns are added at its end; dropped or retyped columns are refused, as the views bind them."""
        schema, name = load.target.schema_and_name
        staging_schema, staging_name = load.staging_name.split(".", 1)
        existing = self.table_columns(schema, name) or []
        staged_cols = self.table_columns(staging_schema, staging_name) or []
        if staged_cols[: len(existing)] != existing:
            raise StepFailed(
                f"Table {load.target.connection}.{load.target.table} is read by the view"
                f"{'s' if len(readers) > 1 else ''} {', '.join(readers)}, and step '{load.step_id}' "
                "replaces it with other columns; PostgreSQL keeps a view bound to its table's columns, "
                "so nothing was published",
                hint="drop those views first (their pipelines publish them again: queryforge run --select "
                f"{load.target.table}+), or keep the table's columns and types (new ones may be added)",
            )
        target = self.target_expr(load.target)
        for column, kind in staged_cols[len(existing) :]:
            self.add_column(target, column, kind)
        names = ", ".join(self.sql(ident(c)) for c, _ in staged_cols)
        self.execute(f"TRUNCATE {self.sql(target)}")
        self.execute(
            f"INSERT INTO {self.sql(target)} ({names}) SELECT {names} "
            f"FROM {self.sql(self.table_expr(staging_schema, staging_name))}"
        )

    def merge_into(self, load: StagedLoad, target: exp.Table, staged: exp.Table) -> None:
        """`INSERT ... ON CONFLICT (keys) DO UPDATE` when a unique index covers exactly the keys."""
        schema, name = load.target.schema_and_name
        if not self._has_unique(schema or self.default_schema, name, load.keys):
            super().merge_into(load, target, staged)
            return
        names = [c for c, _ in load.columns]
        keys = {k.lower() for k in load.keys}
        quoted = ", ".join(self.sql(ident(c)) for c in names)
        values = ", ".join(self.sql(v) for v in self.staged_values(load, target, names))
        updates = ", ".join(
            f"{self.sql(ident(c))} = EXCLUDED.{self.sql(ident(c))}" for c in names if c.lower() not in keys
        )
        conflict = ", ".join(self.sql(ident(k)) for k in load.keys)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        self.execute(
            f"INSERT INTO {self.sql(target)} ({quoted}) SELECT {values} FROM {self.sql(staged)} "
            f"ON CONFLICT ({conflict}) {action}"
        )

    def mark_literal(self, value: Any) -> exp.Expr:
        """An aware high-water mark is an instant: a timestamptz literal, whatever the session's zone."""
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.build("timestamptz"))
        return literal(value)

    # ------------------------------------------------------------ type conversions
    def staged_values(self, load: StagedLoad, target: exp.Table, names: list[str]) -> list[exp.Expr]:
        """Staged columns converted to the target's column types where they differ.

        Data reaches staging through Arrow, so json, jsonb, uuid (and enums, ...) arrive as text,
        and PostgreSQL assigns text to them only with an explicit cast.
        """
        existing = self.table_columns(target.db or None, target.name) or []
        wanted = {c.lower(): t for c, t in existing}
        have = {c.lower(): t for c, t in load.columns}
        return [self._convert(c, have.get(c.lower()), wanted.get(c.lower())) for c in names]

    def _convert(self, column: str, source: str | None, target: str | None) -> exp.Expr:
        """`column` of type `source` as type `target`: a cast where PostgreSQL has one, else through text."""
        value: exp.Expr = exp.column(ident(column))
        if source is None or target is None or source == target:
            return value
        with map_postgres_error(self.name):
            row = self.con.execute(
                "SELECT %s::regtype = %s::regtype OR EXISTS (SELECT 1 FROM pg_cast "
                "WHERE castsource = %s::regtype AND casttarget = %s::regtype)",
                [source, target, source, target],
            ).fetchone()
        if not (row and row[0]):
            value = exp.cast(value, exp.DataType.build("text"))
        return exp.Cast(this=value, to=exp.DataType(this=exp.DataType.Type.USERDEFINED, kind=target))

    def diff_relations(self, load: StagedLoad) -> dict[str, int]:
        """The diff inside the database, with both sides in comparable types.

        A merge compares staged values converted to production's types (as publishing will store
        them); a replace compares columns whose types differ as text. json, which has no equality,
        is compared as jsonb.
        """
        schema, name = load.target.schema_and_name
        prod_cols = self.table_columns(schema, name) or []
        target = self.target_expr(load.target)
        q = self.sql

        def comparable(kind: str) -> str:
            return "jsonb" if kind == "json" else kind

        def as_type(column: str, source: str, kind: str) -> str:
            return f"{q(self._convert(column, source, kind))} AS {q(ident(column))}"

        if load.mode in ("merge", "snapshot"):
            prod = {c.lower(): t for c, t in prod_cols}
            staged_list = [
                as_type(c, t, comparable(prod.get(c.lower(), t))) if c.lower() in prod else q(ident(c))
                for c, t in load.columns
            ]
            prod_list = [as_type(c, t, comparable(t)) for c, t in prod_cols]
        else:
            staged_list, prod_list = [], []
            for (c, t), (p, pt) in zip(load.columns, prod_cols, strict=True):
                same = t == pt and comparable(t) == t
                staged_list.append(q(ident(c)) if same else as_type(c, t, "text"))
                prod_list.append(q(ident(p)) if same else as_type(p, pt, "text"))
        query = diff_query(
            "qf_staged",
            "qf_prod",
            load.mode,
            load.keys,
            load.columns,
            {c.lower() for c, _ in prod_cols},
            load.check_columns,
        )
        sql = (
            f"WITH qf_staged AS (SELECT {', '.join(staged_list)} FROM {q(self.staging_expr(load))}), "
            f"qf_prod AS (SELECT {', '.join(prod_list)} FROM {q(target)}) {transpile(query, self.dialect)}"
        )
        result = self.fetch_arrow(sql)
        return diff_counts([c[0].as_py() for c in result.columns], load.mode, load.keys)

    def _has_unique(self, schema: str, name: str, keys: list[str]) -> bool:
        with map_postgres_error(self.name):
            rows = self.con.execute(
                "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
                "WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL "
                "AND i.indexprs IS NULL GROUP BY i.indexrelid",
                [schema, name],
            ).fetchall()
        wanted = sorted(keys)
        return any(sorted(r[0]) == wanted for r in rows)


# ------------------------------------------------------------ the role's power


@dataclass(frozen=True)
class RoleFacts:
    """What ROLE_QUERY found, in its column order."""

    role: str
    database: str
    superuser: bool
    createrole: bool
    createdb: bool
    create_in_database: bool
    create_in_schemas: list[str]
    writable_tables: list[str]
    member_of: list[str]
    outside_functions: list[str]
    sql_string_functions: list[str]


_QUALIFIED_SCHEMA = re.compile(r'(?:"(?:[^"]|"")*"|[^."]+)\.')


def _schema_of(qualified: str) -> str:
    """The schema of a name made by format('%I.%I'): all before the first dot outside quotes."""
    found = _QUALIFIED_SCHEMA.match(qualified)
    return found[0][:-1] if found else qualified.split(".", 1)[0]


def _listed(items: list[str], most: int = 5) -> str:
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def postgres_findings(facts: RoleFacts, *, writable: bool) -> list[RoleFinding]:
    """The role's powers beyond the connection's purpose, worst first; a superuser is one finding."""
    role = ident(facts.role).sql("postgres")
    if facts.superuser:
        return [
            RoleFinding(
                "superuser",
                "danger",
                f"role {facts.role} is a superuser: it can read and write server files, run programs "
                "on the server and change any data, whatever the connection's settings",
                f"connect as a least-privilege role ({DOCS}), or ALTER ROLE {role} NOSUPERUSER",
            )
        ]
    found: list[RoleFinding] = []
    if server := [r for r in facts.member_of if r in SERVER_ROLES]:
        found.append(
            RoleFinding(
                "server_files",
                "danger",
                f"role {facts.role} is a member of {', '.join(server)}: it can read or write the "
                "server's files or run programs on the server",
                f"REVOKE {', '.join(server)} FROM {role}",
            )
        )
    if facts.outside_functions:
        found.append(
            RoleFinding(
                "outside_functions",
                "danger",
                f"role {facts.role} may execute {_listed(facts.outside_functions)}: they reach outside "
                "the read-only transaction (dblink opens its own session) or read the server's files",
                f"REVOKE EXECUTE ON FUNCTION {', '.join(facts.outside_functions)} FROM PUBLIC, {role}",
            )
        )
    if facts.createrole:
        found.append(
            RoleFinding(
                "createrole",
                "danger",
                f"role {facts.role} has CREATEROLE: it can create roles and grant itself their powers",
                f"ALTER ROLE {role} NOCREATEROLE",
            )
        )
    if facts.sql_string_functions:
        found.append(
            RoleFinding(
                "sql_string_functions",
                "warn",
                f"role {facts.role} may execute {_listed(facts.sql_string_functions)}: they run a SQL "
                "string (or read whole tables) past the SQL policy",
                f"REVOKE EXECUTE ON FUNCTION {', '.join(facts.sql_string_functions)} FROM PUBLIC, {role}",
            )
        )
    if SIGNAL_ROLE in facts.member_of:
        found.append(
            RoleFinding(
                "signal_backend",
                "warn",
                f"role {facts.role} is a member of {SIGNAL_ROLE}: it can cancel and end other sessions",
                f"REVOKE {SIGNAL_ROLE} FROM {role}",
            )
        )
    if facts.createdb:
        found.append(
            RoleFinding(
                "createdb",
                "warn",
                f"role {facts.role} has CREATEDB: it can create databases",
                f"ALTER ROLE {role} NOCREATEDB",
            )
        )
    if not writable:
        found.extend(_write_findings(facts, role))
    return found


def _write_findings(facts: RoleFacts, role: str) -> list[RoleFinding]:
    """A read-only connection whose role can create or change tables: the wall has a door."""
    found = []
    hint = "or mark the connection 'writable: true' if it is meant to write"
    if facts.create_in_database:
        database = ident(facts.database).sql("postgres")
        found.append(
            RoleFinding(
                "create_in_database",
                "warn",
                f"the connection is read-only but role {facts.role} may create schemas in database "
                f"{facts.database}",
                f"REVOKE CREATE ON DATABASE {database} FROM PUBLIC, {role} ({hint})",
            )
        )
    if facts.create_in_schemas:
        schemas = ", ".join(ident(s).sql("postgres") for s in facts.create_in_schemas)
        found.append(
            RoleFinding(
                "create_in_schema",
                "warn",
                f"the connection is read-only but role {facts.role} may create tables in schema "
                f"{_listed(facts.create_in_schemas)}",
                f"REVOKE CREATE ON SCHEMA {schemas} FROM PUBLIC, {role} ({hint})",
            )
        )
    if facts.writable_tables:
        in_schemas = sorted({_schema_of(t) for t in facts.writable_tables})
        found.append(
            RoleFinding(
                "write_grant",
                "warn",
                f"the connection is read-only but role {facts.role} may insert, update, delete or "
                f"truncate {len(facts.writable_tables)} table(s): {_listed(facts.writable_tables)}",
                f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {', '.join(in_schemas)} "
                f"FROM {role} ({hint})",
            )
        )
    return found


# ------------------------------------------------------------ Arrow types PostgreSQL takes and sends


def postgres_storable(field: pa.Field, connection: str) -> None:
    """Refuse, by name, a column ADBC cannot create in PostgreSQL (structs, maps, unions)."""
    t = field.type
    inner = t
    while pa.types.is_list(inner) or pa.types.is_large_list(inner) or pa.types.is_fixed_size_list(inner):
        inner = inner.value_type
    if pa.types.is_struct(inner) or pa.types.is_map(inner) or pa.types.is_union(inner):
        raise StepFailed(
            f"Column '{field.name}' has type {t}, which QueryForge cannot store in connection "
            f"'{connection}' (PostgreSQL)",
            hint=f"turn it into text first, e.g. a 'derive' step with {field.name}: to_json({field.name})",
        )


def storable_schema(schema: pa.Schema, connection: str) -> pa.Schema:
    """`schema` as PostgreSQL will store it: unstorable columns refused by name, and uint64 as
    numeric(20,0) (ADBC would store it in a bigint, wrapping values above 2^63)."""
    for f in schema:
        postgres_storable(f, connection)
    if not any(pa.types.is_uint64(f.type) for f in schema):
        return schema
    return pa.schema([f.with_type(pa.decimal128(20, 0)) if pa.types.is_uint64(f.type) else f for f in schema])


def _numeric_type(field: pa.Field) -> pa.DataType:
    """numeric(p,s) becomes decimal128(p,s); an unconstrained numeric has no fixed scale, so DOUBLE."""
    typmod = int((field.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
    if typmod >= 4:
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        if 0 < precision <= 38:
            return pa.decimal128(precision, scale)
    return pa.float64()


def arrow_schema(schema: pa.Schema) -> pa.Schema:
    """The schema readers expose: PostgreSQL's opaque numeric becomes a real number type."""
    fields = []
    for f in schema:
        if isinstance(f.type, pa.OpaqueType) and f.type.type_name == "numeric":
            fields.append(pa.field(f.name, _numeric_type(f), f.nullable))
        else:
            fields.append(f.remove_metadata())
    return pa.schema(fields)


def normalize(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    columns = []
    for column, field in zip(batch.columns, schema, strict=True):
        if isinstance(column.type, pa.OpaqueType):
            column = pc.cast(column.storage, field.type)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
