"""Write-audit-publish mechanics shared by every SQL database connector.

A subclass declares its dialect and how to connect, run SQL and ingest Arrow; staging,
diffs, fingerprints, snapshots and the one-transaction publish are written once, here,
as sqlglot expressions transpiled to the connector's dialect.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from .. import faults
from ..errors import (
    ProductionChanged,
    QueryForgeError,
    SpecError,
    StepFailed,
    TransientError,
    UserError,
    did_you_mean,
)
from ..sql.parse import DIALECT, SqlProblem, ident, parse_select, table
from .base import SNAPSHOT_COLUMNS, Connector, ReadRequest, Snapshot, StagedLoad, TargetRef, duckdb_columns

STAGING_SCHEMA = "_qf_staging"
LEDGER = "_qf_published"
STREAM_BATCHES = "_qf_stream_batches"  # the committed micro-batches of streams (and their positions)
KEEP_BATCHES = 100  # rows kept per stream in STREAM_BATCHES; older ones are pruned at publish


@dataclasses.dataclass(frozen=True)
class StreamMark:
    """A micro-batch's place in its stream, committed in the same transaction as its rows.

    `batch` numbers the stream's batches from 1; the table's key (stream, batch) makes a second
    consumer that publishes the same batch fail, so two processes never both publish it.
    """

    stream: str
    batch: int
    position: str
    token: str


class StreamConflict(UserError):
    """Another process committed this stream's next batch first."""


@dataclasses.dataclass(frozen=True)
class JdbcAccess:
    """How a JVM (Spark) reaches this database, for engines that move large data by JDBC.

    The password travels as a connection property, never in the URL, and stays out of `repr`, so
    neither a log line nor an error message can carry it.
    """

    url: str  # for reads
    write_url: str  # for batched inserts (with the driver's batch-rewriting option)
    driver: str  # the driver's class, so Spark registers it from the session's jars
    user: str
    password: str = dataclasses.field(repr=False)
    read_init: str = ""  # one statement run when a read's connection opens: read-only, a time limit

    def properties(self) -> dict[str, str]:
        """Connection properties (user and password) as Spark's `jdbc` source takes them."""
        found = {"user": self.user, "driver": self.driver}
        if self.password:
            found["password"] = self.password
        return found


def transpile(sql: str, dialect: str) -> str:
    """Internal SQL written in DuckDB's dialect, in `dialect`."""
    return sql if dialect == DIALECT else sqlglot.transpile(sql, read=DIALECT, write=dialect)[0]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


