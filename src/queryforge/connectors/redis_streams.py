"""Redis Streams as a stream source (`redis://host:6379/0`).

A consumer group per pipeline, moved on every start to the entry id the sink committed (the
stored position wins). Each entry carries one JSON message in a field (`data` unless the extract's
`options: {field: ...}` says otherwise). A batch is acknowledged with XACK after its publish committed.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import StepFailed, TransientError
from .base import ReadRequest
from .streams import StreamBatch, StreamConnector, StreamSource

CONSUMER = "queryforge"


class RedisUnavailable(TransientError):
    """Redis did not answer."""


class RedisStreamsConnector(StreamConnector):
    scheme = "redis"

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.config.url, socket_connect_timeout=3)

    def test(self) -> str:
        import redis

        try:
            info = self._client().info("server")
        except redis.RedisError as exc:
            raise RedisUnavailable(f"Redis at connection '{self.name}' did not answer: {exc}") from None
        return f"Redis {info.get('redis_version', '?')} answered"

    def open_stream(self, request: ReadRequest, consumer: str, committed: str | None) -> StreamSource:
        assert request.stream is not None
        return RedisSource(
            self._client(), request.stream, consumer, committed, str(request.options.get("field", "data"))
        )


class RedisSource:
    def __init__(self, client: Any, key: str, group: str, committed: str | None, field: str) -> None:
        import redis

        self.client = client
        self.key = key
        self.group = group
        self.field = field.encode()
        start = committed or "0"
        try:
            try:
                client.xgroup_create(key, group, id=start, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                client.xgroup_setid(key, group, start)  # the stored position wins
        except redis.ConnectionError as exc:
            raise RedisUnavailable(f"Redis did not answer: {exc}") from None

    def poll(self, max_rows: int, max_wait_s: float) -> StreamBatch | None:
        import redis

        deadline = time.monotonic() + max_wait_s
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        try:
            while len(entries) < max_rows:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                # Block only for the first entry; then take what is there, up to max_rows.
                got = self.client.xreadgroup(
                    self.group,
                    CONSUMER,
                    {self.key: ">"},
                    count=max_rows - len(entries),
                    block=None if entries else left_ms,
                )
                if not got:
                    if entries:
                        time.sleep(min(0.01, max(left_ms, 0) / 1000))
                    continue
                entries += got[0][1]
        except redis.ConnectionError as exc:
            raise RedisUnavailable(f"Redis stopped answering while reading: {exc}") from None
        if not entries:
            return None
        try:
            payload = b"\n".join(fields[self.field] for _, fields in entries)
        except KeyError:
            bad = next(i for i, f in entries if self.field not in f)
            raise StepFailed(
                f"Entry {bad.decode()} of Redis stream '{self.key}' has no field '{self.field.decode()}'",
                hint="each entry carries one JSON message in that field (extract option 'field')",
            ) from None
        return StreamBatch(
            count=len(entries),
            position=entries[-1][0].decode(),
            payload=payload,
            token=[i for i, _ in entries],
        )

    def ack(self, batch: StreamBatch) -> None:
        import redis

        ids = batch.token
        try:
            for start in range(0, len(ids), 10_000):
                self.client.xack(self.key, self.group, *ids[start : start + 10_000])
        except redis.ConnectionError as exc:  # committed already: a restart skips the batch
            raise RedisUnavailable(f"Redis did not take the acknowledgement: {exc}") from None

    def lag(self) -> int | None:
        try:
            for group in self.client.xinfo_groups(self.key):
                if group.get("name") in (self.group, self.group.encode()):
                    lag = group.get("lag")
                    return None if lag is None else int(lag)
        except Exception:
            return None
        return None

    def close(self) -> None:
        self.client.close()
