"""MySQL and MariaDB (`mysql://user@host:3306/db`, `mariadb://...`).

Reads stream as Arrow from connectorx (binary protocol: a prepared statement, so one statement
only) in a READ ONLY session with a statement time limit. Writes never go row by row: each Arrow
batch is rendered to MySQL's tab-separated format with Arrow compute kernels and sent with
`LOAD DATA LOCAL INFILE`. Control statements use PyMySQL.

MySQL commits implicitly on DDL, so a publish cannot `DROP`/`CREATE` inside a transaction. A publish
of appends and merges into existing tables is one InnoDB transaction; any publish that replaces,
creates or widens a table instead builds every new table beside production and swaps all of them
in with one `RENAME TABLE` statement, which MySQL performs atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import connectorx as cx
import pyarrow as pa
import pyarrow.compute as pc
import pymysql
from sqlglot import exp

from .. import faults
from ..errors import QueryForgeError, StepFailed
from ..sql.parse import ident
from .base import ColumnInfo, ReadRequest, RoleFinding, StagedLoad, TableInfo, TargetRef
from .driver_errors import map_mysql_error
from .sql import (
    JdbcAccess,
    SqlConnector,
    StreamMark,
    diff_counts,
    diff_query,
    fingerprint_text,
    next_batch,
    transpile,
)

READ_TIMEOUT_S = 15 * 60
_TEXT_TYPES = ("char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json")
NULL = "\\N"
# Privileges that create or change tables and routines: a read-only connection's user needs none.
WRITE_PRIVILEGES = (
    "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX", "CREATE VIEW", "TRIGGER",
    "CREATE ROUTINE", "ALTER ROUTINE", "EVENT", "DELETE HISTORY", "ALL PRIVILEGES",
)  # fmt: skip
# `GRANT privileges ON [TABLE|FUNCTION|PROCEDURE] object TO grantee [...]`; role grants have no ON.
_GRANT = re.compile(
    r"^GRANT (?P<privileges>.+?) ON (?:(?:TABLE|FUNCTION|PROCEDURE|PACKAGE BODY|PACKAGE) )?"
    r"(?P<object>(?:`[^`]*`|[^\s`])+) TO (?P<grantee>(?:`[^`]*`|'[^']*'|[^\s`'])+)"
)
DOCS = "docs/connectors.md#least-privilege"
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"), ("\x00", "\\0"))


class MySQLConnector(SqlConnector):
    transactional_ddl = False  # DROP TABLE commits implicitly
    supports_snapshot = True  # in place (DML in one transaction), or on the copy the swap brings in
    scheme = "mysql"
    aliases = ("mariadb",)
    dialect: ClassVar[str] = "mysql"
    guarded_reads: ClassVar[bool] = True
    checks_privileges: ClassVar[bool] = True

    _con: pymysql.connections.Connection[Any] | None = None
    _mariadb: bool = False

    # ------------------------------------------------------------ connecting
    @property
    def parts(self) -> dict[str, Any]:
        url = urlsplit(self.config.url)
        password = self.config.options.get("password", unquote(url.password) if url.password else "")
        return {
            "host": url.hostname or "127.0.0.1",
            "port": url.port or 3306,
            "user": unquote(url.username or "root"),
            "password": str(password or ""),
            "database": unquote(url.path.lstrip("/")) or None,
        }

    @property
    def con(self) -> pymysql.connections.Connection[Any]:
        if self._con is None or not self._con.open:
            p = self.parts
            with map_mysql_error(self.name):
                self._con = pymysql.connect(
                    **p,
                    autocommit=True,
                    local_infile=True,
                    connect_timeout=10,
                    charset="utf8mb4",
                    init_command="SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
                )
                self._mariadb = "mariadb" in self._con.get_server_info().lower()
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def cx_url(self) -> str:
        p = self.parts
        auth = quote(p["user"], safe="") + (f":{quote(p['password'], safe='')}" if p["password"] else "")
        return f"mysql://{auth}@{p['host']}:{p['port']}/{quote(p['database'] or '', safe='')}"

    # ------------------------------------------------------------ primitives
    def _cursor_run(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with map_mysql_error(self.name), self.con.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def execute(self, sql: str) -> None:
        self._cursor_run(sql)

    def fetch_arrow(self, sql: str) -> pa.Table:
        return self.stream_arrow(sql, 100_000).read_all()

    def stream_arrow(self, sql: str, batch_rows: int) -> pa.RecordBatchReader:
        self.con  # noqa: B018 -- fail fast with a clear error: connectorx waits 30 s on a dead server
        seconds = int(self.config.options.get("statement_timeout_ms", READ_TIMEOUT_S * 1000)) / 1000
        limit = (
            f"SET SESSION max_statement_time = {seconds:g}"
            if self._mariadb
            else f"SET SESSION max_execution_time = {int(seconds * 1000)}"
        )
        with map_mysql_error(self.name):
            reader: pa.RecordBatchReader = cx.read_sql(
                self.cx_url,
                sql,
                return_type="arrow_stream",
                batch_size=batch_rows,
                pre_execution_query=["SET SESSION TRANSACTION READ ONLY", limit],
            )
            # The query runs while the first batch is produced; connectorx reports a failure then
            # (a time limit, a write refused by READ ONLY) by panicking, so map it here, classified.
            first = next_batch(reader)

        def batches() -> Iterator[pa.RecordBatch]:
            with map_mysql_error(self.name):
                if first is not None:
                    yield first
                yield from reader

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    # ------------------------------------------------------------ for engines that move data themselves
    def jdbc(self) -> JdbcAccess | None:
        """The server for MariaDB's JDBC driver (Connector/J 2.x takes `jdbc:mysql:` URLs, and that
        prefix gives Spark its MySQL dialect: backquoted names). Reads open read-only with the same
        statement time limit as `stream_arrow`; inserts are rewritten into multi-row statements."""
        p = self.parts
        seconds = int(self.config.options.get("statement_timeout_ms", READ_TIMEOUT_S * 1000)) / 1000
        self.con  # noqa: B018 -- learns whether the server is MariaDB (their session variables differ)
        init = (
            f"SET SESSION max_statement_time = {seconds:g}, SESSION tx_read_only = 1"
            if self._mariadb
            else f"SET SESSION max_execution_time = {int(seconds * 1000)}, SESSION transaction_read_only = 1"
        )
        host = f"[{p['host']}]" if ":" in p["host"] else p["host"]
        base = f"jdbc:mysql://{host}:{p['port']}/{quote(p['database'] or '', safe='')}"
        return JdbcAccess(
            url=base,
            write_url=base + "?rewriteBatchedStatements=true",
            driver="org.mariadb.jdbc.Driver",
            user=p["user"],
            password=p["password"],
            read_init=init,
        )

    def estimate_rows(self, request: ReadRequest) -> int | None:
        """The optimizer's estimate (EXPLAIN plans the query, never runs it): the most rows any
        table of the plan reads; None when it cannot be planned (the read will say why)."""
        try:
            with map_mysql_error(self.name), self.con.cursor() as cur:
                cur.execute("EXPLAIN " + self.sql(self.source_query(request)))
                names = [d[0].lower() for d in cur.description or ()]
                found = list(cur.fetchall())
        except QueryForgeError:
            return None
        if "rows" not in names:
            return None
        column = names.index("rows")
        return max((int(r[column] or 0) for r in found), default=0)

    def mark_literal(self, value: Any) -> exp.Expr:
        """Datetimes as DATETIME(6): a bare DATETIME cast drops the microseconds of the mark."""
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:  # MySQL datetimes hold UTC wall clocks (see `_text`)
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return exp.cast(
                exp.Literal.string(value.isoformat(sep=" ")),
                exp.DataType.build("DATETIME(6)", dialect="mysql"),
            )
        return super().mark_literal(value)

    def create_staging_table(self, schema: str | None, name: str, columns: pa.Schema) -> None:
        table = self.sql(self.table_expr(schema, name))
        typed = ", ".join(f"{self.sql(ident(f.name))} {mysql_type(f, self.name)}" for f in columns)
        self.execute(f"CREATE TABLE {table} ({typed}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")

    def ingest(self, schema: str | None, name: str, data: pa.RecordBatchReader) -> int:
        table = self.sql(self.table_expr(schema, name))
        self.create_staging_table(schema, name, data.schema)
        fd, path = tempfile.mkstemp(prefix="qf_load_", suffix=".tsv")
        try:
            with os.fdopen(fd, "wb") as out:
                for batch in data:
                    if batch.num_rows:
                        out.write(tsv_bytes(batch))
            names = ", ".join(self.sql(ident(f.name)) for f in data.schema)
            with map_mysql_error(self.name), self.con.cursor() as cur:
                rows = cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
                    "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                    f"({names})",
                    [path],
                )
                cur.execute("SHOW WARNINGS LIMIT 1")
                warning = cur.fetchone()
        finally:
            os.unlink(path)
        if warning:
            raise StepFailed(
                f"Connection '{self.name}' (MySQL) rejected a value while loading {table}: {warning[2]}",
                hint="cast the column to a type the table accepts",
            )
        return int(rows)

    def table_columns(self, schema: str | None, name: str) -> list[tuple[str, str]] | None:
        rows = self._cursor_run(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            [schema, name],
        )
        return [(str(r[0]), str(r[1])) for r in rows] or None

    def kind_of(self, schema: str | None, name: str) -> str | None:
        found = self._cursor_run(
            "SELECT TABLE_TYPE FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
            [schema, name],
        )
        return None if not found else "view" if found[0][0] == "VIEW" else "table"

    @property
    def default_view_schema(self) -> str:  # type: ignore[override]
        """A view's sources are qualified with the connection's database (MySQL keeps them so anyway)."""
        return str(self.parts["database"] or self._cursor_run("SELECT DATABASE()")[0][0])

    def test(self) -> str:
        row = self._cursor_run("SELECT CURRENT_USER(), VERSION()")[0]
        return f"connected as {row[0]} to {'MariaDB' if self._mariadb else 'MySQL'} {row[1]}"

    def role_report(self) -> list[RoleFinding]:
        """From `SHOW GRANTS`, which on MariaDB also lists the grants of the session's active role."""
        user = self._cursor_run("SELECT CURRENT_USER()")[0][0]
        grants = [Grant.parse(str(r[0])) for r in self._cursor_run("SHOW GRANTS")]
        return mysql_findings(str(user), [g for g in grants if g], writable=self.config.writable)

    # ------------------------------------------------------------ catalog
    def introspect(self) -> list[TableInfo]:
        tables = self._cursor_run(
            "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME"
        )
        columns = self._cursor_run(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES' "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "ORDER BY TABLE_NAME, ORDINAL_POSITION"
        )
        keys = self._cursor_run(
            "SELECT TABLE_NAME, COLUMN_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME "
            "FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() "
            "AND (CONSTRAINT_NAME = 'PRIMARY' OR REFERENCED_TABLE_NAME IS NOT NULL) "
            "ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION"
        )
        cols: dict[str, list[ColumnInfo]] = {}
        for table, column, kind, nullable in columns:
            cols.setdefault(table, []).append(ColumnInfo(column, kind, bool(nullable)))
        pks: dict[str, list[str]] = {}
        fks: dict[str, list[tuple[str, str]]] = {}
        for table, column, constraint, ref_table, ref_column in keys:
            if constraint == "PRIMARY":
                pks.setdefault(table, []).append(column)
            else:
                fks.setdefault(table, []).append((column, f"{ref_table}.{ref_column}"))
        return [
            TableInfo(
                name=table,
                columns=tuple(cols.get(table, ())),
                row_estimate=None if rows is None else int(rows),
                primary_key=tuple(pks.get(table, ())),
                foreign_keys=tuple(fks.get(table, ())),
            )
            for table, rows in tables
        ]

    # ------------------------------------------------------------ native audit and publish
    def diff_relations(self, load: StagedLoad) -> dict[str, int]:
        """The diff inside the database, comparing text by its bytes.

        Text columns default to case-insensitive, space-padded collations, under which 'ann' equals
        'Ann ' -- but publishing would still change the stored value, so the diff must count it.
        """
        schema, name = load.target.schema_and_name
        prod_cols = self.table_columns(schema, name) or []

        def exact(column: str, kind: str) -> str:
            quoted = self.sql(ident(column))
            if kind.lower().startswith(_TEXT_TYPES):
                return f"CAST(CONVERT({quoted} USING utf8mb4) AS BINARY) AS {quoted}"
            return quoted

        staged = ", ".join(exact(c, t) for c, t in load.columns)
        prod = ", ".join(exact(c, t) for c, t in prod_cols)
        query = diff_query(
            "qf_staged",
            "qf_prod",
            load.mode,
            load.keys,
            load.columns,
            {c.lower() for c, _ in prod_cols},
            compare=load.check_columns,
        )
        result = self.fetch_arrow(
            f"WITH qf_staged AS (SELECT {staged} FROM {self.sql(self.staging_expr(load))}), "
            f"qf_prod AS (SELECT {prod} FROM {self.sql(self.target_expr(load.target))}) "
            f"{transpile(query, self.dialect)}"
        )
        return diff_counts([c[0].as_py() for c in result.columns], load.mode, load.keys)

    def fingerprint(self, target: TargetRef) -> str | None:
        """Count and the exact sums of both 64-bit halves of each row's MD5, in one pass in the database.

        Each value is written as its byte length, ':' and its bytes, NULL as 'N' (no length starts
        with N), so NULL is not 'NULL' and values cannot slide between columns. Sums (DECIMAL) count
        equal rows twice where XOR cancelled them.
        """
        schema, name = target.schema_and_name
        cols = self.table_columns(schema, name)
        if cols is None:
            return None
        values = []
        for column, _ in cols:
            raw = f"CAST({self.sql(ident(column))} AS BINARY)"
            values.append(f"IFNULL(CONCAT(LENGTH({raw}), ':', {raw}), 'N')")
        halves = ", ".join(
            f"IFNULL(SUM(CAST(CONV(SUBSTRING(h, {start}, 16), 16, 10) AS UNSIGNED)), 0)" for start in (1, 17)
        )
        row = self._cursor_run(
            f"SELECT COUNT(*), {halves} FROM (SELECT MD5(CONCAT_WS(',', {', '.join(values)})) AS h "
            f"FROM {self.sql(self.target_expr(target))}) AS r"
        )[0]
        return fingerprint_text(row, cols)

    def stream_key(self, stream: str) -> str:
        return f"{self.parts['database'] or ''}/{stream}"  # _qf_staging is one per server

    def publish(self, loads: list[StagedLoad], mark: StreamMark | None = None) -> None:
        current = {id(load): self._existing(load) for load in loads}
        if mark is not None:  # a stream's batch commits with its position: only in place (one transaction)
            for load in loads:
                if current[id(load)] is None:  # an empty table first; MySQL's DDL would commit anyway
                    empty = exp.select(exp.Star()).from_(self.staging_expr(load)).limit(0)
                    self.execute(
                        self.sql(
                            exp.Create(this=self.target_expr(load.target), kind="TABLE", expression=empty)
                        )
                    )
                    current[id(load)] = self._existing(load)
        in_place = all(
            load.mode not in ("replace", "view")  # a view is DDL: it joins the one RENAME TABLE
            and (cols := current[id(load)]) is not None
            and not self.new_columns(load, cols)
            for load in loads
        )
        if in_place:
            super().publish(loads, mark)
        elif mark is not None:
            raise StepFailed(
                f"A batch of stream '{mark.stream}' brings new columns for a MySQL table; MySQL cannot add "
                "them inside the batch's transaction",
                hint="add the columns to the table first, or select only its columns before the load",
            )
        else:
            self._publish_by_swap(loads, current)

    def timestamp_value(self, value: str | None) -> exp.Expr:
        # DATETIME alone keeps whole seconds: versions published within a second would tie.
        return exp.cast(
            exp.Literal.string(value) if value else exp.Null(),
            exp.DataType.build("DATETIME(6)", dialect="mysql"),
        )

    def _existing(self, load: StagedLoad) -> list[tuple[str, str]] | None:
        schema, name = load.target.schema_and_name
        return self.table_columns(schema, name)

    def _publish_by_swap(self, loads: list[StagedLoad], current: dict[int, Any]) -> None:
        """Build each new production table beside it, then swap them all in with one RENAME TABLE."""
        for load in loads:
            if current[id(load)] is not None and (children := self._referenced_by(load)):
                # RENAME would carry those foreign keys over to the retired table, and dropping it fails.
                raise StepFailed(
                    f"Table {self.name}.{load.target.table} is referenced by foreign keys of "
                    f"{', '.join(children)}, so step '{load.step_id}' cannot swap a new table in for it",
                    hint="append or merge rows with the table's own columns (published in place), "
                    "or drop those foreign keys first",
                )
        renames: list[tuple[exp.Table, exp.Table]] = []
        retired: list[exp.Table] = []
        scratch: list[exp.Table] = []
        self.ensure_ledger()
        try:
            self._build_beside(loads, current, renames, retired, scratch)
            faults.point("publish.in_transaction")
            self.execute("RENAME TABLE " + ", ".join(f"{self.sql(a)} TO {self.sql(b)}" for a, b in renames))
            self.record_published(loads)  # not atomic with the RENAME (MySQL DDL commits on its own)
        except BaseException:
            for table in scratch:  # production is untouched; the tables built beside it must go
                with contextlib.suppress(QueryForgeError):
                    self.drop_relation(table)
            raise
        for table in [*retired, *scratch, *(self.staging_expr(load) for load in loads)]:
            self.drop_relation(table)

    def _build_beside(
        self,
        loads: list[StagedLoad],
        current: dict[int, Any],
        renames: list[tuple[exp.Table, exp.Table]],
        retired: list[exp.Table],
        scratch: list[exp.Table],
    ) -> None:
        for load in loads:
            staged = self.staging_expr(load)
            target = self.target_expr(load.target)
            existing = current[id(load)]
            kind = self.relation_kind(load.target) if existing is not None else None
            if load.mode == "view" or kind == "view":
                self._view_beside(load, kind, renames, retired, scratch)
                continue
            new = staged
            if load.mode == "snapshot":  # the history is kept on a copy, swapped in like the others
                new = self._sibling(load, "next")
                scratch.append(new)
                self.drop_table(new)
                if existing is not None:
                    self.execute(f"CREATE TABLE {self.sql(new)} LIKE {self.sql(target)}")
                    self.execute(f"INSERT INTO {self.sql(new)} SELECT * FROM {self.sql(target)}")
                self.keep_snapshot(load, new, staged, existing)
            elif load.mode != "replace" and existing is not None:
                new = self._sibling(load, "next")
                scratch.append(new)
                self.drop_table(new)
                self.execute(f"CREATE TABLE {self.sql(new)} LIKE {self.sql(target)}")
                self.execute(f"INSERT INTO {self.sql(new)} SELECT * FROM {self.sql(target)}")
                self.evolve(load, existing, new)
                if load.mode == "merge":
                    self.merge_into(load, new, staged)
                else:
                    self.insert_from(load, new, staged)
            schema, _ = load.target.schema_and_name
            if schema:
                self.execute(f"CREATE DATABASE IF NOT EXISTS {self.sql(ident(schema))}")
            if existing is not None:
                old = self._sibling(load, "old")
                self.drop_table(old)
                renames.append((target, old))
                retired.append(old)
            renames.append((new, target))

    def _view_beside(
        self,
        load: StagedLoad,
        kind: str | None,
        renames: list[tuple[exp.Table, exp.Table]],
        retired: list[exp.Table],
        scratch: list[exp.Table],
    ) -> None:
        """A view published (or replaced by a table) in the swap: MySQL renames a view only within its
        database, so the new view and the retired relation sit beside the target, not in staging."""
        target = self.target_expr(load.target)
        schema, name = load.target.schema_and_name
        if schema:
            self.execute(f"CREATE DATABASE IF NOT EXISTS {self.sql(ident(schema))}")
        new = self.staging_expr(load)
        if load.mode == "view":
            if kind == "table" and load.replaces != "table":
                raise StepFailed(
                    f"{load.target.connection}.{load.target.table} became a table after step "
                    f"'{load.step_id}' was staged; the view would replace its data, so nothing was published",
                    hint="publish the view under another name, or drop the table first",
                )
            self.verify_view_sources(load)  # MySQL cannot hold them still: DDL commits on its own
            new = self.table_expr(schema, f"_qf_next__{name}"[:64])
            self.drop_relation(new)
            scratch.append(new)
            self.execute(f"CREATE VIEW {self.sql(new)} AS {load.view}")
        if kind is not None:
            old = self.table_expr(schema, f"_qf_old__{name}"[:64])
            self.drop_relation(old)
            renames.append((target, old))
            retired.append(old)
        renames.append((new, target))

    def _referenced_by(self, load: StagedLoad) -> list[str]:
        """Other tables whose foreign keys reference the load's target."""
        schema, name = load.target.schema_and_name
        rows = self._cursor_run(
            "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE REFERENCED_TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND REFERENCED_TABLE_NAME = %s "
            "AND NOT (TABLE_SCHEMA = REFERENCED_TABLE_SCHEMA AND TABLE_NAME = REFERENCED_TABLE_NAME) "
            "ORDER BY 1, 2",
            [schema, name],
        )
        return [f"{r[0]}.{r[1]}" for r in rows]

    def _sibling(self, load: StagedLoad, suffix: str) -> exp.Table:
        schema, _, name = load.staging_name.rpartition(".")
        return self.table_expr(schema or None, f"{name}__{suffix}"[:64])

    def merge_into(self, load: StagedLoad, target: exp.Table, staged: exp.Table) -> None:
        """`INSERT ... ON DUPLICATE KEY UPDATE` when the primary key is exactly the merge keys."""
        schema = target.db or None
        if sorted(k.lower() for k in self._primary_key(schema, target.name)) != sorted(
            k.lower() for k in load.keys
        ):
            super().merge_into(load, target, staged)
            return
        names = [c for c, _ in load.columns]
        keys = {k.lower() for k in load.keys}
        quoted = ", ".join(self.sql(ident(c)) for c in names)
        updates = ", ".join(
            f"{self.sql(ident(c))} = VALUES({self.sql(ident(c))})" for c in names if c.lower() not in keys
        )
        first = self.sql(ident(load.keys[0]))
        self.execute(
            f"INSERT INTO {self.sql(target)} ({quoted}) SELECT {quoted} FROM {self.sql(staged)} "
            f"ON DUPLICATE KEY UPDATE {updates or f'{first} = {first}'}"
        )

    def _primary_key(self, schema: str | None, name: str) -> list[str]:
        rows = self._cursor_run(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE CONSTRAINT_NAME = 'PRIMARY' "
            "AND TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            [schema, name],
        )
        return [str(r[0]) for r in rows]


