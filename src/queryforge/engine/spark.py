"""Apache Spark as the engine of a run: the same plan, the same answers, on more machines.

A run gets its own `newSession()` of the process's shared Spark session (libs/spark.py). Its work
area is a folder of Parquet datasets, one per materialised step (`<run>/spark/<step>`), written
under a temporary name and renamed when complete, so a resumed run finds exactly the steps that
finished. Queries arrive in the canonical dialect and are translated by `spark_sql.to_spark`; every
step's output is then cast to the column names and types the plan compiled on DuckDB, so what is
audited and published has the same schema on both engines.

Files are read by Spark itself when they are plain Parquet; CSV and JSON are first converted to
Parquet by DuckDB with the very options the DuckDB engine uses, so dialect sniffing, type detection
and bad-row handling are one implementation, not two. Results leave Spark as Arrow; large database
extracts and loads go through Spark JDBC instead (spark_jdbc.py), loads still only to staging.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from ..connectors.base import Connector, ReadRequest, StagedLoad
from ..errors import QueryForgeError, StepFailed, TransientError
from ..libs.duckdb_arrow import arrow_table
from ..libs.duckdb_open import open_duckdb
from ..libs.spark import forget_session, functions, shared_session
from ..sql.parse import ident
from . import spark_jdbc
from .base import INLINED_STEP, Engine, Schema
from .duckdb import classify as classify_duckdb
from .duckdb import fence
from .spark_sql import FILE_READERS, NotOnSpark, spark_type, table_names, to_spark, vet

log = logging.getLogger(__name__)
NOT_ON_SPARK_HINT = "run this pipeline on DuckDB (--engine duckdb), or write that part another way"


def classify(exc: Exception, name: str) -> QueryForgeError:
    """A Spark failure as one of ours: a query or data problem is the step's, a lost JVM is transient."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"\s*SQLSTATE: \w+\.?", "", text)
    kind = type(exc).__name__
    if kind in ("Py4JNetworkError", "ConnectionRefusedError") or "Connection refused" in text:
        forget_session()  # the JVM is gone: the retry starts a new one
        return TransientError(f"Step '{name}' lost its Spark session: {text}", hint="it is tried again")
    return StepFailed(
        f"Step '{name}' failed on Spark: {text}",
        hint="check the step's expressions and the input data (a cast of a bad value, an unknown column)",
    )


def _file_calls(query: exp.Query) -> list[exp.Func]:
    """The file-reading table functions a query calls (in FROM or JOIN, bare or inside a table)."""
    return [
        node
        for node in query.find_all(exp.Anonymous, exp.ReadCSV, exp.ReadParquet)
        if not isinstance(node, exp.Anonymous) or node.name.lower() in FILE_READERS
    ]


def _parquet_files(call: exp.Func) -> list[str] | None:
    """The files of a `read_parquet([...])` call without options, else None."""
    if not (
        isinstance(call, exp.Anonymous) and call.name.lower() == "read_parquet" and len(call.expressions) == 1
    ):
        return None
    given = call.expressions[0]
    items = given.expressions if isinstance(given, exp.Array) else [given]
    if not all(isinstance(i, exp.Literal) and i.is_string for i in items):
        return None
    return [i.name for i in items]


