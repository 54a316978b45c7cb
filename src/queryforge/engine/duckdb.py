"""The embedded default engine: one DuckDB database file per run (its work area).

A run's work file is ATTACHed to a fenced in-memory DuckDB instance that the thread keeps for the
next run with the same fence (`_Instances`): starting a DuckDB instance costs about 15 ms of CPU, an
ATTACH about 3, and a worker executes runs back to back. The instance's fence (readable folders, no
network, locked configuration) is the same one a fresh instance would get; the workspace, which
holds every run's work folder, is always inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from ..errors import InternalError, PermissionDenied, StepFailed, TransientError, suggest
from ..libs.duckdb_open import open_duckdb
from ..sql.parse import ident, table
from .base import Engine, Schema


def classify(exc: duckdb.Error, name: str) -> Exception:
    """A DuckDB error as one of ours: data problems are the user's, lock/IO are transient."""
    lines = str(exc).split("\n")
    text = lines[0]
    detail = next(
        (
            ln.strip()
            for ln in lines[1:]
            if "could not convert" in ln.lower() or "converting column" in ln.lower()
        ),
        None,
    )
    if detail and detail not in text:
        text = f"{text} {detail}"
    if isinstance(
        exc,
        duckdb.ConversionException
        | duckdb.InvalidInputException
        | duckdb.BinderException
        | duckdb.ParserException
        | duckdb.CatalogException
        | duckdb.OutOfRangeException
        | duckdb.ConstraintException
        | duckdb.NotImplementedException,
    ):
        hint = "check the step's expressions and the input data (a cast of a bad value, an unknown column)"
        missing = re.search(r'Referenced column "([^"]+)" not found', str(exc))
        candidates = (
            re.findall(r'"(?:[^".]+\.)?([^".]+)"', str(exc).split("Candidate bindings:", 1)[1])
            if "Candidate bindings:" in str(exc)
            else []
        )
        if missing and candidates:
            near = suggest(missing.group(1), candidates)
            hint = f"did you mean '{near}'?" if near else f"columns are: {', '.join(candidates[:12])}"
        return StepFailed(f"Step '{name}' failed: {text}", hint=hint)
    if isinstance(exc, duckdb.PermissionException):
        return PermissionDenied(
            f"Step '{name}' was refused: {text}",
            hint="pipelines and queries may read files only inside the workspace and the folders their "
            "extracts name",
        )
    if isinstance(exc, duckdb.IOException) and "lock" in text.lower():
        return TransientError(f"Step '{name}' could not lock a DuckDB file: {text}")
    if isinstance(exc, duckdb.IOException | duckdb.HTTPException):
        return StepFailed(f"Step '{name}' could not read its input: {text}")
    if isinstance(exc, duckdb.InterruptException):
        return TransientError(f"Step '{name}' was interrupted")
    return InternalError(f"Step '{name}' failed inside DuckDB: {text}")


def fence(con: duckdb.DuckDBPyConnection, allowed_dirs: list[Path]) -> None:
    """Limit a connection's file access to `allowed_dirs`, with no network, extensions or later changes."""
    con.execute("SET allowed_directories = ?", [[str(d) for d in allowed_dirs]])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")


class DuckDBSession:
    def __init__(
        self,
        path: str,
        *,
        preserve_order: bool,
        temp_dir: Path | None,
        allowed_dirs: list[Path] | None = None,
    ) -> None:
        self.con = open_duckdb(path)
        self.con.execute(f"SET preserve_insertion_order = {'true' if preserve_order else 'false'}")
        if temp_dir is not None:
            self.con.execute("SET temp_directory = ?", [str(temp_dir)])
        if allowed_dirs is not None:
            fence(self.con, [*allowed_dirs, *([temp_dir] if temp_dir else [])])

    def _run(self, name: str, sql: str) -> duckdb.DuckDBPyConnection:
        try:
            return self.con.execute(sql)
        except duckdb.Error as exc:
            raise classify(exc, name) from exc

    def create(self, name: str, query: exp.Query, *, table: bool) -> int | None:
        target = exp.Table(this=ident(name))
        create = exp.Create(this=target, kind="TABLE" if table else "VIEW", replace=True, expression=query)
        result = self._run(name, create.sql(dialect="duckdb")).fetchall()
        if not table:
            return None
        # DuckDB answers CREATE TABLE ... AS with the number of rows it wrote.
        return int(result[0][0]) if result and result[0] else 0

    def create_from_arrow(self, name: str, data: pa.RecordBatchReader) -> int:
        self.con.register("_qf_arrow_in", data)
        try:
            return self.create(name, exp.select(exp.Star()).from_("_qf_arrow_in"), table=True) or 0
        finally:
            self.con.unregister("_qf_arrow_in")

    def create_empty(self, name: str, schema: Schema) -> None:
        cols = ", ".join(f"{ident(c).sql('duckdb')} {t}" for c, t in schema)
        self._run(name, f"CREATE OR REPLACE TABLE {ident(name).sql('duckdb')} ({cols})")

    def describe(self, name: str) -> Schema:
        rows = self._run(name, f"DESCRIBE {table(name).sql('duckdb')}").fetchall()
        return [(r[0], r[1]) for r in rows]

    def read(self, query: exp.Query) -> pa.RecordBatchReader:
        try:
            return self.con.sql(query.sql(dialect="duckdb")).to_arrow_reader(batch_size=1_000_000)
        except duckdb.Error as exc:
            raise classify(exc, "read") from exc

    def fetch(self, query: exp.Query) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self._run("query", query.sql(dialect="duckdb"))
        names = [d[0] for d in cur.description or []]
        return names, cur.fetchall()

    def estimate_rows(self, query: exp.Query) -> int:
        rows = self._run("estimate", f"EXPLAIN (FORMAT json) {query.sql(dialect='duckdb')}").fetchall()
        plan = json.loads(rows[0][1])

        def scanned(node: dict[str, Any]) -> int:
            children = node.get("children") or []
            if not children:
                value = str((node.get("extra_info") or {}).get("Estimated Cardinality", "0"))
                return int(value) if value.isdigit() else 0
            return sum(scanned(c) for c in children)

        return sum(scanned(n) for n in plan)

    def close(self) -> None:
        self.con.close()


