"""Streaming pipelines on the Spark engine: Structured Streaming with `foreachBatch`.

Spark reads the source (a file-drop folder, or Spark's rate source) and keeps its place in the
source in a checkpoint folder (`.queryforge/streams/<pipeline>/checkpoint`). Each micro-batch is
handed to `foreachBatch`, which runs the same per-batch code as the DuckDB runner (`BatchSteps`):
the batch becomes the stream step's table of a Spark work session, the transforms and checks run,
and one transaction of the sink publishes the loads together with the batch's number. So exactly
once rests on the sink, as on DuckDB (decision 0010): Spark writes its checkpoint's commit only
after `foreachBatch` returned, so a crash between our commit and Spark's replays a batch whose
number the sink already holds, and that replay is skipped.

Batch numbers are Spark's batch ids shifted by the stream's committed batch when the checkpoint
was created (a stream the DuckDB engine served before goes on counting), stored beside Spark's own
files in the checkpoint. The sink's connection and the work session are used from one worker
thread: Spark calls `foreachBatch` on threads of its own, and some drivers (sqlite3) refuse a
connection another thread opened.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..connectors.files import file_format
from ..connectors.paths import glob_base
from ..connectors.rate import RateConnector
from ..connectors.registry import ConnectionSet
from ..engine.spark import SparkWorkSession, classify
from ..engine.spark_sql import spark_type
from ..errors import QueryForgeError, SpecError, StepFailed, TransientError, UserError
from .plan import ExecutionPlan, ExtractStage
from .stream import MAX_BACKOFF_S, SPARK_POSITION, BatchSteps, StreamOptions, StreamStatus

T = TypeVar("T")

CHECKPOINT = "checkpoint"
MARKER = "queryforge.json"  # ours, beside Spark's files: the first batch number, the rate source's start
FILE_COLUMN = "_qf_file"  # a file-drop batch's column naming each row's file
SPARK_FORMATS = {"json": "json", "ndjson": "json", "csv": "csv", "parquet": "parquet"}


class StreamStopped(Exception):
    """Raised in `foreachBatch` for a batch that starts while the stream is stopping: Spark does
    not commit it in the checkpoint, so the next start reads it again."""


def stream_engine(engine_name: str, plan: ExecutionPlan, connections: ConnectionSet) -> str:
    """The engine a streaming pipeline runs on (`spark` only when asked for by name; `auto` streams
    on DuckDB), refusing a source that engine cannot serve before a run is recorded."""
    stage = next(s for s in plan.stages_of(ExtractStage) if s.stream)
    rate = connections.get(stage.connection) if stage.connection is not None else None
    if engine_name == "spark":
        if stage.path is None and not isinstance(rate, RateConnector):
            raise UserError(
                f"On the Spark engine a stream reads a file-drop folder (extract: {{path: ...}}) or Spark's "
                f"rate source (rate://); step '{stage.step_id}' reads connection '{stage.connection}'",
                hint="stream NATS and Redis on the DuckDB engine (--engine duckdb)",
            )
        return "spark"
    if isinstance(rate, RateConnector):
        assert stage.request is not None
        rate.open_stream(stage.request, "", None)  # refuses, and says why
    return "duckdb"


class SparkStreamRunner(BatchSteps):
    """One streaming query per start; `run` returns when stopped or after `max_batches` batches."""

    def __init__(
        self,
        plan: ExecutionPlan,
        connections: ConnectionSet,
        session: SparkWorkSession,
        folder: Path,
        options: StreamOptions,
    ) -> None:
        self._notices: queue.SimpleQueue[bool] = queue.SimpleQueue()
        super().__init__(
            plan,
            connections,
            session,
            where=options.where,
            on_check_failure=options.on_check_failure,
            progress=lambda _status, notable: self._notices.put(notable),
        )
        self.spark_session = session
        self.report = options.progress
        self.checkpoint = folder / CHECKPOINT
        self.max_rows = options.max_rows
        self.max_wait_s = options.max_wait_s
        self.stop = options.stop
        self.max_batches = options.max_batches
        self.progress_every_s = options.progress_every_s
        self.file_format = options.file_format
        self.first_batch = 0  # the sink's batch number before Spark's batch 0
        self.committed = 0  # the sink's last committed batch number, as this process knows it
        self.last_batch_id: int | None = None  # Spark's id of the last batch foreachBatch finished
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qf-spark-stream")
        self._lock = threading.Lock()  # held while a batch runs: a stop waits for it
        self._stopping = False
        self._failure: BaseException | None = None

    # ------------------------------------------------------------ the query's lifecycle
    def run(self) -> StreamStatus:
        """Serve until stopped. A transient failure (the sink went away) is waited out with backoff
        and the query started again from its checkpoint, as a restart would."""
        delay = 1.0
        try:
            self._on_worker(self.read_static)
            while not self.stop.is_set() and not self._enough():
                try:
                    self._serve()
                except TransientError as exc:
                    self._on_worker(self.sink.close)  # reconnects on next use
                    self.status.last_error = f"{exc.message}; trying again in {delay:g} s"
                    self.report(self.status, True)
                    self.stop.wait(delay)
                    delay = min(delay * 2, MAX_BACKOFF_S)
                    continue
                break
        finally:
            self._on_worker(self.connections.close)  # opened on the worker, closed there
            self._worker.shutdown()
        return self.status

    def _enough(self) -> bool:
        return self.max_batches is not None and self.status.batches >= self.max_batches

    def _on_worker(self, work: Callable[[], T]) -> T:
        return self._worker.submit(work).result()

    def _serve(self) -> None:
        committed = self._on_worker(lambda: self.sink.stream_position(self.stream_id))
        self.committed = committed[0] if committed else 0
        self.status.last_batch = self.committed
        self.status.position = committed[1] if committed else None
        marker = self._marker(committed)
        self.first_batch = int(marker["first_batch"])
        self._stopping, self._failure, self.last_batch_id = False, None, None
        query = self._start(marker)
        try:
            last_report = 0.0
            while query.isActive and self._failure is None and not self.stop.is_set() and not self._enough():
                self.stop.wait(0.1)
                self._tell()
                if time.monotonic() - last_report >= self.progress_every_s:
                    self.report(self.status, False)
                    last_report = time.monotonic()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now (the batch in hand is read again next start)
            query.stop()
            raise
        with self._lock:  # after the batch in hand
            self._stopping = True
        self._await_checkpoint(query)
        query.stop()
        self._tell()
        self._raise_failure(query)

    def _await_checkpoint(self, query: Any, timeout_s: float = 10.0) -> None:
        """Let Spark write the commit of the batch `foreachBatch` finished (it does so right after),
        so a graceful stop does not leave a batch for the next start to replay and skip."""
        if self.last_batch_id is None:
            return
        deadline = time.monotonic() + timeout_s
        while query.isActive and time.monotonic() < deadline:
            progress = query.lastProgress
            if progress is not None and int(progress["batchId"]) >= self.last_batch_id:
                return
            time.sleep(0.05)

    def _tell(self) -> None:
        """Pass on what the batches reported (a quarantine), from this thread, as the DuckDB runner does."""
        while not self._notices.empty():
            self.report(self.status, self._notices.get())

    def _raise_failure(self, query: Any) -> None:
        if isinstance(self._failure, StreamStopped):
            return
        if self._failure is not None:
            raise self._failure
        failed = query.exception()
        if failed is not None:
            raise classify(failed, self.source_stage.step_id)

    def _marker(self, committed: tuple[int, str, str] | None) -> dict[str, Any]:
        """Our notes in the checkpoint, written when Spark's part is still empty: where the batch
        numbers start (after what the sink holds) and the rate source's first timestamp."""
        marker = self.checkpoint / MARKER
        offsets = self.checkpoint / "offsets"
        if offsets.is_dir() and any(offsets.iterdir()):
            return dict(json.loads(marker.read_text())) if marker.is_file() else {"first_batch": 0}
        if committed and committed[1].startswith(SPARK_POSITION):
            raise UserError(
                f"Stream '{self.stream_id}' has Spark batches up to {committed[0]} in its sink, but its "
                f"checkpoint ({self.checkpoint}) is gone; Spark would read the source again from the start",
                hint="restore the checkpoint folder; or, to publish everything again into emptied tables, "
                f"delete the rows of stream '{self.stream_id}' from _qf_staging._qf_stream_batches",
            )
        notes = {
            "stream": self.stream_id,
            "first_batch": committed[0] if committed else 0,
            "start_ms": int(time.time() * 1000),
        }
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        partial = marker.with_suffix(".partial")
        partial.write_text(json.dumps(notes))
        partial.replace(marker)
        return notes

    def _start(self, marker: dict[str, Any]) -> Any:
        frame = self._source(marker)
        try:
            return (
                frame.writeStream.foreachBatch(self._on_batch)
                .option("checkpointLocation", str(self.checkpoint))
                .trigger(processingTime=f"{max(int(self.max_wait_s * 1000), 1)} milliseconds")
                .queryName(f"queryforge:{self.stream_id}")
                .start()
            )
        except Exception as exc:
            raise classify(exc, self.source_stage.step_id) from exc

    # ------------------------------------------------------------ sources
    def _source(self, marker: dict[str, Any]) -> Any:
        """The streaming DataFrame of the stream step."""
        stage = self.source_stage
        spark = self.spark_session.spark
        if stage.path is None:
            assert stage.connection is not None and stage.request is not None
            connector = self.connections.get(stage.connection)
            assert isinstance(connector, RateConnector)  # stream_engine saw to it
            per_second = connector.rows_per_second(stage.request)
            if per_second is not None:
                return spark.readStream.format("rate").option("rowsPerSecond", per_second).load()
            return (
                spark.readStream.format("rate-micro-batch")
                .option("rowsPerBatch", self.max_rows)
                .option("startTimestamp", int(marker.get("start_ms", 0)))
                .load()
            )
        return self._folder(stage)

    def _folder(self, stage: ExtractStage) -> Any:
        """A file-drop folder as Spark's file source: at most `max_rows` new files per batch, typed by
        the declared columns; a file that does not fit them fails the batch (FAILFAST), as on DuckDB."""
        assert stage.path is not None and stage.request is not None and stage.request.types is not None
        base = glob_base(stage.path)
        pattern = str(Path(stage.path).relative_to(base)) if base != "." else stage.path
        if "/" in pattern or base == stage.path:
            raise SpecError(
                f"A streaming file extract watches one folder; '{stage.path}' does not name files in one",
                where=self.where(stage.step_id),
                hint="use a path like inbox/*.json",
            )
        folder = self.connections.files.resolve_path(base)
        kind = SPARK_FORMATS.get(file_format(stage.path, self.file_format))
        if kind is None:
            raise SpecError(
                f"Spark streams json, csv and parquet files; '{stage.path}' is another format",
                where=self.where(stage.step_id),
            )
        schema = ", ".join(f"`{n.replace('`', '``')}` {spark_type(t)}" for n, t in stage.request.types)
        reader = (
            self.spark_session.spark.readStream.format(kind)
            .schema(schema)
            .option("maxFilesPerTrigger", self.max_rows)
        )
        if kind != "parquet":
            reader = reader.option("mode", "FAILFAST")
        if kind == "csv":
            options = dict(stage.request.options)
            reader = reader.option("header", bool(options.get("header", True)))
            reader = reader.option("sep", str(options.get("delim", options.get("sep", ","))))
        folder.mkdir(parents=True, exist_ok=True)
        # Each row's file, to count a batch's files as the DuckDB runner does (Spark's inputFiles()
        # of a micro-batch is empty); dropped before the batch becomes the step's table.
        return reader.load(str(folder / pattern)).selectExpr("*", f"_metadata.file_path AS {FILE_COLUMN}")

    # ------------------------------------------------------------ one batch
    def _on_batch(self, frame: Any, batch_id: int) -> None:
        """Spark's `foreachBatch`: the batch runs on the worker thread; a failure is kept (Spark only
        sees that the batch failed) and stops the query."""
        with self._lock:
            if self._failure is not None:
                raise StreamStopped(f"batch {batch_id} not run: the stream failed")
            if self._stopping or self.stop.is_set() or self._enough():
                self._failure = StreamStopped(f"batch {batch_id} not run: the stream is stopping")
                raise self._failure
            try:
                self._on_worker(lambda: self.process(frame, batch_id))
            except BaseException as exc:
                self._failure = exc
                raise

    def process(self, frame: Any, batch_id: int) -> bool:
        """Publish Spark's batch `batch_id` (a DataFrame) as the stream's batch `first_batch +
        batch_id + 1`, unless the sink holds that number already (a replay after a crash between
        our commit and Spark's). Returns whether it published."""
        batch_no = self.first_batch + batch_id + 1
        if batch_no <= self.committed:
            self.last_batch_id = batch_id
            return False
        started = time.monotonic()
        count = self._load(frame)
        if count:  # Spark may run an empty batch: nothing to publish
            self.publish_batch(batch_no, f"{SPARK_POSITION}{batch_id}", count)
            self.committed = batch_no
            self.status.latencies.append(time.monotonic() - started)
            del self.status.latencies[:-1000]
        self.last_batch_id = batch_id
        return bool(count)

    def _load(self, frame: Any) -> int:
        """The batch as the stream step's table; returns its files (a folder) or rows (rate), the
        unit the DuckDB runner counts too."""
        step = self.source_stage.step_id
        try:
            data = frame.toArrow()
        except Exception as exc:
            failed = classify(exc, step)
            if isinstance(failed, StepFailed):
                raise StepFailed(
                    f"Stream '{self.stream_id}': a file of the next batch cannot be read with the declared "
                    f"types ({failed.message}); nothing of it was published and the stream stopped",
                    hint="fix or remove the file, then start the stream again (it resumes at this batch)",
                ) from exc
            raise failed from exc
        if data.num_rows == 0:
            return 0
        count = data.num_rows
        if FILE_COLUMN in data.column_names:
            count = len(data.column(FILE_COLUMN).unique())
            data = data.drop_columns([FILE_COLUMN])
        try:
            self.session.create_from_arrow(step, data.to_reader())
        except QueryForgeError:
            raise
        except Exception as exc:
            raise classify(exc, step) from exc
        return count