class SparkWorkSession:
    def __init__(
        self,
        spark: Any,
        work_dir: Path,
        *,
        allowed_dirs: list[Path] | None,
        schemas: Mapping[str, Schema] | None,
        preserve_order: bool,
    ) -> None:
        self.spark = spark
        self.dir = work_dir / "spark"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.allowed_dirs = list(allowed_dirs or [])
        self.plan_schemas = dict(schemas or {})  # what the plan compiled on DuckDB: names and types
        self.schemas: dict[str, Schema] = dict(self.plan_schemas)  # plus the file sources' schemas
        self.preserve_order = preserve_order
        self._views: set[str] = set()

    # ------------------------------------------------------------ views of the work area
    def _register(self, name: str, frame: Any) -> None:
        frame.createOrReplaceTempView(name)
        self._views.add(name.lower())

    def _ensure_view(self, name: str) -> bool:
        """Register `name` from the work area if an earlier attempt of this run left it there."""
        if name.lower() in self._views:
            return True
        path = self.dir / name
        if not path.is_dir():
            return False
        self._register(name, self._typed(name, self.spark.read.parquet(str(path))))
        return True

    def _typed(self, name: str, frame: Any) -> Any:
        """`frame` with the plan's column names and types for `name` (when the plan has them)."""
        wanted = self.schemas.get(name)
        if not wanted:
            return frame
        if len(wanted) != len(frame.columns):
            raise StepFailed(
                f"Step '{name}' gave {len(frame.columns)} columns on Spark where the plan has {len(wanted)}",
                hint=NOT_ON_SPARK_HINT,
            )
        col = functions().col
        positional = frame.toDF(*[f"_qf_{i}" for i in range(len(wanted))])
        current = dict(positional.dtypes)
        columns = []
        for i, (column, duck_type) in enumerate(wanted):
            target = spark_type(duck_type)
            source = col(f"_qf_{i}")
            same = current[f"_qf_{i}"].replace(" ", "").lower() == target.replace(" ", "").lower()
            columns.append((source if same else source.cast(target)).alias(column))
        return positional.select(*columns)

    # ------------------------------------------------------------ file sources
    def _sources(self, query: exp.Query) -> exp.Query:
        """`query` with each file-reading table function replaced by a view of its data."""
        if not _file_calls(query):
            return query
        query = query.copy()
        for call in _file_calls(query):
            text = call.sql(dialect="duckdb")
            view = "_qf_src_" + hashlib.sha256(text.encode()).hexdigest()[:12]
            if view not in self._views:
                self._load_source(view, call)
            holder = call.parent if isinstance(call.parent, exp.Table) else call
            replacement = exp.Table(this=ident(view))
            if holder.args.get("alias") is not None:
                replacement.set("alias", holder.args["alias"])
            holder.replace(replacement)
        return query

    def _load_source(self, view: str, call: exp.Func) -> None:
        text = call.sql(dialect="duckdb")
        con = open_duckdb(":memory:")
        try:
            fence(con, [*self.allowed_dirs, self.dir])
            rows = con.execute(f"DESCRIBE SELECT * FROM {text}").fetchall()
            self.schemas[view] = [(r[0], r[1]) for r in rows]
            files = _parquet_files(call)
            # Hadoop reads a path as a glob: a name with glob characters goes through DuckDB.
            plain_parquet = files is not None and not any(set(f) & set("*?[]{}\\:") for f in files)
            if plain_parquet:
                files = (
                    [e.name for e in call.expressions[0].expressions]
                    if isinstance(call.expressions[0], exp.Array)
                    else [call.expressions[0].name]
                )
                frame = self.spark.read.parquet(*files)
            else:
                target = self.dir / view
                partial = self.dir / f"{view}.partial"
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                quoted = str(partial / "part-0.parquet").replace("'", "''")
                con.execute(f"COPY (SELECT * FROM {text}) TO '{quoted}' (FORMAT parquet)")
                shutil.rmtree(target, ignore_errors=True)
                partial.rename(target)
                frame = self.spark.read.parquet(str(target))
        except duckdb.Error as exc:
            raise classify_duckdb(exc, "extract") from exc
        except Exception as exc:
            raise classify(exc, "extract") from exc
        finally:
            con.close()
        self._register(view, self._typed(view, frame))

    # ------------------------------------------------------------ queries
    def _steps_as_views(self, query: exp.Query) -> exp.Query:
        """Steps the executor inlined as CTEs (marked INLINED_STEP) become views of this session,
        each given its plan names and types like a materialised step; the SQL's own CTEs stay."""
        with_ = query.args.get("with_")
        if not isinstance(with_, exp.With) or not any(c.meta.get(INLINED_STEP) for c in with_.expressions):
            return query
        query = query.copy()
        with_ = query.args["with_"]
        for cte in list(with_.expressions):
            if cte.meta.get(INLINED_STEP):
                if cte.alias.lower() not in self._views:
                    self.create(cte.alias, cte.this, table=False)
                cte.pop()
        if not with_.expressions:
            query.set("with_", None)
        return query

    def _frame(self, name: str, query: exp.Query) -> Any:
        query = self._sources(self._steps_as_views(query))
        for referenced in table_names(query):
            self._ensure_view(referenced)
        try:
            text = to_spark(query, self.schemas, self.plan_schemas.get(name))
        except NotOnSpark as exc:
            raise StepFailed(
                f"Step '{name}' cannot run on the Spark engine: {exc}", hint=NOT_ON_SPARK_HINT
            ) from None
        try:
            return self.spark.sql(text)
        except Exception as exc:
            raise classify(exc, name) from exc

    def create(self, name: str, query: exp.Query, *, table: bool) -> int | None:
        frame = self._typed(name, self._frame(name, query))
        if not table:
            self._register(name, frame)
            return None
        ordered = self.preserve_order and query.args.get("order") is not None
        try:
            return self._store(name, frame.coalesce(1) if ordered else frame)  # one file keeps order
        except QueryForgeError:
            raise
        except Exception as exc:
            raise classify(exc, name) from exc

    def _store(self, name: str, frame: Any) -> int:
        """Write `frame` as step `name`'s Parquet dataset (under a temporary name, renamed when
        complete) and register it with the plan's names and types; its row count."""
        target, partial = self.dir / name, self.dir / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        frame.write.parquet(str(partial))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        stored = self.spark.read.parquet(str(target))
        rows = int(stored.count())
        self._register(name, self._typed(name, stored))
        return rows

    # ------------------------------------------------------------ databases through JDBC (large inputs)
    def extract_direct(self, name: str, connector: Connector, request: ReadRequest) -> tuple[int, str] | None:
        """A large database extract read by Spark's JDBC source: the connector's own query pushed
        down whole, snapshotted into the work area like every extract (a run reads a source once)."""
        found = spark_jdbc.access(self.spark, connector)
        if found is None:
            return None
        sql_connector, jdbc = found
        estimate = sql_connector.estimate_rows(request) if spark_jdbc.above_rows() else None
        if not spark_jdbc.wanted(estimate):
            return None
        if request.table is not None and request.query is None:
            sql_connector.describe(request, f"step '{name}'")  # a missing table or column, said as on Arrow
        sql = sql_connector.sql(sql_connector.source_query(request))
        try:
            rows = self._store(name, spark_jdbc.read(self.spark, jdbc, sql))
        except Exception as exc:
            raise spark_jdbc.failure(exc, name, connector.name) from None
        shown = "unknown" if estimate is None else f"{estimate:,}"
        how = f"read through Spark JDBC (estimated {shown} rows)"
        log.info("step %s: %s", name, how)
        return rows, how

    def stage_direct(
        self, connector: Connector, run_id: str, load: StagedLoad, query: exp.Query
    ) -> str | None:
        """A large load's rows appended by Spark (batched JDBC INSERTs) to the staging table the
        connector creates with its own DDL, exactly as for Arrow; the publish is the connector's."""
        found = spark_jdbc.access(self.spark, connector)
        if found is None:
            return None
        sql_connector, jdbc = found
        frame = self._frame("read", query)  # what `read` would give as Arrow
        try:
            expected = int(frame.count())
            if not spark_jdbc.wanted(expected):
                return None
            columns = frame.limit(0).toArrow().schema
        except Exception as exc:
            raise classify(exc, load.step_id) from exc

        def fill(schema: str | None, table_name: str) -> int:
            sql_connector.create_staging_table(schema, table_name, columns)
            staging = sql_connector.table_expr(schema, table_name)
            try:
                spark_jdbc.append(frame, jdbc, sql_connector.sql(staging))
            except Exception as exc:
                raise spark_jdbc.failure(exc, load.step_id, connector.name) from None
            rows = int(sql_connector.scalar(exp.select(exp.func("count", exp.Star())).from_(staging)) or 0)
            if rows != expected:  # e.g. a retried Spark task inserted its partition twice
                raise StepFailed(
                    f"Step '{load.step_id}' staged {rows} rows through Spark JDBC where its input "
                    f"has {expected}",
                    hint="it is discarded; run again (a retried Spark task may have inserted twice)",
                )
            return rows

        sql_connector.stage_with(run_id, load, fill)
        how = f"staged through Spark JDBC ({expected:,} rows in batches of {spark_jdbc.BATCH_ROWS:,})"
        log.info("step %s: %s", load.step_id, how)
        return how

    def create_from_arrow(self, name: str, data: pa.RecordBatchReader) -> int:
        target, partial = self.dir / name, self.dir / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        rows = 0
        with pq.ParquetWriter(str(partial / "part-0.parquet"), data.schema, coerce_timestamps="us") as writer:
            for batch in data:
                writer.write_batch(batch)
                rows += batch.num_rows
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        self._views.discard(name.lower())
        self._ensure_view(name)
        return rows

    def create_empty(self, name: str, schema: Schema) -> None:
        columns = ", ".join(f"CAST(NULL AS {t}) AS {ident(c).sql('duckdb')}" for c, t in schema)
        with duckdb.connect() as con:
            empty = arrow_table(con, f"SELECT {columns} LIMIT 0")
        self.schemas[name] = list(schema)
        self.create_from_arrow(name, empty.to_reader())

    def describe(self, name: str) -> Schema:
        if not self._ensure_view(name):
            raise StepFailed(f"'{name}' is not in this run's work area")
        return [(f.name, f.dataType.simpleString()) for f in self.spark.table(name).schema.fields]

    def read(self, query: exp.Query) -> pa.RecordBatchReader:
        frame = self._frame("read", query)
        try:
            result: pa.Table = frame.toArrow()
        except Exception as exc:
            raise classify(exc, "read") from exc
        return result.to_reader()

    def fetch(self, query: exp.Query) -> tuple[list[str], list[tuple[Any, ...]]]:
        frame = self._frame("query", query)
        try:
            rows = frame.collect()
        except Exception as exc:
            raise classify(exc, "query") from exc
        return list(frame.columns), [tuple(r) for r in rows]

    def estimate_rows(self, query: exp.Query, *, known: Mapping[str, int] | None = None) -> int:
        """Plans are estimated on DuckDB (the compile engine); Spark only adds what it was told."""
        return sum((known or {}).values())

    def close(self) -> None:
        for view in self._views:
            try:
                self.spark.catalog.dropTempView(view)
            except Exception:  # a session that is going away anyway
                continue
        self._views.clear()


class SparkEngine(Engine):
    name = "spark"
    dialect = "spark"
    work_files = ("spark",)

    def unsupported(
        self, query: exp.Query, schemas: Mapping[str, Schema], output: Schema | None = None
    ) -> str | None:
        try:
            vet(query)
            if not _file_calls(query):  # a file extract's reader call is replaced, not translated
                to_spark(query, schemas, output)
        except NotOnSpark as exc:
            return str(exc)
        return None

    def unsupported_type(self, canonical_type: str) -> str | None:
        try:
            spark_type(canonical_type)
        except NotOnSpark as exc:
            return str(exc)
        return None

    def session(
        self,
        work_dir: Path | None,
        *,
        preserve_order: bool = True,
        allowed_dirs: list[Path] | None = None,
        schemas: Mapping[str, Schema] | None = None,
    ) -> SparkWorkSession:
        if work_dir is None:
            raise StepFailed("The Spark engine runs plans; they are compiled on DuckDB")
        return SparkWorkSession(
            shared_session().newSession(),
            work_dir,
            allowed_dirs=allowed_dirs,
            schemas=schemas,
            preserve_order=preserve_order,
        )