class SqlConnector(Connector):
    """A database that speaks SQL. Subclasses override the few methods that truly differ."""

    supports_snapshot = True  # SCD type 2 in the publish transaction (keep_snapshot)
    supports_views = True  # load mode view: CREATE VIEW in the publish transaction (publish_view)
    # The schema a view's sources are qualified with when their table names none (see source_table).
    default_view_schema: ClassVar[str] = "main"

    # Rows read to learn the column types of an extract: none where the database reports types
    # of an empty result; a driver that infers them from the values needs a sample.
    describe_rows: ClassVar[int] = 0

    dialect: ClassVar[str] = DIALECT
    supports_schemas: ClassVar[bool] = True
    # DDL inside a transaction commits or rolls back with it (DuckDB, SQLite, PostgreSQL; not MySQL).
    transactional_ddl: ClassVar[bool] = True
    can_write = True
    # Reads run as one statement in a READ ONLY transaction with a time limit, so ad-hoc queries
    # (`queryforge query --connection`) have the database as a second wall below the SQL policy.
    guarded_reads: ClassVar[bool] = False

    # ------------------------------------------------------------ per-backend primitives
    def execute(self, sql: str) -> None:
        raise NotImplementedError

    def fetch_arrow(self, sql: str) -> pa.Table:
        raise NotImplementedError

    def ingest(self, schema: str | None, name: str, data: pa.RecordBatchReader) -> int:
        raise NotImplementedError

    def create_staging_table(self, schema: str | None, name: str, columns: pa.Schema) -> None:
        """Create the (empty) table `ingest` would create for data of this Arrow schema: an engine
        that fills staging itself (Spark JDBC) gets exactly the table the Arrow path gets."""
        raise NotImplementedError

    # ------------------------------------------------------------ for engines that move data themselves
    def jdbc(self) -> JdbcAccess | None:
        """How a JVM reaches this database, or None (no JDBC driver for it, or a Unix socket)."""
        return None

    def estimate_rows(self, request: ReadRequest) -> int | None:
        """The database's own estimate of the rows an extract reads (its planner's), or None when
        it cannot tell; cheap (nothing is read), so an engine can choose how to read."""
        return None

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

    @property
    def staging_schema(self) -> str:
        """Where runs stage their loads (connection option `staging_schema`)."""
        return str(self.config.options.get("staging_schema", STAGING_SCHEMA))

    def staging_location(self, run_id: str, step_id: str) -> tuple[str | None, str]:
        name = f"{_safe(run_id)}__{_safe(step_id)}"
        if len(name) > 60:  # identifiers are short (63 in PostgreSQL): cut, but keep loads apart
            name = f"{name[:51]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        if self.supports_schemas:
            return self.staging_schema, name
        return None, f"{STAGING_SCHEMA}__{name}"

    def staging_expr(self, load: StagedLoad) -> exp.Table:
        schema, _, name = load.staging_name.rpartition(".")
        return self.table_expr(schema or None, name)

    def drop_table(self, table: exp.Table) -> None:
        self.execute(self.sql(exp.Drop(tables=[table], kind="TABLE", exists=True)))

    def ensure_schema(self, schema: str) -> None:
        self.execute(self.sql(exp.Create(this=exp.Schema(this=ident(schema)), kind="SCHEMA", exists=True)))

    def scalar(self, expression: exp.Expr) -> Any:
        table = self.fetch_arrow(self.sql(expression))
        return table.column(0)[0].as_py() if table.num_rows else None

    # ------------------------------------------------------------ reading
    def stream_arrow(self, sql: str, batch_rows: int) -> pa.RecordBatchReader:
        """Run a query and stream its result; backends that can stream override this."""
        return self.fetch_arrow(sql).to_reader(max_chunksize=batch_rows)

    def test(self) -> str:
        value = self.scalar(exp.select(exp.Literal.number(1)))
        return f"{self.scheme} answered SELECT 1 = {value}"

    def source_query(self, request: ReadRequest, where: str = "") -> exp.Select:
        """The SELECT an extract runs: a table or the user's query, its columns, the incremental filter."""
        if request.query is not None:
            source: exp.Expr = exp.Subquery(
                this=parse_select_for(request.query, where, self.dialect),
                alias=exp.TableAlias(this=ident("q")),
            )
        else:
            assert request.table is not None
            source = self.target_expr(TargetRef(self.name, request.table))
        cols: list[exp.Expr] = (
            [exp.column(ident(c)) for c in request.columns] if request.columns else [exp.Star()]
        )
        select = exp.select(*cols).from_(source)
        if request.cursor and request.since is not None:
            select = select.where(
                exp.GT(this=exp.column(ident(request.cursor)), expression=self.mark_literal(request.since))
            )
        return select

    def mark_literal(self, value: Any) -> exp.Expr:
        """A high-water mark as a literal of this database (see `literal`)."""
        return literal(value)

    def read(self, request: ReadRequest) -> pa.RecordBatchReader:
        if request.query is None:
            self._require_table(request, "")
        return self.stream_arrow(self.sql(self.source_query(request)), request.batch_rows)

    def _require_table(self, request: ReadRequest, where: str) -> list[tuple[str, str]]:
        assert request.table is not None
        schema, name = TargetRef(self.name, request.table).schema_and_name
        existing = self.table_columns(schema, name)
        if existing is None:
            names = [t.qualified for t in self.introspect()]
            raise UserError(
                f"Table '{request.table}' does not exist in connection '{self.name}'",
                where=where or None,
                hint=did_you_mean(request.table, names)
                or f"run 'queryforge catalog {self.name}' to list its tables",
            )
        return existing

    def describe(self, request: ReadRequest, where: str) -> list[tuple[str, str]]:
        """Column names and DuckDB types of what an extract would read, without reading the data."""
        if request.query is None:
            known = [c for c, _ in self._require_table(request, where)]
            wanted = list(request.columns or ()) + ([request.cursor] if request.cursor else [])
            for c in wanted:
                if c.lower() not in {k.lower() for k in known}:
                    raise UserError(
                        f"Column '{c}' does not exist in table '{request.table}' of connection '{self.name}'",
                        where=where,
                        hint=did_you_mean(c, known),
                    )
        bare = dataclasses.replace(request, since=None)
        sample = self.fetch_arrow(self.sql(self.source_query(bare, where).limit(self.describe_rows)))
        return duckdb_columns(sample.schema)

    # ------------------------------------------------------------ write
    def stage(
        self, run_id: str, load: StagedLoad, data: pa.RecordBatchReader, *, fingerprint: bool = True
    ) -> StagedLoad:
        def fill(schema: str | None, name: str) -> int:
            try:
                return self.ingest(schema, name, data)
            except BaseException:
                data.close()  # release the engine's open result, so the run can go on to report the failure
                raise

        return self.stage_with(run_id, load, fill, fingerprint=fingerprint)

    def stage_with(
        self,
        run_id: str,
        load: StagedLoad,
        fill: Callable[[str | None, str], int],
        *,
        fingerprint: bool = True,
    ) -> StagedLoad:
        """Stage a load whose rows `fill(schema, name)` writes into the (new) staging table and
        counts. Arrow ingest is one filler, an engine's own writer (Spark JDBC) another: the staging
        place, the merge-key check, the fingerprint and the diff are the same, and so is the publish."""
        if load.mode in ("append", "merge", "snapshot") and self.relation_kind(load.target) == "view":
            verb = "append to" if load.mode == "append" else f"{load.mode} into"
            raise StepFailed(
                f"Step '{load.step_id}' would {verb} "
                f"{load.target.connection}.{load.target.table}, which is a view: the rows would go into "
                "the tables it reads, or nowhere",
                hint="load into another table, or use mode: replace to replace the view with a table",
            )
        schema, name = self.staging_location(run_id, load.step_id)
        if schema:
            self.ensure_schema(schema)
        self.drop_table(self.table_expr(schema, name))
        # Named before the data goes in, so that a failed ingest is discarded too.
        load.staging_name = f"{schema}.{name}" if schema else name
        try:
            rows = fill(schema, name)
        except BaseException as exc:
            if isinstance(exc, QueryForgeError) and exc.where is None:
                exc.where = f"step '{load.step_id}'"
            raise
        load.rows = rows
        load.columns = self.table_columns(schema, name) or []
        if load.mode in ("merge", "snapshot"):
            self._check_merge_keys(load)
        if fingerprint:  # a stream's batches skip it: it reads the whole target, and nobody commits later
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
        """The diff computed inside the database (no data leaves it)."""
        schema, name = load.target.schema_and_name
        prod_cols = {c.lower() for c, _ in self.table_columns(schema, name) or []}
        query = diff_query(
            self.staging_expr(load).sql("duckdb"),
            self.target_expr(load.target).sql("duckdb"),
            load.mode,
            load.keys,
            load.columns,
            prod_cols,
            load.check_columns,
        )
        result = self.fetch_arrow(transpile(query, self.dialect))
        return diff_counts([c[0].as_py() for c in result.columns], load.mode, load.keys)

    def diff_by_copy(self, load: StagedLoad) -> dict[str, int]:
        """Both tables copied into an in-process DuckDB, for backends whose SQL lacks EXCEPT ALL."""
        with duckdb.connect() as con:
            con.register(
                "staged", self.fetch_arrow(self.sql(exp.select(exp.Star()).from_(self.staging_expr(load))))
            )
            con.register(
                "prod",
                self.fetch_arrow(self.sql(exp.select(exp.Star()).from_(self.target_expr(load.target)))),
            )
            return diff_in_duckdb(con, "staged", "prod", load.mode, load.keys, compare=load.check_columns)

    def publish(self, loads: list[StagedLoad], mark: StreamMark | None = None) -> None:
        """All loads in one transaction; with `mark`, the stream's batch and position too."""
        self.ensure_ledger()
        if mark is not None:
            self.ensure_stream_batches()
        try:
            with self.transaction():
                for load in loads:
                    self._publish_one(load)
                    faults.point("publish.in_transaction")
                self.record_published(loads)
                if mark is not None:
                    self.record_stream_batch(mark)
                    faults.point("stream.in_transaction")
                if self.transactional_ddl:  # the staging tables vanish exactly when the publish commits
                    for load in loads:
                        self.drop_table(self.staging_expr(load))
        except Exception:
            if mark is not None:
                self._refuse_if_taken(mark)
            raise
        if not self.transactional_ddl:
            for load in loads:
                self.drop_table(self.staging_expr(load))

    def staged_exists(self, load: StagedLoad) -> bool:
        schema, _, name = load.staging_name.rpartition(".")
        return self.table_columns(schema or None, name) is not None

    # The publish ledger: one row per published load, written inside the publish transaction, so a
    # resume knows for sure whether an interrupted publish committed (other runs writing the same
    # table make production's fingerprint useless for that).
    def ledger_expr(self) -> exp.Table:
        if self.supports_schemas:
            return self.table_expr(self.staging_schema, LEDGER)
        return self.table_expr(None, f"{STAGING_SCHEMA}__{LEDGER}")

    def ensure_ledger(self) -> None:
        if self.supports_schemas:
            self.ensure_schema(self.staging_schema)
        ledger = self.ledger_expr().sql(dialect=DIALECT)
        self.execute(
            transpile(
                f"CREATE TABLE IF NOT EXISTS {ledger} (staging_name VARCHAR(255), published_at VARCHAR(40))",
                self.dialect,
            )
        )

    def meta_expr(self, name: str) -> exp.Table:
        """A table of QueryForge's own in this database (beside the staging tables)."""
        if self.supports_schemas:
            return self.table_expr(self.staging_schema, name)
        return self.table_expr(None, f"{STAGING_SCHEMA}__{name}")

    def ensure_stream_batches(self) -> None:
        # Written as every backend reads it: DuckDB's dialect drops VARCHAR lengths, and MySQL
        # cannot key a TEXT column.
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.sql(self.meta_expr(STREAM_BATCHES))} ("
            "stream VARCHAR(255) NOT NULL, batch BIGINT NOT NULL, position TEXT, token VARCHAR(64), "
            "committed_at VARCHAR(40), PRIMARY KEY (stream, batch))"
        )

    def stream_key(self, stream: str) -> str:
        """A stream's key in STREAM_BATCHES. The staging schema may be shared by several databases
        (MySQL's is one per server), so a connector whose is says which database the rows are in."""
        return stream

    def record_stream_batch(self, mark: StreamMark) -> None:
        """Inside the publish transaction: the batch's row (a duplicate key if another process
        committed this batch first), and the stream's rows older than KEEP_BATCHES pruned."""
        for statement in self.stream_batch_statements(mark):
            self.execute(statement)

    def stream_batch_statements(self, mark: StreamMark) -> list[str]:
        table = self.meta_expr(STREAM_BATCHES)
        now = dt.datetime.now(dt.UTC).isoformat()
        values = [self.stream_key(mark.stream), mark.batch, mark.position, mark.token, now]
        row = exp.Tuple(expressions=[literal(v) for v in values])
        stream = exp.EQ(
            this=exp.column("stream"), expression=exp.Literal.string(self.stream_key(mark.stream))
        )
        old = exp.LT(this=exp.column("batch"), expression=exp.Literal.number(mark.batch - KEEP_BATCHES))
        return [
            self.sql(exp.insert(exp.Values(expressions=[row]), table)),
            self.sql(exp.delete(table, where=exp.and_(stream, old))),
        ]

    def _refuse_if_taken(self, mark: StreamMark) -> None:
        """After a failed stream publish: the clear error when another process committed the batch."""
        if (self.stream_position(mark.stream) or (0, "", ""))[0] >= mark.batch:
            raise StreamConflict(
                f"Batch {mark.batch} of stream '{mark.stream}' was committed by another process",
                hint="run one 'queryforge stream' per pipeline; this one stops (nothing was published twice)",
            ) from None

    # Appends without staging: a stream's batch was audited in the engine already, so a sink that
    # can write rows and the batch's position in one transaction of one connection may skip the
    # staging copy (the runner uses it only where the target's columns are exactly the staged ones).
    direct_appends: ClassVar[bool] = False

    def append_batch(
        self, appends: list[tuple[TargetRef, pa.RecordBatchReader]], mark: StreamMark
    ) -> list[int]:
        """Append each reader to its target and record `mark`, all in one transaction; the rows
        written per target."""
        raise NotImplementedError

    def stream_position(self, stream: str) -> tuple[int, str, str] | None:
        """(batch, position, token) of the stream's last committed batch, or None."""
        schema, name = (
            (self.staging_schema, STREAM_BATCHES)
            if self.supports_schemas
            else (None, f"{STAGING_SCHEMA}__{STREAM_BATCHES}")
        )
        if self.table_columns(schema, name) is None:
            return None
        query = (
            exp.select("batch", "position", "token")
            .from_(self.meta_expr(STREAM_BATCHES))
            .where(exp.EQ(this=exp.column("stream"), expression=exp.Literal.string(self.stream_key(stream))))
            .order_by(exp.Ordered(this=exp.column("batch"), desc=True))
            .limit(1)
        )
        found = self.fetch_arrow(self.sql(query)).to_pylist()
        if not found:
            return None
        return int(found[0]["batch"]), str(found[0]["position"]), str(found[0]["token"])

    def record_published(self, loads: list[StagedLoad]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        rows = [
            exp.Tuple(expressions=[exp.Literal.string(s.staging_name), exp.Literal.string(now)])
            for s in loads
        ]
        if rows:
            self.execute(self.sql(exp.insert(exp.Values(expressions=rows), self.ledger_expr())))

    def was_published(self, load: StagedLoad) -> bool | None:
        schema, name = (
            (self.staging_schema, LEDGER) if self.supports_schemas else (None, f"{STAGING_SCHEMA}__{LEDGER}")
        )
        if self.table_columns(schema, name) is None:
            return False
        found = self.scalar(
            exp.select(exp.func("count", exp.Star()))
            .from_(self.ledger_expr())
            .where(exp.EQ(this=exp.column("staging_name"), expression=exp.Literal.string(load.staging_name)))
        )
        return bool(found)

    def _publish_one(self, load: StagedLoad) -> None:
        target = self.target_expr(load.target)
        staged = self.staging_expr(load)
        schema, name = load.target.schema_and_name
        existing = self.table_columns(schema, name)
        if schema and existing is None:
            self.ensure_schema(schema)
        if load.mode == "view":
            self.publish_view(load)
            return
        if existing is not None and self.relation_kind(load.target) == "view":
            if load.mode != "replace":  # stage refused it already; the view may be new since
                raise StepFailed(
                    f"{load.target.connection}.{load.target.table} became a view after step "
                    f"'{load.step_id}' staged its rows; nothing was published",
                    hint="load into another table, or use mode: replace",
                )
            self.drop_relation(target)  # a view becomes a table: mode replace, in this transaction
            existing = None
        if load.mode == "snapshot":
            self.keep_snapshot(load, target, staged, existing)
            return
        if load.mode == "replace" or existing is None:
            self.replace_table(load, existing is not None)
            return
        self.evolve(load, existing)
        if load.mode == "merge":
            self.merge_into(load, target, staged)
        else:
            self.insert_from(load, target, staged)

    # ------------------------------------------------------------ views (load mode view)
    def kind_of(self, schema: str | None, name: str) -> str | None:
        """What a relation of this database is: "table", "view", or None when absent."""
        raise NotImplementedError

    def relation_kind(self, target: TargetRef) -> str | None:
        return self.kind_of(*target.schema_and_name)

    def drop_relation(self, relation: exp.Table) -> None:
        """Drop a table or a view, whichever it is (DROP TABLE refuses a view, and DROP VIEW a table)."""
        kind = self.kind_of(relation.db or None, relation.name)
        if kind is not None:
            drop = exp.Drop(tables=[relation], kind="VIEW" if kind == "view" else "TABLE", exists=True)
            self.execute(self.sql(drop))

    def source_table(self, name: str) -> exp.Table:
        """A table of this connection as a view reads it: always schema-qualified, so that no step of
        the view (each one a CTE named by its step id) can stand in for it."""
        schema, bare = TargetRef(self.name, name).schema_and_name
        if schema and not self.supports_schemas:
            self.target_expr(TargetRef(self.name, name))  # refuses with its message
        return self.table_expr(schema or self.default_view_schema, bare)

    def view_definition(
        self, steps: list[tuple[str, exp.Query | ReadRequest]], output: str, columns: list[str]
    ) -> str:
        """The SELECT of a view in this database's dialect, generated from a compiled plan: each step
        it needs is a CTE named by its step id, in order (a table read becomes a SELECT from the
        qualified table), and the view shows `output`'s columns by name. Raises sqlglot's
        UnsupportedError when the dialect cannot express a step."""
        ctes = []
        for name, body in steps:
            if isinstance(body, ReadRequest):
                assert body.table is not None
                cols = [exp.column(ident(c)) for c in body.columns] if body.columns else [exp.Star()]
                query: exp.Query = exp.select(*cols).from_(self.source_table(body.table))
            else:
                query = body.copy()
            ctes.append(exp.CTE(this=query, alias=exp.TableAlias(this=ident(name))))
        select = exp.select(*[exp.column(ident(c)) for c in columns]).from_(table(output))
        if ctes:
            select.set("with_", exp.With(expressions=ctes))
        return select.sql(dialect=self.dialect, unsupported_level=sqlglot.ErrorLevel.RAISE)

    def view_sources(self, load: StagedLoad) -> dict[str, str | None]:
        """The fingerprints of the tables a view reads, as they are now."""
        return {name: self.fingerprint(TargetRef(self.name, name)) for name in load.sources}

    def verify_view_sources(self, load: StagedLoad) -> None:
        """The tables the view reads hold what the run read and audited; else nothing is published."""
        now = self.view_sources(load)
        changed = [name for name, printed in load.sources.items() if now.get(name) != printed]
        if changed:
            raise ProductionChanged(
                f"Table {self.name}.{changed[0]}, which the view {load.target.table} of step "
                f"'{load.step_id}' reads, changed after the run read it, so the view would not show "
                "what the run audited; nothing was published",
                hint="run the pipeline again once its upstream has finished (or 'queryforge commit --rerun' "
                "for a sandbox run)",
            )

    def lock_sources(self, load: StagedLoad) -> None:
        """Keep the view's sources from changing until the publish transaction ends (where the
        database can: PostgreSQL); called inside it, before they are verified."""

    def stage_view(self, run_id: str, load: StagedLoad) -> StagedLoad:
        """Nothing is copied: the view's query runs once in this database, which must show as many rows
        as the run computed and audited (`load.rows`), over sources unchanged since the run read them.
        The load is named like a staging table, for the publish ledger; no such table exists."""
        schema, name = self.staging_location(run_id, load.step_id)
        load.staging_name = f"{schema}.{name}" if schema else name
        kind = self.relation_kind(load.target)
        if kind == "table" and load.replaces != "table":
            raise StepFailed(
                f"Step '{load.step_id}' would publish a view as "
                f"{load.target.connection}.{load.target.table}, which is a table this pipeline did not "
                "publish; the view would replace its data",
                hint="publish the view under another name, drop the table first if it is no longer "
                "needed, or use mode: replace to copy the data",
            )
        self.verify_view_sources(load)
        try:
            counted = self.fetch_arrow(f"SELECT count(*) FROM ({load.view}) AS _qf_view")
            shape = self.fetch_arrow(f"SELECT * FROM ({load.view}) AS _qf_view LIMIT {self.describe_rows}")
        except TransientError:
            raise
        except Exception as exc:  # the database's own error: the view's SQL as this dialect reads it
            detail = exc.message if isinstance(exc, QueryForgeError) else str(exc).splitlines()[0]
            raise StepFailed(
                f"Connection '{self.name}' cannot compute the view of step '{load.step_id}': {detail}",
                hint=f"the view's SQL is written in {self.dialect}'s dialect from the pipeline's steps; "
                "write the failing step in SQL both engines read alike, or use mode: replace to copy "
                "the data",
            ) from exc
        rows = int(counted.column(0)[0].as_py() or 0)
        if rows != load.rows:
            raise StepFailed(
                f"The view of step '{load.step_id}' shows {rows} rows in connection '{self.name}', but the "
                f"run computed and audited {load.rows}: {self.dialect} evaluates the view's SQL differently "
                "from the engine (integer division, text comparison and casts are the usual causes); "
                "nothing was published",
                hint="make that step's meaning explicit (casts, lower()), or use mode: replace to copy the "
                "audited rows",
            )
        load.columns = duckdb_columns(shape.schema)
        load.diff = {}
        return load

    def publish_view(self, load: StagedLoad) -> None:
        """Inside the publish transaction: the sources verified, then the view created or replaced."""
        target = self.target_expr(load.target)
        kind = self.relation_kind(load.target)
        if kind == "table" and load.replaces != "table":
            raise StepFailed(
                f"{load.target.connection}.{load.target.table} became a table after step '{load.step_id}' "
                "was staged; the view would replace its data, so nothing was published",
                hint="publish the view under another name, or drop the table first",
            )
        self.lock_sources(load)
        self.verify_view_sources(load)
        if kind == "table":
            self.drop_table(target)
        self.create_view(target, load, kind == "view")

    def create_view(self, target: exp.Table, load: StagedLoad, exists: bool) -> None:
        self.execute(f"CREATE OR REPLACE VIEW {self.sql(target)} AS {load.view}")

    def timestamp_value(self, value: str | None) -> exp.Expr:
        """A TIMESTAMP value (UTC, microseconds) as this database stores one."""
        return exp.cast(exp.Literal.string(value) if value else exp.Null(), exp.DataType.build("timestamp"))

    def keep_snapshot(
        self, load: StagedLoad, target: exp.Table, staged: exp.Table, existing: list[tuple[str, str]] | None
    ) -> None:
        """SCD type 2 in the publish transaction: versions whose key vanished or whose checked columns
        changed are closed (valid_to, is_current false), then new and changed keys get a current version."""
        now = self.timestamp_value(dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" "))
        names = [c for c, _ in load.columns]
        history = [
            exp.alias_(now.copy(), "valid_from"),
            exp.alias_(self.timestamp_value(None), "valid_to"),
            exp.alias_(exp.true(), "is_current"),
        ]
        if existing is None:
            select = exp.select(*[exp.column(ident(c)) for c in names], *history).from_(staged)
            self.execute(self.sql(exp.Create(this=target, kind="TABLE", expression=select)))
            return
        missing = [c for c in SNAPSHOT_COLUMNS if c not in {n.lower() for n, _ in existing}]
        if missing:
            raise StepFailed(
                f"Step '{load.step_id}' keeps a snapshot in {load.target.connection}.{load.target.table}, "
                f"which exists without the history column {missing[0]}",
                hint="snapshot into a new table, or add valid_from, valid_to and is_current to it",
            )
        self.evolve(load, existing, target)
        # `target` is production, or (MySQL) the copy of it that the publish swaps in
        s, t = exp.to_identifier("s"), exp.to_identifier(target.name)

        def keyed(
            left: exp.Identifier, right: exp.Identifier, columns: list[str], null_safe: bool
        ) -> exp.Expr:
            pairs = [
                (exp.NullSafeEQ if null_safe else exp.EQ)(
                    this=exp.column(ident(c), table=left), expression=exp.column(ident(c), table=right)
                )
                for c in columns
            ]
            return exp.and_(*pairs) if pairs else exp.true()

        same_version = exp.and_(keyed(s, t, load.keys, False), keyed(s, t, load.check_columns, True))
        unchanged = exp.Exists(
            this=exp.select(exp.Literal.number(1))
            .from_(exp.alias_(staged.copy(), "s", table=True))
            .where(same_version)
        )
        close = exp.Update(
            this=target.copy(),
            expressions=[
                exp.EQ(this=exp.column("valid_to"), expression=now.copy()),
                exp.EQ(this=exp.column("is_current"), expression=exp.false()),
            ],
            where=exp.Where(this=exp.and_(exp.column("is_current"), exp.not_(unchanged))),
        )
        self.execute(self.sql(close))
        current = exp.Exists(
            this=exp.select(exp.Literal.number(1))
            .from_(target.copy())
            .where(exp.and_(exp.column("is_current", table=t), keyed(s, t, load.keys, False)))
        )
        insert = exp.Insert(
            this=exp.Schema(this=target.copy(), expressions=[ident(c) for c in [*names, *SNAPSHOT_COLUMNS]]),
            expression=exp.select(*[exp.column(ident(c), table=s) for c in names], *history)
            .from_(exp.alias_(staged.copy(), "s", table=True))
            .where(exp.not_(current)),
        )
        self.execute(self.sql(insert))

    def replace_table(self, load: StagedLoad, exists: bool) -> None:
        """Production becomes exactly the staged rows (inside the publish transaction)."""
        target = self.target_expr(load.target)
        if exists:
            self.drop_table(target)
        self.execute(
            self.sql(
                exp.Create(
                    this=target,
                    kind="TABLE",
                    expression=exp.select(exp.Star()).from_(self.staging_expr(load)),
                )
            )
        )

    def staged_values(self, load: StagedLoad, target: exp.Table, names: list[str]) -> list[exp.Expr]:
        """Staged columns as values for the same columns of `target`; backends whose assignment
        does not convert every type implicitly (PostgreSQL: text into json or uuid) cast here."""
        return [exp.column(ident(c)) for c in names]

    def insert_from(self, load: StagedLoad, target: exp.Table, staged: exp.Table) -> None:
        names = [c for c, _ in load.columns]
        insert = exp.Insert(
            this=exp.Schema(this=target, expressions=[ident(c) for c in names]),
            expression=exp.select(*self.staged_values(load, target, names)).from_(staged),
        )
        self.execute(self.sql(insert))

    def merge_into(self, load: StagedLoad, target: exp.Table, staged: exp.Table) -> None:
        """Merge by delete-then-insert on the keys; backends with an upsert statement may override."""
        keys = [exp.column(ident(k)) for k in load.keys]
        key_tuple = keys[0] if len(keys) == 1 else exp.Tuple(expressions=keys)
        delete = exp.Delete(
            this=target.copy(),
            where=exp.Where(
                this=exp.In(
                    this=key_tuple,
                    query=exp.select(*self.staged_values(load, target, load.keys))
                    .from_(staged.copy())
                    .subquery(),
                )
            ),
        )
        self.execute(self.sql(delete))
        self.insert_from(load, target, staged)

    def new_columns(self, load: StagedLoad, existing: list[tuple[str, str]]) -> list[tuple[str, str]]:
        have = {c.lower() for c, _ in existing}
        return [(c, t) for c, t in load.columns if c.lower() not in have]

    def evolve(
        self, load: StagedLoad, existing: list[tuple[str, str]], table: exp.Table | None = None
    ) -> None:
        """Apply the load's schema policy to columns the data has and the table lacks."""
        new = self.new_columns(load, existing)
        if not new:
            return
        if load.on_schema_change != "add_columns":
            names = ", ".join(c for c, _ in new)
            raise StepFailed(
                f"Step '{load.step_id}' would add column{'s' if len(new) > 1 else ''} "
                f"{names} to {load.target.connection}.{load.target.table}, and its schema "
                f"policy is 'fail'",
                hint="set 'on_schema_change: add_columns' on the load, or use mode: replace",
            )
        for column, kind in new:
            self.add_column(table or self.target_expr(load.target), column, kind)

    def add_column(self, target: exp.Table, column: str, kind: str) -> None:
        self.execute(f"ALTER TABLE {self.sql(target)} ADD COLUMN {self.sql(ident(column))} {kind}")

    # ------------------------------------------------------------ garbage collection
    def staging_tables(self) -> list[str]:
        """Names of the staging tables in this connection (each starts with the id of its run)."""
        rows = self.fetch_arrow(
            self.sql(
                exp.select(exp.column("table_name"))
                .from_(exp.table_("tables", db="information_schema"))
                .where(
                    exp.EQ(
                        this=exp.column("table_schema"), expression=exp.Literal.string(self.staging_schema)
                    )
                )
            )
        )
        return sorted(str(v) for v in rows.column(0).to_pylist() if v not in (LEDGER, STREAM_BATCHES))

    def drop_staging(self, name: str) -> None:
        self.drop_table(self.table_expr(self.staging_schema, name))

    def discard(self, loads: list[StagedLoad]) -> None:
        for load in loads:
            if load.staging_name:
                self.drop_table(self.staging_expr(load))

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
        if load.mode == "view":  # nothing is staged: the view's query, as the database computes it now
            return self.fetch_arrow(f"SELECT * FROM ({load.view}) AS _qf_view LIMIT {int(limit)}")
        return self.fetch_arrow(self.sql(exp.select(exp.Star()).from_(self.staging_expr(load)).limit(limit)))