# ------------------------------------------------------------ the user's power


@dataclass(frozen=True)
class Grant:
    """One line of SHOW GRANTS: privileges (upper case, no column lists) on an object, to a grantee."""

    privileges: tuple[str, ...]
    on: str  # as the server wrote it: *.*, `db`.*, `db`.`table` (so a REVOKE can name it)
    grantee: str  # as the server wrote it, e.g. `etl`@`%`
    grant_option: bool

    @property
    def shown(self) -> str:
        """The object without quotes and wildcard escapes, for messages."""
        return self.on.replace("`", "").replace("\\", "")

    @staticmethod
    def parse(line: str) -> Grant | None:
        found = _GRANT.match(line)
        if found is None:  # a role granted to the user: its privileges are listed on their own lines
            return None
        privileges = tuple(
            re.sub(r"\s*\(.*\)$", "", p.strip()).upper() for p in _split_top_level(found["privileges"])
        )
        privileges = tuple("ALL PRIVILEGES" if p == "ALL" else p for p in privileges)
        with_option = bool(re.search(r"\bWITH\b.*\bGRANT OPTION\b", line[found.end() :]))
        return Grant(privileges, found["object"], found["grantee"], with_option)


def _split_top_level(text: str) -> list[str]:
    """`SELECT (a, b), INSERT` -> ['SELECT (a, b)', 'INSERT']: commas inside a column list stay."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def mysql_findings(user: str, grants: list[Grant], *, writable: bool) -> list[RoleFinding]:
    """The user's powers beyond the connection's purpose, worst first; ALL on *.* is one finding."""
    name, _, host = user.rpartition("@")
    account = f"'{name}'@'{host}'"
    on_all = {p for g in grants if g.on == "*.*" for p in g.privileges}
    if "ALL PRIVILEGES" in on_all:
        return [
            RoleFinding(
                "superuser",
                "danger",
                f"user {user} has ALL PRIVILEGES on *.*: it can read and write the server's files, "
                "end other sessions and change any data, whatever the connection's settings",
                f"connect as a least-privilege user ({DOCS}), or REVOKE ALL PRIVILEGES, GRANT OPTION "
                f"FROM {account}",
            )
        ]
    found = []
    if "FILE" in on_all:
        found.append(
            RoleFinding(
                "server_files",
                "danger",
                f"user {user} has FILE: it can read and write the server's files (LOAD_FILE, INTO OUTFILE)",
                f"REVOKE FILE ON *.* FROM {account}",
            )
        )
    if "SUPER" in on_all:
        found.append(
            RoleFinding(
                "super",
                "danger",
                f"user {user} has SUPER: it can change server settings, skip read-only mode and end "
                "other sessions",
                f"REVOKE SUPER ON *.* FROM {account}",
            )
        )
    if "PROCESS" in on_all:
        found.append(
            RoleFinding(
                "process",
                "warn",
                f"user {user} has PROCESS: it can see the statements of every other session",
                f"REVOKE PROCESS ON *.* FROM {account}",
            )
        )
    if granting := [g for g in grants if g.grant_option]:
        found.append(
            RoleFinding(
                "grant_option",
                "warn",
                f"user {user} has GRANT OPTION on {', '.join(g.shown for g in granting)}: it can give "
                "its privileges to other users",
                "; ".join(f"REVOKE GRANT OPTION ON {g.on} FROM {g.grantee}" for g in granting),
            )
        )
    if not writable:
        found.extend(_write_findings(user, grants))
    return found


def _write_findings(user: str, grants: list[Grant]) -> list[RoleFinding]:
    """A read-only connection whose user can create or change tables: the wall has a door."""
    writes = [(g, [p for p in g.privileges if p in WRITE_PRIVILEGES]) for g in grants]
    writes = [(g, found) for g, found in writes if found]
    if not writes:
        return []
    return [
        RoleFinding(
            "write_grant",
            "warn",
            f"the connection is read-only but user {user} has "
            + "; ".join(f"{', '.join(ps)} on {g.shown}" for g, ps in writes),
            "; ".join(f"REVOKE {', '.join(ps)} ON {g.on} FROM {g.grantee}" for g, ps in writes)
            + " (or mark the connection 'writable: true' if it is meant to write)",
        )
    ]


# ------------------------------------------------------------ Arrow -> MySQL


def mysql_type(field: pa.Field, connection: str | None = None) -> str:
    """The column type a table created from this Arrow field gets; unmappable types are refused."""
    t = field.type
    ints = {8: "TINYINT", 16: "SMALLINT", 32: "INT", 64: "BIGINT"}
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_signed_integer(t):
        return ints[t.bit_width]
    if pa.types.is_unsigned_integer(t):
        return f"{ints[t.bit_width]} UNSIGNED"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "FLOAT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_decimal(t) and t.precision <= 65:
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "LONGTEXT"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "DATETIME(6)"
    if pa.types.is_time(t):
        return "TIME(6)"
    where = f"connection '{connection}' (MySQL)" if connection else "MySQL"
    raise StepFailed(
        f"Column '{field.name}' has type {t}, which QueryForge cannot store in {where}",
        hint=f"cast it first, e.g. a 'cast' step with {field.name}: VARCHAR",
    )


def _text(column: pa.Array) -> pa.Array:
    """One column in MySQL's LOAD DATA text form (escaped, \\N for NULL), by Arrow kernels only."""
    t = column.type
    if pa.types.is_boolean(t):
        text = pc.if_else(column, "1", "0")
    elif pa.types.is_timestamp(t):
        text = pc.cast(pc.cast(column, pa.timestamp("us")) if t.tz else column, pa.string())
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        text = pc.cast(column, pa.string())
        for raw, escaped in _ESCAPES:
            text = pc.replace_substring(text, raw, escaped)
    else:
        text = pc.cast(column, pa.string())
    return pc.fill_null(text, NULL)


def tsv_bytes(batch: pa.RecordBatch) -> bytes:
    """A batch as tab-separated lines: joined element-wise, so the result's data buffer is the file."""
    for field in batch.schema:
        mysql_type(field)  # refuse unmappable types before writing anything
    lines = pc.binary_join_element_wise(*[_text(c) for c in batch.columns], "\t")
    lines = pc.binary_join_element_wise(lines, pa.scalar("\n"), "")
    lines = lines.cast(pa.large_string())
    offsets = lines.buffers()[1]
    data = lines.buffers()[2]
    start = pa.Array.from_buffers(pa.int64(), 1, [None, offsets], offset=lines.offset)[0].as_py()
    end = pa.Array.from_buffers(pa.int64(), 1, [None, offsets], offset=lines.offset + len(lines))[0].as_py()
    return data[start:end].to_pybytes() if data is not None else b""
