"""NATS JetStream as a stream source (`nats://host:4222`).

A durable pull consumer per pipeline, re-created on every start at the sequence after the one the
sink committed (the stored position wins over whatever the broker remembers). Acknowledgement is
`AckPolicy.ALL`: acking a batch's last message acknowledges the batch, after its publish committed.
The client is asyncio-only; the source drives it on a private event loop (the runner is synchronous).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import ConfigError, TransientError
from .base import ReadRequest
from .streams import StreamBatch, StreamConnector, StreamSource

T = TypeVar("T")


class NatsUnavailable(TransientError):
    """The NATS server did not answer (down, or restarting)."""


class NatsConnector(StreamConnector):
    scheme = "nats"

    def test(self) -> str:
        source = NatsSource(self.config.url, self.name)
        try:
            version = source.run(source.connect())
        finally:
            source.close()
        return f"NATS {version} answered"

    def open_stream(self, request: ReadRequest, consumer: str, committed: str | None) -> StreamSource:
        assert request.stream is not None
        source = NatsSource(self.config.url, self.name)
        try:
            source.run(source.connect())
            source.run(source.subscribe(request.stream, consumer, int(committed) if committed else 0))
        except BaseException:
            source.close()
            raise
        return source


class NatsSource:
    def __init__(self, url: str, connection: str) -> None:
        self.url = url
        self.connection = connection
        self.loop = asyncio.new_event_loop()
        self.nc: Any = None
        self.js: Any = None
        self.sub: Any = None
        self.stream = ""
        self.durable = ""
        self.committed = 0
        self.pending: int | None = None  # messages behind the last one fetched, as the server said

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def connect(self) -> str:
        import nats
        from nats.errors import NoServersError

        try:
            self.nc = await nats.connect(
                self.url, connect_timeout=3, max_reconnect_attempts=0, allow_reconnect=False
            )
        except (NoServersError, OSError, TimeoutError) as exc:
            raise NatsUnavailable(
                f"NATS at {self.url} (connection '{self.connection}') did not answer: {exc}",
                hint="is nats-server running with JetStream (-js)?",
            ) from None
        self.js = self.nc.jetstream()
        return str(self.nc.connected_server_version)

    async def subscribe(self, subject: str, consumer: str, committed: int) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        try:
            self.stream = await self.js.find_stream_name_by_subject(subject)
        except NotFoundError:
            raise ConfigError(
                f"No JetStream stream holds subject '{subject}' (connection '{self.connection}')",
                hint=f"create one, e.g. 'nats stream add EVENTS --subjects {subject}'",
            ) from None
        self.durable = consumer
        self.committed = committed
        with contextlib.suppress(NotFoundError):  # the stored position wins: start right after it
            await self.js.delete_consumer(self.stream, consumer)
        config = ConsumerConfig(
            durable_name=consumer,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=committed + 1,
            ack_policy=AckPolicy.ALL,
            ack_wait=600,
            max_ack_pending=-1,
            filter_subject=subject,
        )
        await self.js.add_consumer(self.stream, config)
        self.sub = await self.js.pull_subscribe_bind(consumer, self.stream)

    def poll(self, max_rows: int, max_wait_s: float) -> StreamBatch | None:
        return self.run(self._poll(max_rows, max_wait_s))

    async def _poll(self, max_rows: int, max_wait_s: float) -> StreamBatch | None:
        from nats.errors import TimeoutError as NatsTimeout

        deadline = time.monotonic() + max_wait_s
        msgs: list[Any] = []
        while len(msgs) < max_rows:
            left = deadline - time.monotonic()
            if left <= 0.005:
                break
            try:
                msgs += await self.sub.fetch(batch=max_rows - len(msgs), timeout=left)
            except (TimeoutError, NatsTimeout):
                break
            except Exception as exc:  # the connection dropped under us
                raise NatsUnavailable(f"NATS stopped answering while reading: {exc}") from None
        if msgs and msgs[0].metadata.sequence.stream <= self.committed:  # a replay: drop what is done
            msgs = [m for m in msgs if m.metadata.sequence.stream > self.committed]
        if not msgs:
            self.pending = 0  # a pull that found nothing: caught up
            return None
        self.pending = int(msgs[-1].metadata.num_pending)
        last = msgs[-1].metadata.sequence.stream
        return StreamBatch(
            count=len(msgs), position=str(last), payload=b"\n".join(m.data for m in msgs), token=msgs[-1]
        )

    def ack(self, batch: StreamBatch) -> None:
        try:  # AckPolicy.ALL: the last message acknowledges the whole batch
            self.run(batch.token.ack())
        except Exception as exc:  # committed already: a restart skips the batch by its position
            raise NatsUnavailable(f"NATS did not take the acknowledgement: {exc}") from None
        self.committed = int(batch.position)

    def lag(self) -> int | None:
        if self.pending is not None:  # free: every fetched message carries it
            return self.pending
        try:
            info = self.run(self.js.consumer_info(self.stream, self.durable))
        except Exception:
            return None
        return int(info.num_pending)

    def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                self.run(self.nc.close())  # not drain(): what was fetched and not acked is read again
        self.loop.close()