def next_batch(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    """The reader's next batch, or None at its end (a driver runs the query while producing the first)."""
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


def literal(value: Any) -> exp.Expr:
    """A high-water mark as a SQL literal of the right kind (dates and times as typed literals)."""
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float | decimal.Decimal):
        return exp.Literal.number(value)
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.build("timestamp"))
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("date"))
    return exp.Literal.string(str(value))


def diff_query(
    staged: str,
    prod: str,
    mode: str,
    keys: list[str],
    staged_cols: list[tuple[str, str]],
    prod_cols: set[str],
    compare: list[str] | None = None,
) -> str:
    """The diff as one portable query (DuckDB dialect, to be transpiled); names are trusted internal names.

    Merge: rows added (key not in production) and changed (key present, some value differs).
    Otherwise: rows only in staged (added) and only in production (removed), as multisets.
    """
    if mode in ("merge", "snapshot") and keys:
        on = " AND ".join(f's."{k}" IS NOT DISTINCT FROM p."{k}"' for k in keys)
        if mode == "snapshot":  # against the current versions; keys gone from the data are closed
            prod = f"(SELECT * FROM {prod} WHERE is_current)"
            wanted = {c.lower() for c in compare or [c for c, _ in staged_cols]}
            staged_cols = [(c, t) for c, t in staged_cols if c.lower() in wanted]
        same = (
            " AND ".join(
                _same_value(name, kind) if name.lower() in prod_cols else "false"
                for name, kind in staged_cols
            )
            or "true"
        )
        removed = (
            f", (SELECT count(*) FROM {prod} p WHERE NOT EXISTS (SELECT 1 FROM {staged} s WHERE {on}))"
            if mode == "snapshot"
            else ""
        )
        return (
            "SELECT coalesce(sum(CASE WHEN NOT EXISTS "
            f"(SELECT 1 FROM {prod} p WHERE {on}) THEN 1 ELSE 0 END), 0),"
            f" coalesce(sum(CASE WHEN EXISTS (SELECT 1 FROM {prod} p WHERE {on}) AND NOT EXISTS ("
            f"SELECT 1 FROM {prod} p WHERE {on} AND {same}) THEN 1 ELSE 0 END), 0){removed} FROM {staged} s"
        )
    return (
        f"SELECT (SELECT count(*) FROM (SELECT * FROM {staged} EXCEPT ALL SELECT * FROM {prod}) a),"
        f" (SELECT count(*) FROM (SELECT * FROM {prod} EXCEPT ALL SELECT * FROM {staged}) r)"
    )


