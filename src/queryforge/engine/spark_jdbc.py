"""Large database extracts and loads of the Spark engine, through Spark's JDBC source.

Small inputs take the Arrow path (the connector reads, Spark gets Arrow; Spark gives Arrow, the
connector stages it): fewer moving parts, and fast below a million rows. Above
QUERYFORGE_SPARK_JDBC_ABOVE_ROWS (the database planner's estimate for an extract, the exact count
for a load) Spark's executors talk to the database themselves, so the rows never pass through this
process. The connector stays in charge of what it owns: the SQL of the read (its own compiled query,
pushed down whole), the DDL of the staging table, and the one-transaction publish. Spark only ever
appends to a staging table the connector just created; it never writes to a production table.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from ..connectors.base import Connector
from ..connectors.sql import JdbcAccess, SqlConnector
from ..errors import ConfigError, QueryForgeError, StepFailed, TransientError
from ..libs.spark import has_class
from ..secrets import scrub

log = logging.getLogger(__name__)

ABOVE_ROWS_ENV = "QUERYFORGE_SPARK_JDBC_ABOVE_ROWS"
DEFAULT_ABOVE_ROWS = 1_000_000  # below this, Arrow through the driver is as fast and simpler
FETCH_ROWS = 10_000  # rows per round trip of a JDBC read (`fetchsize`)
BATCH_ROWS = 10_000  # rows per batched INSERT of a JDBC write (`batchsize`)
WRITE_CONNECTIONS = 4  # at most this many connections insert at once (`numPartitions`)
_MISSING_DRIVERS: set[str] = set()  # warned about once per process


def above_rows() -> int:
    """Rows above which the Spark engine moves a database's data by JDBC; 0 means always."""
    text = os.environ.get(ABOVE_ROWS_ENV, "").strip()
    if not text:
        return DEFAULT_ABOVE_ROWS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"{ABOVE_ROWS_ENV} must be a whole number of rows (0 or more), not '{text}'",
            hint=f"e.g. {ABOVE_ROWS_ENV}={DEFAULT_ABOVE_ROWS}",
        )
    return value


def wanted(rows: int | None) -> bool:
    """Whether an input of `rows` (None: unknown) is large enough for JDBC."""
    threshold = above_rows()
    return threshold == 0 or (rows is not None and rows > threshold)


def access(spark: Any, connector: Connector) -> tuple[SqlConnector, JdbcAccess] | None:
    """The connector and how Spark reaches its database, or None when this database has no JDBC route
    (not a server database, a Unix socket) or the session lacks the driver (then Arrow it is)."""
    if not isinstance(connector, SqlConnector):
        return None
    found = connector.jdbc()
    if found is None:
        return None
    if not has_class(spark, found.driver):
        if found.driver not in _MISSING_DRIVERS:
            _MISSING_DRIVERS.add(found.driver)
            log.warning(
                "the Spark session has no JDBC driver %s (install libpostgresql-jdbc-java and "
                "libmariadb-java, or set QUERYFORGE_SPARK_JARS); large inputs go through Arrow",
                found.driver,
            )
        return None
    return connector, found


def read(spark: Any, jdbc: JdbcAccess, sql: str) -> Any:
    """A DataFrame of `sql` run by the database (pushed down whole), fetched FETCH_ROWS at a time in
    a session opened read-only. Timestamps without time zone stay so (DuckDB's TIMESTAMP)."""
    return (
        spark.read.format("jdbc")
        .option("url", jdbc.url)
        .option("query", sql)
        .option("fetchsize", str(FETCH_ROWS))
        .option("sessionInitStatement", jdbc.read_init)
        .option("preferTimestampNTZ", "true")
        .options(**jdbc.properties())
        .load()
    )


def append(frame: Any, jdbc: JdbcAccess, table: str) -> None:
    """Append `frame` to the existing table `table` (quoted for its database) by batched INSERTs.
    Only ever a staging table: append neither creates nor truncates nor drops anything."""
    (
        frame.write.format("jdbc")
        .option("url", jdbc.write_url)
        .option("dbtable", table)
        .option("batchsize", str(BATCH_ROWS))
        .option("numPartitions", str(WRITE_CONNECTIONS))
        .option("isolationLevel", "READ_COMMITTED")
        .options(**jdbc.properties())
        .mode("append")
        .save()
    )


def failure(exc: Exception, step: str, connection: str) -> QueryForgeError:
    """A JDBC failure as one of ours, with the Java exception's own message (py4j's first line only
    names the call) and no secret in it; an unreachable server is worth another try."""
    if isinstance(exc, QueryForgeError):
        return exc
    text = str(exc)
    java = re.search(r"^: ([\w.$]+(?:Exception|Error)[^\n]*)", text, re.MULTILINE)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    message = scrub(java[1] if java else first)[:400]
    if re.search(r"Connection refused|connect timed out|Connection reset|Could not connect", message):
        return TransientError(
            f"Step '{step}' could not reach connection '{connection}' through JDBC: {message}",
            hint="it is tried again",
        )
    return StepFailed(
        f"Step '{step}' failed moving data through Spark JDBC (connection '{connection}'): {message}",
        hint="check the connection and the step's data; a smaller input goes through Arrow "
        f"(raise {ABOVE_ROWS_ENV})",
    )