class AttachedSession(DuckDBSession):
    """A run's work file attached (as `work`, the default database) to a kept, fenced instance."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, release: Any) -> None:
        self.con = con
        self._release = release
        quoted = str(path).replace("'", "''")
        try:
            con.execute(f"ATTACH '{quoted}' AS work")
            con.execute("USE work")
        except BaseException:
            release(con, healthy=False)
            raise

    def close(self) -> None:
        if self._release is None:  # closed already
            return
        release, self._release = self._release, None
        healthy = True
        try:
            self.con.execute("USE memory")
            self.con.execute("DETACH work")
        except duckdb.Error:
            healthy = False  # the instance is in an unknown state: not kept
        release(self.con, healthy=healthy)


class _Instances:
    """Fenced in-memory DuckDB instances kept per thread, keyed by their settings (a few at most)."""

    KEEP = 4

    def __init__(self) -> None:
        self._local = threading.local()

    def _kept(self) -> OrderedDict[tuple[Any, ...], duckdb.DuckDBPyConnection]:
        kept = getattr(self._local, "kept", None)
        if kept is None or self._local.pid != os.getpid():  # a forked child starts afresh
            kept = self._local.kept = OrderedDict()
            self._local.pid = os.getpid()
        return kept

    def session(
        self, path: Path, *, preserve_order: bool, allowed_dirs: list[Path], temp_root: Path
    ) -> AttachedSession:
        key = (preserve_order, tuple(str(d) for d in allowed_dirs), str(temp_root))
        kept = self._kept()
        con = kept.pop(key, None)
        if con is None:
            temp_dir = temp_root / f"{os.getpid()}-{threading.get_ident()}"
            con = open_duckdb(":memory:")
            try:
                con.execute(f"SET preserve_insertion_order = {'true' if preserve_order else 'false'}")
                con.execute("SET temp_directory = ?", [str(temp_dir)])
                fence(con, [*allowed_dirs, temp_dir])
            except BaseException:
                con.close()
                raise

        def release(con: duckdb.DuckDBPyConnection, *, healthy: bool) -> None:
            if not healthy:
                with contextlib.suppress(duckdb.Error):
                    con.close()
                return
            if key in kept:  # another session of this thread kept one meanwhile
                with contextlib.suppress(duckdb.Error):
                    con.close()
                return
            kept[key] = con
            while len(kept) > self.KEEP:
                _, oldest = kept.popitem(last=False)
                with contextlib.suppress(duckdb.Error):
                    oldest.close()

        return AttachedSession(path, con, release)


_INSTANCES = _Instances()


class DuckDBEngine(Engine):
    name = "duckdb"
    dialect = "duckdb"

    def session(
        self, work_dir: Path | None, *, preserve_order: bool = True, allowed_dirs: list[Path] | None = None
    ) -> DuckDBSession:
        if work_dir is None:
            return DuckDBSession(
                ":memory:", preserve_order=preserve_order, temp_dir=None, allowed_dirs=allowed_dirs
            )
        work_dir.mkdir(parents=True, exist_ok=True)
        if allowed_dirs is not None and any(
            work_dir.resolve().is_relative_to(d.resolve()) for d in allowed_dirs
        ):  # the fence lets the instance attach this run's file
            return _INSTANCES.session(
                work_dir / "work.duckdb",
                preserve_order=preserve_order,
                allowed_dirs=allowed_dirs,
                temp_root=work_dir.parent / ".tmp",
            )
        return DuckDBSession(
            str(work_dir / "work.duckdb"),
            preserve_order=preserve_order,
            temp_dir=work_dir / "tmp",
            allowed_dirs=allowed_dirs,
        )


def run_readonly(
    database: Path, sql: str, *, allowed_dirs: list[Path]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run vetted SQL on a DuckDB file opened read-only, with file access fenced to the workspace.

    Defence in depth below the AST policy: even SQL that slipped past it cannot read outside
    `allowed_dirs`, reach the network or change settings (the configuration is locked).
    """
    if not database.exists():
        raise StepFailed(
            "The warehouse is empty: nothing has been published yet",
            hint='load a table first, e.g. queryforge ask "Load data/orders.csv into orders"',
        )
    con = open_duckdb(str(database), read_only=True)
    try:
        fence(con, allowed_dirs)
        try:
            kinds = {s.type for s in con.extract_statements(sql)}
        except duckdb.Error as exc:
            raise classify(exc, "query") from exc
        if kinds != {duckdb.StatementType.SELECT}:
            raise PermissionDenied(
                "Only a single read-only SELECT may run here",
                hint="COPY, ATTACH, SET and other statements are refused",
            )
        try:
            cur = con.execute(sql)
        except duckdb.Error as exc:
            raise classify(exc, "query") from exc
        return [d[0] for d in cur.description or []], cur.fetchall()
    finally:
        con.close()
