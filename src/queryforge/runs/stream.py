"""Streaming pipelines: the plan's steps run per micro-batch, each batch published exactly once.

Per batch: the source's messages become the stream step's table (DuckDB's JSON reader over the
batch, typed by the declared columns), the transforms and checks run on it, the loads are staged,
and one transaction of the sink publishes them together with the batch's number and position
(`SqlConnector.publish(..., mark=...)`). Only then is the source acknowledged. On start the source
resumes right after the position the sink committed, so a batch cut short by a crash is read
again, and a batch that committed but was not acknowledged is never published twice.

Backpressure is the pull: the next batch is fetched only after the last one committed, so a slow
sink slows the reading and the broker keeps what waits.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlglot import exp

from .. import faults
from ..connectors.base import Connector, StagedLoad, TargetRef
from ..connectors.files import FilesConnector
from ..connectors.folder_sink import FolderSink
from ..connectors.folder_stream import INFLIGHT, FolderSource
from ..connectors.paths import glob_base
from ..connectors.registry import ConnectionSet
from ..connectors.sql import SqlConnector, StreamMark
from ..connectors.streams import (
    QUARANTINE_SUFFIX,
    Prefetching,
    StreamBatch,
    StreamConnector,
    StreamSink,
    StreamSource,
    json_reader_sql,
    sql_string,
)
from ..engine.base import EngineSession
from ..errors import ChecksFailed, QueryForgeError, StepFailed, TransientError, UserError
from ..quality.checks import evaluate_rules
from ..sql.parse import ident, table
from .plan import CheckStage, ExecutionPlan, ExtractStage, StageLoadStage, TransformStage, streaming_rules

REJECTED = "_qf_rejected"  # the session table of a batch's unreadable messages
REJECTED_SUFFIX = "__rejected"  # ... published to <pipeline>__rejected when quarantining
MAX_BACKOFF_S = 30.0
SPARK_POSITION = "spark-batch:"  # the position of a batch Spark published (its checkpoint holds the rest)


@dataclass
class StreamStatus:
    """What `runs show` and the events tell about a running stream."""

    stream: str
    batches: int = 0  # committed by this process
    rows: int = 0  # messages (or files) read in those batches
    published_rows: int = 0
    quarantined_batches: int = 0
    rejected_messages: int = 0
    last_batch: int = 0  # the stream's batch number (across restarts)
    position: str | None = None
    lag: int | None = None
    last_error: str | None = None
    started: float = field(default_factory=time.monotonic)
    latencies: list[float] = field(default_factory=list)  # seconds from a batch's poll to its ack

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.rows / elapsed if elapsed > 0 else 0.0

    def summary(self) -> str:
        lag = "?" if self.lag is None else self.lag
        return (
            f"batch {self.last_batch}: {self.rows:,} rows in {self.batches} batches, "
            f"{self.rate():,.0f} rows/s, lag {lag}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "batches": self.batches,
            "rows": self.rows,
            "published_rows": self.published_rows,
            "quarantined_batches": self.quarantined_batches,
            "rejected_messages": self.rejected_messages,
            "last_batch": self.last_batch,
            "position": self.position if self.position is None or len(self.position) < 200 else "(files)",
            "lag": self.lag,
            "rows_per_s": round(self.rate(), 1),
            "batch_seconds_p95": round(sorted(self.latencies)[int(len(self.latencies) * 0.95)], 3)
            if self.latencies
            else None,
            "last_error": self.last_error,
        }


@contextmanager
def stream_lock(path: Path, pipeline: str) -> Iterator[None]:
    """One process per stream on this machine: a second start is refused, not interleaved (the
    sink's batch keys refuse a second publisher anywhere else)."""
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"Stream '{pipeline}' is already running in another process",
                hint="stop it first (Ctrl-C or SIGTERM finish its batch and stop)",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class StreamOptions:
    """How a stream is served, whatever the engine: its trigger, its check policy, when to stop
    and whom to tell (one set of settings for the DuckDB loop and Spark's streaming query)."""

    where: Callable[[str], str]  # step id -> "file:line, step 'x'" for errors
    max_rows: int
    max_wait_s: float
    on_check_failure: str
    stop: threading.Event
    progress: Callable[[StreamStatus, bool], None]
    max_batches: int | None = None
    progress_every_s: float = 1.0
    file_format: str | None = None  # a file-drop folder's `format:`, when its extension does not tell


class BatchSteps:
    """The per-batch half of a stream, shared by the DuckDB loop below and Spark's `foreachBatch`
    (runs/spark_stream.py): once a batch is the stream step's table in `session`, the transforms and
    checks run, the loads are staged, and one transaction of the sink publishes them with the batch's
    number and position. One implementation, so both engines stop, quarantine and publish alike."""

    def __init__(
        self,
        plan: ExecutionPlan,
        connections: ConnectionSet,
        session: EngineSession,
        *,
        where: Callable[[str], str],
        on_check_failure: str,
        progress: Callable[[StreamStatus, bool], None],
    ) -> None:
        self.plan = plan
        self.connections = connections
        self.session = session
        self.where = where
        self.on_check_failure = on_check_failure
        self.progress = progress
        self.source_stage, self.sink_name = streaming_rules(plan, where, connections)
        sink = stream_sink(connections.get(self.sink_name), plan.stages_of(StageLoadStage))
        for load in plan.stages_of(StageLoadStage):
            sink.ensure_writable(where(load.step_id))
        self.sink = sink
        self.stream_id = f"{plan.pipeline}.{self.source_stage.step_id}"
        # One staging name per stream and sink, reused by every batch (a restart drops the leftover);
        # the staging schema may be shared by other databases and workspaces (MySQL's per server).
        where_to = sink.stream_key(self.stream_id) + sink.config.url
        self.staging_id = f"stream_{hashlib.sha256(where_to.encode()).hexdigest()[:12]}"
        self.status = StreamStatus(stream=self.stream_id)
        self.staged_schemas: dict[str, pa.Schema] = {}  # step -> the Arrow schema it last staged
        # loads that may append without staging: the Arrow schema and target columns that allow it
        self.direct: dict[str, tuple[pa.Schema, list[tuple[str, str]]]] = {}

    def read_static(self) -> None:
        """The other extracts (a dimension table, a lookup file) are read once, when the stream starts."""
        for stage in self.plan.stages_of(ExtractStage):
            if stage.stream:
                continue
            if stage.query is not None:
                self.session.create(stage.step_id, stage.query, table=True)
            else:
                assert stage.connection is not None and stage.request is not None
                reader = self.connections.get(stage.connection).read(stage.request)
                self.session.create_from_arrow(stage.step_id, reader)

    def publish_batch(self, batch_no: int, position: str, count: int, rejected: int = 0) -> None:
        """Run the steps over the stream step's table (already loaded in the session; `rejected`
        unreadable messages in `_qf_rejected`) and publish batch `batch_no` at `position`, or raise
        ChecksFailed (nothing published) when a check fails and the stream stops on failures."""
        for stage in self.plan.stages:
            if isinstance(stage, TransformStage):
                self.session.create(stage.step_id, stage.query, table=True)
        failed = self._failed_checks()
        quarantine = bool(failed) and self.on_check_failure == "quarantine"
        if failed and not quarantine:
            raise ChecksFailed(
                f"Batch {batch_no} of stream '{self.stream_id}' failed {len(failed)} check"
                f"{'s' if len(failed) > 1 else ''}: {'; '.join(failed)}; nothing of it was published "
                "and the stream stopped before it",
                hint="fix the data or the checks and start the stream again (it resumes at this batch), "
                "or set 'on_check_failure: quarantine'",
            )
        mark = StreamMark(
            stream=self.stream_id,
            batch=batch_no,
            position=position,
            token=f"{self.stream_id}:{batch_no}:{time.time_ns()}"[-64:],
        )
        published = None if quarantine or rejected else self._append_directly(mark)
        if published is None:
            staged = [self._stage(load, quarantine) for load in self.plan.stages_of(StageLoadStage)]
            if rejected:
                staged.append(self._stage_rejected())
            faults.point("stream.before_publish")
            self.sink.publish(staged, mark=mark)
            self._note_direct(staged)
            published = sum(s.rows for s in staged)
        self.status.batches += 1
        self.status.rows += count
        self.status.published_rows += published
        self.status.quarantined_batches += quarantine
        self.status.last_batch = batch_no
        self.status.position = position
        self.status.rejected_messages += rejected
        if quarantine or rejected:
            why = [f"quarantined: {'; '.join(failed)}"] if quarantine else []
            why += (
                [f"{rejected} unreadable messages to {self.plan.pipeline}{REJECTED_SUFFIX}"]
                if rejected
                else []
            )
            self.status.last_error = f"batch {batch_no} " + "; ".join(why)
            self.progress(self.status, True)

    def _append_directly(self, mark: StreamMark) -> int | None:
        """The batch appended straight into its targets, in one transaction with its position, when
        the sink can (PostgreSQL) and every load appends data of exactly the schema a staged batch
        published before (same Arrow schema, and the target's columns then were the staged ones):
        the same rows as staging and inserting, with one copy fewer. None: stage as usual."""
        loads = self.plan.stages_of(StageLoadStage)
        if not self.sink.direct_appends or not loads or any(load.mode != "append" for load in loads):
            return None
        for load in loads:  # the target as it was when the direct path was chosen (not altered since)
            schema, name = load.target.schema_and_name
            if (
                load.step_id not in self.direct
                or self.sink.table_columns(schema, name) != self.direct[load.step_id][1]
            ):
                return None
        readers: list[tuple[TargetRef, pa.RecordBatchReader]] = []
        for load in loads:
            reader = self.session.read(exp.select(exp.Star()).from_(table(load.input)))
            readers.append((load.target, reader))
            if self.direct[load.step_id][0] != reader.schema:
                for _, opened in readers:
                    opened.close()
                return None
        faults.point("stream.before_publish")
        return sum(self.sink.append_batch(readers, mark))

    def _note_direct(self, staged: list[StagedLoad]) -> None:
        """After a staged publish: the appends whose target now has exactly the staged columns may
        go straight in from the next batch on (a schema change goes back through staging)."""
        self.direct.clear()
        for load in staged:
            if load.mode == "append" and load.step_id in self.staged_schemas:
                schema, name = load.target.schema_and_name
                if self.sink.table_columns(schema, name) == load.columns:
                    self.direct[load.step_id] = (self.staged_schemas[load.step_id], load.columns)

    def _failed_checks(self) -> list[str]:
        failed: list[str] = []
        for stage in self.plan.stages_of(CheckStage):
            results = evaluate_rules(stage.step_id, list(stage.rules), self.session.fetch)
            failed += [
                f"{r['rule_name']} ({r['violations']} rows)"
                for r in results
                if not r["passed"] and r["severity"] == "error"
            ]
        return failed

    def _stage_rejected(self) -> StagedLoad:
        target = TargetRef(connection=self.sink_name, table=f"{self.plan.pipeline}{REJECTED_SUFFIX}")
        return self._stage_table(REJECTED, target, REJECTED, "append", [], "fail")

    def _stage(self, stage: StageLoadStage, quarantine: bool) -> StagedLoad:
        if quarantine:
            target = TargetRef(
                connection=stage.target.connection, table=stage.target.table + QUARANTINE_SUFFIX
            )
            return self._stage_table(stage.input, target, stage.step_id, "append", [], stage.on_schema_change)
        return self._stage_table(
            stage.input, stage.target, stage.step_id, stage.mode, list(stage.keys), stage.on_schema_change
        )

    def _stage_table(
        self, source: str, target: TargetRef, step_id: str, mode: str, keys: list[str], on_schema_change: str
    ) -> StagedLoad:
        """A session table staged in the sink under the stream's one staging name (reused by every
        batch; a restart drops the leftover)."""
        load = StagedLoad(
            step_id=step_id,
            target=target,
            mode=mode,
            keys=keys,
            on_schema_change=on_schema_change,
            staging_name="",
            rows=0,
            columns=[],
        )
        reader = self.session.read(exp.select(exp.Star()).from_(table(source)))
        self.staged_schemas[step_id] = reader.schema
        return self.sink.stage(self.staging_id, load, reader, fingerprint=False)


class StreamRunner(BatchSteps):
    """A stream on the DuckDB engine: polls its source, loads each batch, publishes it, acknowledges it."""

    def __init__(
        self,
        plan: ExecutionPlan,
        connections: ConnectionSet,
        session: EngineSession,
        work_dir: Path,
        options: StreamOptions,
    ) -> None:
        super().__init__(
            plan,
            connections,
            session,
            where=options.where,
            on_check_failure=options.on_check_failure,
            progress=options.progress,
        )
        self.work_dir = work_dir
        self.max_rows = options.max_rows
        self.max_wait_s = options.max_wait_s
        self.stop = options.stop
        self.max_batches = options.max_batches
        self.progress_every_s = options.progress_every_s
        self.file_format = (
            options.file_format
        )  # a file-drop folder's `format:`, when its extension does not tell
        self.inflight_pattern = ""

    # ------------------------------------------------------------ the loop
    def run(self) -> StreamStatus:
        """Serve until stopped. A transient failure (the broker or the sink went away) is waited
        out with backoff and served again from the committed position, as a restart would."""
        delay = 1.0
        self.read_static()
        while not self.stop.is_set() and not self._enough():
            try:
                self._serve()
            except TransientError as exc:
                self.sink.close()  # reconnects on next use (a restarted server left it closed)
                self.status.last_error = f"{exc.message}; trying again in {delay:g} s"
                self.progress(self.status, True)
                self.stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            break
        self.status.lag = None
        return self.status

    def _enough(self) -> bool:
        return self.max_batches is not None and self.status.batches >= self.max_batches

    def _serve(self) -> None:
        committed = self.sink.stream_position(self.stream_id)
        if committed and committed[1].startswith(SPARK_POSITION):
            raise UserError(
                f"Stream '{self.stream_id}' was last served by the Spark engine, whose checkpoint "
                "holds its place in the source; on DuckDB it would read the source again from the start",
                hint="go on with the Spark engine (--engine spark, QUERYFORGE_ENGINE=spark or engine: spark)",
            )
        batch_no = committed[0] if committed else 0
        self.status.last_batch = batch_no
        self.status.position = committed[1] if committed else None
        source = self._open(committed[1] if committed else None)
        try:
            last_report = 0.0
            while not self.stop.is_set() and not self._enough():
                polled = time.monotonic()
                batch = source.poll(self.max_rows, self.max_wait_s)
                if batch is not None:
                    batch_no += 1
                    self._process(batch, batch_no)
                    faults.point("stream.before_ack")
                    source.ack(batch)
                    self.status.latencies.append(time.monotonic() - polled)
                    del self.status.latencies[:-1000]
                if time.monotonic() - last_report >= self.progress_every_s:
                    self.status.lag = source.lag()
                    self.progress(self.status, False)
                    last_report = time.monotonic()
        finally:
            source.close()

    def _open(self, committed: str | None) -> StreamSource:
        stage = self.source_stage
        if stage.path is not None:  # a file-drop folder
            base = glob_base(stage.path)
            pattern = str(Path(stage.path).relative_to(base)) if base != "." else stage.path
            folder = self.connections.files.resolve_path(base)
            self.inflight_pattern = str(Path(base) / INFLIGHT / pattern)
            return FolderSource(folder, pattern, committed)
        assert stage.connection is not None and stage.request is not None
        connector = self.connections.get(stage.connection)
        assert isinstance(connector, StreamConnector)
        # A broker's consumer is read a batch ahead; a folder is not (its in-flight files are its state).
        return Prefetching(connector.open_stream(stage.request, f"qf_{self.plan.pipeline}", committed))

    # ------------------------------------------------------------ one batch
    def _process(self, batch: StreamBatch, batch_no: int) -> None:
        rejected = self._load_batch(batch, batch_no)
        self.publish_batch(batch_no, batch.position, batch.count, rejected)

    def _load_batch(self, batch: StreamBatch, batch_no: int) -> int:
        """The batch as the stream step's table; returns how many messages were rejected."""
        stage = self.source_stage
        assert stage.request is not None and stage.request.types is not None
        types = list(stage.request.types)
        if batch.files:
            reader = self.connections.files.source(
                self.inflight_pattern,
                self.file_format,
                dict(stage.request.options),
                self.where(stage.step_id),
            )
            cols = [exp.alias_(exp.cast(exp.column(ident(n)), t), n, quoted=True) for n, t in types]
            query: exp.Query = exp.select(*cols).from_(reader)
        else:
            path = self.work_dir / "batch.ndjson"
            path.write_bytes(batch.payload)
            try:
                self.session.create(stage.step_id, _query(json_reader_sql(path, types)), table=True)
            except QueryForgeError as exc:  # a message that is not JSON, or does not fit its types
                return self._sort_out(path, types, batch_no, exc)
            return 0
        self.session.create(stage.step_id, query, table=True)
        return 0

    def _sort_out(self, path: Path, types: list[tuple[str, str]], batch_no: int, exc: QueryForgeError) -> int:
        """The batch read message by message (in DuckDB): the good ones become the stream step's
        table, the others `_qf_rejected` (message, problem). Stops the stream unless quarantining."""
        lines = (
            "SELECT unnest(lines) AS line, unnest(range(1, len(lines) + 1)) AS n FROM "
            f"(SELECT string_split(content, chr(10)) AS lines FROM read_text({sql_string(str(path))}))"
        )
        problems = ["WHEN NOT json_valid(line) THEN 'not valid JSON'"]
        problems.append("WHEN json_type(line::JSON) <> 'OBJECT' THEN 'not a JSON object'")
        for name, kind in types:
            field = f"(line::JSON ->> {sql_string(name)})"
            problems.append(
                f"WHEN {field} IS NOT NULL AND TRY_CAST({field} AS {kind}) IS NULL "
                f"THEN {sql_string(f'{name} does not fit {kind}: ')} || {field}"
            )
        checked = f"SELECT n, line, CASE {' '.join(problems)} END AS problem FROM ({lines}) WHERE line <> ''"
        self.session.create("_qf_messages", _query(checked), table=True)
        rejected = _query(
            f"SELECT CAST({batch_no} AS BIGINT) AS batch, CAST(n AS BIGINT) AS message_number, "
            "line AS message, problem FROM _qf_messages WHERE problem IS NOT NULL ORDER BY n"
        )
        bad = self.session.create(REJECTED, rejected, table=True) or 0
        if not bad:  # every message reads alone: the batch failed for another reason
            raise exc
        if self.on_check_failure != "quarantine":
            _, first = self.session.fetch(_query(f"SELECT message_number, problem FROM {REJECTED} LIMIT 1"))
            raise StepFailed(
                f"Batch {batch_no} of stream '{self.stream_id}' holds {bad} message"
                f"{'s' if bad > 1 else ''} that cannot be read (message {first[0][0]} of the batch: "
                f"{first[0][1]}); nothing of it was published and the stream stopped before it",
                hint="fix or remove the message at the source, or set 'on_check_failure: quarantine' to "
                f"publish such messages to {self.plan.pipeline}{REJECTED_SUFFIX} and go on",
            )
        columns = ", ".join(
            f"TRY_CAST(line::JSON ->> {sql_string(name)} AS {kind}) AS {ident(name).sql('duckdb')}"
            for name, kind in types
        )
        good = _query(f"SELECT {columns} FROM _qf_messages WHERE problem IS NULL ORDER BY n")
        self.session.create(self.source_stage.step_id, good, table=True)
        return bad


def stream_sink(connector: Connector, loads: list[StageLoadStage]) -> StreamSink:
    """The sink a stream publishes into: a database connection, or the workspace's files as a
    folder of batch files (streaming_rules allowed nothing else)."""
    if isinstance(connector, FilesConnector):
        return FolderSink(connector, [load.target.table for load in loads])
    assert isinstance(connector, SqlConnector)
    return connector


def _query(sql: str) -> exp.Query:
    parsed: exp.Expr = exp.maybe_parse(sql, dialect="duckdb")
    assert isinstance(parsed, exp.Query)
    return parsed
