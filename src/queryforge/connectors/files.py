"""Files and folders of files: CSV, NDJSON/JSON and Parquet, with globs and gzip.

Reading is done by the engine (DuckDB reads files directly and in parallel); this connector
resolves paths inside the workspace, infers formats, and publishes file targets by writing a
temporary file beside the target and renaming it atomically.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sqlglot import exp

from .. import faults
from ..errors import NotFoundError, SpecError, suggest
from .base import ColumnInfo, Connector, Snapshot, StagedLoad, TableInfo, TargetRef

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".ndjson": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
READERS = {"csv": "read_csv", "json": "read_json", "ndjson": "read_json", "parquet": "read_parquet"}


def file_format(path: str, given: str | None = None) -> str:
    if given:
        return given
    name = path.lower().removesuffix(".gz").removesuffix(".gzip").removesuffix(".zst")
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise SpecError(
        f"Cannot tell the format of '{path}' from its name",
        hint="add format: csv, json or parquet to the extract",
    )


_SNIFFED: dict[tuple[str, int, int], dict[str, Any]] = {}


def sniffed_csv_options(path: Path) -> dict[str, Any]:
    """Detect a CSV's dialect and column types once, so later reads skip DuckDB's sniffer.

    Every query over `read_csv(...)` without explicit columns sniffs the file again (tens of
    milliseconds each, for every view built on it); pinning what the sniffer found makes those
    reads cheap and keeps the types stable between validate and run.
    """
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SNIFFED:
        with duckdb.connect() as con:
            rows = con.sql("SELECT * FROM sniff_csv($p)", params={"p": str(path)}).fetchall()
            names = [
                d[0] for d in con.sql("SELECT * FROM sniff_csv($p)", params={"p": str(path)}).description
            ]
        found = dict(zip(names, rows[0], strict=True))
        opts: dict[str, Any] = {
            "auto_detect": False,
            "header": bool(found["HasHeader"]),
            "delim": found["Delimiter"],
            "skip": int(found["SkipRows"] or 0),
            "columns": {c["name"]: c["type"] for c in found["Columns"]},
        }
        for name, option in (("Quote", "quote"), ("Escape", "escape")):
            if found.get(name) not in (None, "(empty)", ""):
                opts[option] = found[name]
        for name, option in (("DateFormat", "dateformat"), ("TimestampFormat", "timestampformat")):
            if found.get(name):
                opts[option] = found[name]
        _SNIFFED[key] = opts
    return dict(_SNIFFED[key])


def _literal(value: Any) -> exp.Expr:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    if isinstance(value, list):
        return exp.Array(expressions=[_literal(v) for v in value])
    if isinstance(value, dict):
        return exp.Struct(
            expressions=[
                exp.PropertyEQ(this=exp.to_identifier(k), expression=_literal(v)) for k, v in value.items()
            ]
        )
    return exp.Literal.string(str(value))


class FilesConnector(Connector):
    scheme = "file"
    aliases = ("files", "folder")
    can_write = True

    @property
    def folder(self) -> Path:
        return self.resolve_path(self.location() or ".")

    def matches(self, pattern: str, where: str) -> list[Path]:
        """Files a path or glob names; a clear error with a suggestion when there are none."""
        full = self.resolve_path(pattern) if not Path(pattern).is_absolute() else Path(pattern)
        found = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        if not found:
            near_dir = full.parent if full.parent.is_dir() else self.root
            names = [p.name for p in near_dir.iterdir() if p.is_file()] if near_dir.is_dir() else []
            shown = str(full.relative_to(self.root)) if full.is_relative_to(self.root) else str(full)
            near = suggest(full.name, names, cutoff=75)
            raise NotFoundError(
                f"No file matches '{pattern}' (looked for {shown})",
                where=where,
                hint=f"did you mean '{near}'?"
                if near
                else "check the path; it is relative to the workspace folder",
            )
        return found

    def source(
        self, pattern: str, fmt: str | None, options: dict[str, Any], where: str, *, pinned: bool = False
    ) -> exp.Expr:
        """A DuckDB table function reading the files, e.g. read_csv(['a.csv', 'b.csv'], header=true).

        CSV column types are always fixed to what the sniffer found once, so validation and the run
        agree. `pinned` also fixes the dialect (no sniffing at all): binding is then ~1 ms instead of
        ~40 ms, which suits compiling; DuckDB scans large files faster with its own dialect detection,
        which suits running.
        """
        files = self.matches(pattern, where)
        kind = file_format(pattern, fmt)
        args: list[exp.Expr] = [exp.Array(expressions=[exp.Literal.string(str(f)) for f in files])]
        opts = dict(options)
        if kind == "csv" and len(files) > 1:
            opts.setdefault("union_by_name", True)
        elif kind == "csv" and not {"columns", "auto_detect", "types", "dtypes"} & set(opts):
            sniffed = sniffed_csv_options(files[0])
            opts = {**sniffed, **opts} if pinned else {"types": sniffed["columns"], **opts}
        if kind in ("json", "ndjson"):
            opts.setdefault(
                "format",
                "newline_delimited"
                if kind == "ndjson" or pattern.endswith((".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz"))
                else "auto",
            )
        args += [exp.EQ(this=exp.column(k), expression=_literal(v)) for k, v in opts.items()]
        return exp.Anonymous(this=READERS[kind], expressions=args)

    def fingerprint_files(self, pattern: str) -> str:
        """Identity of the files an extract reads (names, sizes, mtimes) -- cheap, for reuse on resume."""
        files = sorted(glob.glob(str(self.resolve_path(pattern)), recursive=True))
        parts = [f"{f}:{Path(f).stat().st_size}:{Path(f).stat().st_mtime_ns}" for f in files]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def estimate_rows(self, pattern: str) -> int:
        """Rows in the files a pattern names: Parquet metadata, else size over the mean line length."""
        total = 0
        for f in sorted(glob.glob(str(self.resolve_path(pattern)), recursive=True)):
            path = Path(f)
            if file_format(path.name) == "parquet":
                total += pq.ParquetFile(path).metadata.num_rows
                continue
            size = path.stat().st_size
            if path.name.endswith((".gz", ".gzip", ".zst")):
                size *= 5  # a typical text compression ratio; a rough guess is enough for a cost gate
                head = b""
            else:
                with path.open("rb") as fh:
                    head = fh.read(1 << 20)
            lines = head.count(b"\n")
            total += int(size / (len(head) / lines)) if lines else max(1, size // 100)
        return total

    def introspect(self) -> list[TableInfo]:
        out: list[TableInfo] = []
        if not self.folder.is_dir():
            return out
        with duckdb.connect() as con:
            for path in sorted(self.folder.rglob("*")):
                try:
                    kind = file_format(path.name)
                except SpecError:
                    continue
                rel = str(path.relative_to(self.folder))
                fn = exp.Anonymous(this=READERS[kind], expressions=[exp.Literal.string(str(path))])
                try:
                    desc = con.execute(f"DESCRIBE SELECT * FROM {fn.sql('duckdb')}").fetchall()
                except duckdb.Error:
                    continue
                out.append(TableInfo(name=rel, columns=tuple(ColumnInfo(r[0], r[1]) for r in desc)))
        return out

    # ------------------------------------------------------------ file targets
    def target_path(self, target: TargetRef) -> Path:
        return self.resolve_path(target.table) if self.location() in ("", ".") else self.folder / target.table

    def stage(self, run_id: str, load: StagedLoad, data: pa.RecordBatchReader) -> StagedLoad:
        if load.mode != "replace":
            raise SpecError(
                f"Step '{load.step_id}' loads a file, which supports mode 'replace' only",
                hint="remove 'mode' or write to a table",
            )
        target = self.target_path(load.target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.qf-{run_id}.tmp")
        table = data.read_all()
        kind = file_format(target.name)
        if kind == "parquet":
            pq.write_table(table, tmp)
        elif kind == "csv":
            pa_csv.write_csv(table, tmp)
        else:
            with duckdb.connect() as con:
                con.register("t", table)
                con.execute(f"COPY t TO '{tmp}' (FORMAT json)")
        load.staging_name = str(tmp)
        load.rows = table.num_rows
        load.columns = [(f.name, str(f.type)) for f in table.schema]
        load.fingerprint_before = self.fingerprint(load.target)
        before = self.snapshot(load.target)
        load.diff = {"added": table.num_rows, "removed": before.rows, "changed": 0}
        return load

    def publish(self, loads: list[StagedLoad]) -> None:
        for load in loads:  # each file is replaced atomically; a folder has no multi-file transaction
            faults.point("publish.in_transaction")
            os.replace(load.staging_name, self.target_path(load.target))

    def staged_exists(self, load: StagedLoad) -> bool:
        return bool(load.staging_name) and Path(load.staging_name).exists()

    def discard(self, loads: list[StagedLoad]) -> None:
        for load in loads:
            if load.staging_name:
                Path(load.staging_name).unlink(missing_ok=True)

    def snapshot(self, target: TargetRef) -> Snapshot:
        path = self.target_path(target)
        if not path.exists():
            return Snapshot(target=target.table, exists=False)
        with duckdb.connect() as con:
            rel = con.sql(
                f"SELECT * FROM {READERS[file_format(path.name)]}($path)", params={"path": str(path)}
            )
            rows = con.sql(
                f"SELECT count(*) FROM {READERS[file_format(path.name)]}($path)", params={"path": str(path)}
            ).fetchall()[0][0]
            return Snapshot(
                target=target.table,
                exists=True,
                columns=tuple(zip(rel.columns, [str(t) for t in rel.types], strict=True)),
                rows=int(rows),
            )

    def fingerprint(self, target: TargetRef) -> str | None:
        path = self.target_path(target)
        if not path.exists():
            return None
        stat = path.stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def preview(self, load: StagedLoad, limit: int = 10) -> pa.Table:
        with duckdb.connect() as con:
            fn = READERS[file_format(self.target_path(load.target).name)]
            return con.sql(
                f"SELECT * FROM {fn}($path) LIMIT {int(limit)}", params={"path": load.staging_name}
            ).to_arrow_table()