def diff_counts(row: tuple[Any, ...] | list[Any], mode: str, keys: list[str]) -> dict[str, int]:
    if mode == "snapshot" and keys:
        return {"added": int(row[0]), "removed": int(row[2]), "changed": int(row[1])}
    if mode == "merge" and keys:
        return {"added": int(row[0]), "removed": 0, "changed": int(row[1])}
    return {"added": int(row[0]), "removed": int(row[1]), "changed": 0}


def diff_in_duckdb(
    con: duckdb.DuckDBPyConnection,
    staged: str,
    prod: str,
    mode: str,
    keys: list[str],
    staged_cols: list[tuple[str, str]] | None = None,
    compare: list[str] | None = None,
) -> dict[str, int]:
    """Diff two relations visible to one DuckDB connection (names are trusted internal names); the
    staged columns are described here unless the caller knows them already."""
    if staged_cols is None:
        staged_cols = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {staged}").fetchall()]
    prod_names = {r[0].lower() for r in con.execute(f"DESCRIBE {prod}").fetchall()}
    row = con.execute(diff_query(staged, prod, mode, keys, staged_cols, prod_names, compare)).fetchall()[0]
    return diff_counts(row, mode, keys)


FLOATS = ("DOUBLE", "FLOAT", "REAL", "DOUBLE PRECISION", "FLOAT4", "FLOAT8")


