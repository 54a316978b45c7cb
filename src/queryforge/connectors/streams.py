"""Stream connectors: sources a streaming pipeline reads in micro-batches (NATS JetStream, Redis
Streams). A stream has no catalog, so an extract declares the column types of its JSON messages.

The exactly-once contract is shared with the runner (`runs.stream`): a source hands out a batch
and the position after it; the runner publishes the batch and that position in one transaction of
the sink; only then is the source acknowledged. On start the source resumes after the position the
sink committed, whatever the broker remembers.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from sqlglot import exp

from ..errors import SpecError
from .base import ConnectionConfig, Connector, ReadRequest, StagedLoad, TargetRef

QUARANTINE_SUFFIX = "__quarantine"  # a load's batches that failed their checks go to <target>__quarantine


@dataclass(frozen=True)
class StreamBatch:
    """One micro-batch: newline-delimited JSON messages, or files (a file-drop folder)."""

    count: int
    position: str  # where the source stands after this batch: stored with the publish
    payload: bytes = b""
    files: tuple[Path, ...] = ()
    token: Any = None  # what the source needs to acknowledge the batch


class StreamSource(Protocol):
    def poll(self, max_rows: int, max_wait_s: float) -> StreamBatch | None:
        """The next batch (up to `max_rows`, waiting at most `max_wait_s` for the first), or None."""
        ...

    def ack(self, batch: StreamBatch) -> None:
        """Acknowledge a batch whose publish committed (the broker may then forget it)."""
        ...

    def lag(self) -> int | None:
        """Messages (or files) waiting behind this consumer, when the source can tell."""
        ...

    def close(self) -> None: ...


class Prefetching:
    """A source read one batch ahead, on a thread of its own, while the runner publishes the last.

    Reading a broker is mostly client-side parsing and publishing mostly waiting on the sink; done
    in turn they add up, overlapped the slower one sets the pace. All calls of the wrapped source
    run on that one thread, in order (asyncio clients and file moves need no locking), and at most
    one batch waits unpublished: the pull stays the backpressure. An acknowledgement is queued, not
    awaited (its failure surfaces at the next call), and always follows its batch's commit; a
    prefetched batch is never acknowledged before its own publish, so a stop or crash leaves it to
    be read again.
    """

    def __init__(self, source: StreamSource) -> None:
        self.source = source
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qf-stream-read")
        self.ahead: Future[StreamBatch | None] | None = None
        self.acks: list[Future[None]] = []
        self.last_lag: int | None = None

    def _read(self, max_rows: int, max_wait_s: float) -> StreamBatch | None:
        batch = self.source.poll(max_rows, max_wait_s)
        self.last_lag = self.source.lag()
        return batch

    def _acked(self) -> None:
        done, self.acks = self.acks, []
        for ack in done:
            ack.result()

    def poll(self, max_rows: int, max_wait_s: float) -> StreamBatch | None:
        ahead = self.ahead or self.thread.submit(self._read, max_rows, max_wait_s)
        self.ahead = None
        batch = ahead.result()
        self._acked()
        if batch is not None:  # data is flowing: read the next batch meanwhile
            self.ahead = self.thread.submit(self._read, max_rows, max_wait_s)
        return batch

    def ack(self, batch: StreamBatch) -> None:
        self.acks.append(self.thread.submit(self.source.ack, batch))

    def lag(self) -> int | None:
        return self.last_lag

    def close(self) -> None:
        try:
            if self.ahead is not None:  # read and never published: the source hands it out again
                self.ahead.exception()
            for ack in self.acks:
                ack.exception()
            self.thread.submit(self.source.close).result()
        finally:
            self.thread.shutdown(wait=True)


class StreamSink(Protocol):
    """Where a stream publishes: a database connection (one transaction per batch, connectors/sql.py)
    or a folder of batch files (idempotent by batch number, connectors/folder_sink.py)."""

    @property
    def direct_appends(self) -> bool: ...

    @property
    def config(self) -> ConnectionConfig: ...

    def ensure_writable(self, where: str) -> None: ...

    def stream_key(self, stream: str) -> str: ...

    def stream_position(self, stream: str) -> tuple[int, str, str] | None: ...

    def table_columns(self, schema: str | None, name: str) -> list[tuple[str, str]] | None: ...

    def stage(
        self, run_id: str, load: StagedLoad, data: pa.RecordBatchReader, *, fingerprint: bool = True
    ) -> StagedLoad: ...

    def publish(self, loads: list[StagedLoad], mark: Any = None) -> None: ...

    def append_batch(self, appends: list[tuple[TargetRef, pa.RecordBatchReader]], mark: Any) -> list[int]: ...

    def close(self) -> None: ...


class StreamConnector(Connector):
    """A connection to a message broker: read in micro-batches only, never written."""

    def open_stream(self, request: ReadRequest, consumer: str, committed: str | None) -> StreamSource:
        """A source positioned right after `committed` (the sink's stored position), or at the
        stream's start when nothing was committed yet."""
        raise NotImplementedError

    def read(self, request: ReadRequest) -> pa.RecordBatchReader:
        raise SpecError(
            f"Connection '{self.name}' is a stream; a pipeline reads it with 'mode: streaming'",
            hint="add 'mode: streaming' to the pipeline and run it with 'queryforge stream'",
        )

    def describe(self, request: ReadRequest, where: str) -> list[tuple[str, str]]:
        if not request.stream:
            raise SpecError(
                f"Connection '{self.name}' is a stream: the extract names it with 'stream:'",
                where=where,
                hint="e.g. extract: {connection: " + self.name + ", stream: clicks, types: {...}}",
            )
        if not request.types:
            raise SpecError(
                f"Stream '{request.stream}' has no catalog: declare the column types of its messages",
                where=where,
                hint="add 'types: {id: BIGINT, url: VARCHAR, ...}' to the extract",
            )
        return declared_types(request.types, where)

    def introspect(self) -> list[Any]:
        return []


def declared_types(types: tuple[tuple[str, str], ...], where: str) -> list[tuple[str, str]]:
    """The declared (name, type) pairs, each type checked and spelled as DuckDB spells it."""
    import duckdb

    out: list[tuple[str, str]] = []
    with duckdb.connect() as con:
        for name, kind in types:
            spelled = None
            if kind and all(ch.isalnum() or ch in " _()," for ch in kind):  # nothing that ends the CAST
                try:
                    spelled = con.execute(f"SELECT typeof(CAST(NULL AS {kind}))").fetchone()
                except duckdb.Error:
                    spelled = None
            if not spelled:
                raise SpecError(
                    f"'{kind}' (column {name}) is not a type",
                    where=where,
                    hint="use a DuckDB type: BIGINT, DOUBLE, DECIMAL(12,2), VARCHAR, DATE, TIMESTAMP",
                )
            out.append((name, str(spelled[0])))
    return out


def json_reader_sql(path: Path, types: list[tuple[str, str]]) -> str:
    """DuckDB's JSON reader over a batch file, typed by the declared columns (the same reader a
    batch pipeline's `extract: {path: x.ndjson}` uses)."""
    columns = ", ".join(f"{sql_string(name)}: {sql_string(kind)}" for name, kind in types)
    return (
        f"SELECT * FROM read_json({sql_string(str(path))}, format = 'newline_delimited', "
        f"columns = {{{columns}}})"
    )


def sql_string(text: str) -> str:
    """A string literal in DuckDB's SQL."""
    return exp.Literal.string(text).sql("duckdb")
