"""The process's one Spark session, and the only place that imports PySpark.

Starting Spark costs seconds (a JVM, a context), so a worker process starts it once and every run
gets its own `newSession()` of it: separate temporary views and SQL settings, shared executors.
The settings suit many small jobs on one machine: no UI, few shuffle partitions, the driver on
loopback, timestamps without time zone (DuckDB's TIMESTAMP) written to Parquet as microseconds.
The JDBC drivers (PostgreSQL, MariaDB) are put on its classpath when it starts.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_MASTER = "local[*]"
_LOCK = threading.Lock()
_SHARED: dict[str, Any] = {}

SETTINGS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.caseSensitive": "false",
    "spark.sql.sources.partitionOverwriteMode": "static",
}


def pyspark() -> Any:
    """The pyspark module, or a clear error saying how to install it."""
    try:
        import pyspark as module
    except ImportError:
        raise ConfigError(
            "The Spark engine needs PySpark, which is not installed",
            hint="pip install 'queryforge[spark]' (and Java 17: apt-get install openjdk-17-jre-headless)",
        ) from None
    return module


def functions() -> Any:
    """pyspark.sql.functions (column expressions)."""
    pyspark()
    from pyspark.sql import functions as module

    return module


def local_zone() -> str:
    """This machine's time zone by name (TZ, else /etc/localtime's target), as DuckDB sees it."""
    named = os.environ.get("TZ", "").lstrip(":")
    if named:
        return named
    target = os.path.realpath("/etc/localtime")
    return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "UTC"


# The JDBC drivers Debian installs (libpostgresql-jdbc-java, libmariadb-java; `make setup` does).
JDBC_JARS = ("/usr/share/java/postgresql.jar", "/usr/share/java/mariadb-java-client.jar")


def jars() -> list[str]:
    """The jars a new session puts on its classpath (`spark.jars`): QUERYFORGE_SPARK_JARS, a
    comma-separated list, when set (empty: none); else the JDBC drivers of JDBC_JARS that exist.
    Read once per session start: the classpath of a running JVM does not change."""
    given = os.environ.get("QUERYFORGE_SPARK_JARS")
    if given is not None:
        return [j.strip() for j in given.split(",") if j.strip()]
    return [j for j in JDBC_JARS if Path(j).is_file()]


def has_class(session: Any, name: str) -> bool:
    """Whether the session's JVM can load class `name` (e.g. a JDBC driver from its jars)."""
    try:
        session.sparkContext._jvm.org.apache.spark.util.Utils.classForName(name, True, False)
    except Exception:  # py4j's error for a ClassNotFoundException
        return False
    return True


def master() -> str:
    return os.environ.get("QUERYFORGE_SPARK_MASTER") or DEFAULT_MASTER


def forget_session() -> None:
    """Drop the kept session (its JVM died), so that the next run starts a new one."""
    with _LOCK:
        _SHARED.pop(master(), None)


def shared_session() -> Any:
    """The process's SparkSession for `master()`, started on first use."""
    wanted = master()
    with _LOCK:
        session = _SHARED.get(wanted)
        if session is not None:
            return session
        pyspark()
        from pyspark.sql import SparkSession

        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.master(wanted).appName("queryforge")
        builder = builder.config("spark.sql.session.timeZone", local_zone())  # DuckDB's "local" too
        # Spark would create ./spark-warehouse wherever the process runs; runs never use it.
        builder = builder.config(
            "spark.sql.warehouse.dir", str(Path(tempfile.gettempdir()) / "queryforge-spark")
        )
        for key, value in SETTINGS.items():
            builder = builder.config(key, value)
        if found := jars():
            builder = builder.config("spark.jars", ",".join(found))
        log_config = Path(__file__).with_name("spark_log4j2.properties")
        quiet = f"-Dlog4j2.configurationFile=file:{log_config}"
        builder = builder.config("spark.driver.extraJavaOptions", quiet)
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # a JVM that does not start: Java missing, a port taken
            raise ConfigError(
                f"Spark could not start ({wanted}): {str(exc).splitlines()[0][:300]}",
                hint="the Spark engine needs Java 17 or newer on PATH (java -version)",
            ) from None
        session.sparkContext.setLogLevel("OFF")  # failures reach the user as our errors, once
        logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)  # PySpark's own echo
        _SHARED[wanted] = session
        return session