def _same_value(column: str, kind: str) -> str:
    """Equality for the diff; floating sums differ in the last bits between runs, so they get a tolerance."""
    c = _quoted(column)
    if kind.upper() in FLOATS:
        return (
            f"((s.{c} IS NULL AND p.{c} IS NULL) OR abs(s.{c} - p.{c}) <= "
            f"1e-9 * greatest(abs(s.{c}), abs(p.{c}), 1))"
        )
    return f"s.{c} IS NOT DISTINCT FROM p.{c}"


FINGERPRINT_SALT = "qf-fingerprint/2"


def content_hash(con: duckdb.DuckDBPyConnection, relation: str) -> str:
    """Row count, two order-independent sums of row hashes, and the columns of a relation DuckDB can see.

    Sums, not XOR: XOR cancels pairs of equal rows, so an UPDATE of two duplicated rows went unseen;
    a sum counts every row. Each row is hashed from its typed values (NULL is not 'NULL', swapping two
    columns' values changes the hash). The second sum hashes the columns in reverse behind a salt, so
    the fingerprint carries two 64-bit sums rather than one. Sums are exact HUGEINTs (no wrap-around).
    """
    described = con.execute(f"DESCRIBE {relation}").fetchall()
    # Written as text, not built with sqlglot: generating this SELECT cost ~10 ms per staged load.
    cols = [_quoted(str(r[0])) for r in described]
    salted = [f"'{FINGERPRINT_SALT}'", *reversed(cols)]
    sums = ", ".join(_exact_sum(f"hash({', '.join(row)})") for row in (cols, salted))
    row = con.execute(f"SELECT count(*), {sums} FROM {relation}").fetchall()[0]
    return fingerprint_text(row, [(str(r[0]), str(r[1])) for r in described])


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _exact_sum(value: str) -> str:
    """`coalesce(sum(value::hugeint), 0)`: an empty relation sums to 0, and 2^64 hashes cannot overflow."""
    return f"coalesce(sum(CAST({value} AS HUGEINT)), 0)"


def fingerprint_text(sums: tuple[Any, ...] | list[Any], columns: list[tuple[str, str]]) -> str:
    """The fingerprint as stored with a staged load: the aggregates, then each column's name and type."""
    return ":".join([*(str(v) for v in sums), json.dumps([list(c) for c in columns])])


def parse_select_for(query: str, where: str, dialect: str = DIALECT) -> exp.Query:
    """A user's extract query: one read-only SELECT whose functions are allowed on `dialect`.

    Vetted before anything is sent to the database, `validate` included (describing the query
    runs it there).
    """
    try:
        return parse_select(query, dialect=dialect)
    except SqlProblem as exc:
        raise SpecError(
            f"Extract query is not allowed: {exc}", where=where, hint="write a single SELECT statement"
        ) from None
