"""Spark's `rate` source as a stream connection (`url: "rate://"`): generated rows, for trying a
streaming pipeline and for tests, with no broker at all.

It exists only inside Spark, so only the Spark engine streams it (runs/spark_stream.py); the DuckDB
runner refuses it when it would open it. Its rows are always `(timestamp TIMESTAMP, value BIGINT)`,
`value` counting from 0. `rows_per_second` (an option of the connection or of the extract) makes it
Spark's wall-clock `rate` source; without it, it is `rate-micro-batch`: exactly `trigger.max_rows`
rows per batch, whatever the speed, so a run's output depends only on how many batches it ran.
"""

from __future__ import annotations

from typing import Any

from ..errors import SpecError, UserError
from .base import ReadRequest
from .streams import StreamConnector, StreamSource, declared_types

RATE_COLUMNS = [("timestamp", "TIMESTAMP"), ("value", "BIGINT")]


class RateConnector(StreamConnector):
    scheme = "rate"

    def test(self) -> str:
        return "Spark's rate source (generated rows; streams on the Spark engine)"

    def rows_per_second(self, request: ReadRequest) -> int | None:
        """The wall-clock speed asked for (extract options win over the connection's), or None."""
        given: Any = request.options.get("rows_per_second", self.config.options.get("rows_per_second"))
        if given is None:
            return None
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise SpecError(
                f"rows_per_second of rate connection '{self.name}' must be a whole number above 0",
                hint="e.g. options: {rows_per_second: 1000}, or leave it out for trigger.max_rows per batch",
            )
        return given

    def describe(self, request: ReadRequest, where: str) -> list[tuple[str, str]]:
        """Always RATE_COLUMNS: declared `types` may only repeat them."""
        if not request.stream:
            raise SpecError(
                f"Connection '{self.name}' is a stream: the extract names it with 'stream:'",
                where=where,
                hint="e.g. extract: {connection: " + self.name + ", stream: ticks}",
            )
        self.rows_per_second(request)
        if request.types and declared_types(request.types, where) != RATE_COLUMNS:
            raise SpecError(
                f"The rate source's rows are (timestamp TIMESTAMP, value BIGINT); step declares "
                f"{', '.join(f'{n} {t}' for n, t in request.types)}",
                where=where,
                hint="remove 'types' (the rate source has fixed columns)",
            )
        return list(RATE_COLUMNS)

    def open_stream(self, request: ReadRequest, consumer: str, committed: str | None) -> StreamSource:
        raise UserError(
            f"Connection '{self.name}' is Spark's rate source (rate://), which only the Spark engine streams",
            hint="start the stream with --engine spark (or QUERYFORGE_ENGINE=spark, or engine: spark)",
        )
