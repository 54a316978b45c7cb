"""Files and folders of files: CSV, NDJSON/JSON and Parquet, with globs and gzip.

Reading is done by the engine (DuckDB reads files directly and in parallel); this connector
resolves paths inside the workspace, infers formats, and publishes file targets by writing a
temporary file beside the target and renaming it atomically.
"""

from __future__ import annotations

import glob
import gzip
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
from ..libs.duckdb_errors import input_problem
from .base import ColumnInfo, ConnectionConfig, Connector, Snapshot, StagedLoad, TableInfo, TargetRef
from .paths import PathFence, glob_base, real_path
from .streams import sql_string

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


def write_file(table: pa.Table, path: Path, kind: str) -> None:
    """A table written as one file of `kind` (parquet, csv or newline-delimited JSON)."""
    if kind == "parquet":
        pq.write_table(table, path)
    elif kind == "csv":
        pa_csv.write_csv(table, path)
    else:
        with duckdb.connect() as con:
            con.register("t", table)
            con.execute(f"COPY t TO {sql_string(str(path))} (FORMAT json)")


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


_SNIFFED: dict[tuple[str, int, int, str], dict[str, Any]] = {}

# read_csv options that change what the sniffer finds; the user's are passed to it as given.
_SNIFF_OPTIONS = frozenset(
    {
        "delim", "sep", "quote", "escape", "header", "encoding", "null_padding", "skip", "comment",
        "new_line", "max_line_size", "strict_mode", "ignore_errors", "sample_size", "compression",
        "decimal_separator", "thousands", "dateformat", "timestampformat", "auto_type_candidates",
        "allow_quoted_nulls", "all_varchar", "normalize_names", "nullstr", "force_not_null",
    }
)  # fmt: skip
_DELIMITERS = (",", ";", "\t", "|")


def sniffed_csv_options(
    path: Path, options: dict[str, Any] | None = None, where: str | None = None
) -> dict[str, Any]:
    """Detect a CSV's dialect and column types once, so later reads skip DuckDB's sniffer.

    Every query over `read_csv(...)` without explicit columns sniffs the file again (tens of
    milliseconds each, for every view built on it); pinning what the sniffer found makes those
    reads cheap and keeps the types stable between validate and run. The extract's own dialect
    options are sniffed with, so what is pinned matches them.

    Raises:
        SpecError: the file cannot be read as CSV (encoding, a huge line, broken gzip), or its
            rows are ragged and it came out as one single column.
    """
    given = {k: v for k, v in (options or {}).items() if k in _SNIFF_OPTIONS}
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, repr(sorted(given.items())))
    if key not in _SNIFFED:
        call = exp.Anonymous(
            this="sniff_csv",
            expressions=[
                exp.Literal.string(str(path)),
                *(exp.EQ(this=exp.column(k), expression=_literal(v)) for k, v in given.items()),
            ],
        )
        try:
            with duckdb.connect() as con:
                rel = con.sql(exp.select("*").from_(call).sql("duckdb"))
                found = dict(zip(rel.columns, rel.fetchall()[0], strict=True))
        except duckdb.Error as exc:
            what, hint = input_problem(exc, str(path)) or (
                f"'{path}' cannot be read as CSV: {str(exc).splitlines()[0]}",
                "check the file, or give its dialect on the extract: options: {delim: ',', header: true}",
            )
            raise SpecError(what[:1].upper() + what[1:], where=where, hint=hint) from None
        if len(found["Columns"]) == 1 and not {"delim", "sep"} & set(given):
            _refuse_one_column(path, where)
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


def _refuse_one_column(path: Path, where: str | None) -> None:
    """A SpecError when a file sniffed as one column has a delimiter in its first line.

    DuckDB falls back to a single column when rows have different numbers of fields; auditing
    that column would pass checks on data nobody meant to load.
    """
    try:
        opener = gzip.open if path.name.lower().endswith((".gz", ".gzip")) else open
        with opener(path, "rb") as f:
            first = f.readline(65_536).decode("utf-8", "replace")
    except (OSError, EOFError):
        return
    counts = {d: first.count(d) for d in _DELIMITERS}
    delim = max(counts, key=lambda d: counts[d])
    if counts[delim]:
        shown = "\\t" if delim == "\t" else delim
        raise SpecError(
            f"CSV file '{path}' was read as one single column, though its first line contains "
            f"'{shown}': its rows probably have different numbers of fields",
            where=where,
            hint=f"fix the file, or give the dialect on the extract: options: {{delim: '{shown}', "
            "null_padding: true}",
        )


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

    def __init__(self, config: ConnectionConfig, root: Path) -> None:
        super().__init__(config, root)
        # Every file this connector reads or writes for a pipeline passes this fence; the
        # connection set swaps in the strict one while a drafted pipeline compiles.
        self.fence = PathFence.of(root)

    @property
    def folder(self) -> Path:
        """The connection's folder, as a real path (writes never leave it)."""
        return self.resolve_path(self.location() or ".")

    def fenced(
        self, pattern: str, *, who: str = "a pipeline step", field: str = "path", where: str | None = None
    ) -> list[Path]:
        """The files a path or glob matches, once the fence has passed its folder and every match.

        Each match is judged by its real path, so a symlink (or a `..` after a wildcard) that lands
        in .queryforge/ or, for a drafted pipeline, outside the workspace is refused.
        """
        self.fence.check(pattern, self.resolve_path(glob_base(pattern)), who=who, field=field, where=where)
        found = self.glob(pattern)
        for path in found:
            self.fence.check(pattern, real_path(path, self.root), who=who, field=field, where=where)
        return found

    def glob(self, pattern: str) -> list[Path]:
        """The files a path or glob matches, as spelled (unfenced: use `fenced` for a pipeline)."""
        full = Path(pattern) if Path(pattern).is_absolute() else self.root / pattern
        return sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())

    def matches(
        self, pattern: str, where: str, *, who: str = "a pipeline step", field: str = "path"
    ) -> list[Path]:
        """Files a path or glob names (fenced); a clear error with a suggestion when there are none."""
        full = Path(pattern) if Path(pattern).is_absolute() else self.root / pattern
        found = self.fenced(pattern, who=who, field=field, where=where)
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
            sniffed = sniffed_csv_options(files[0], opts, where)
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
        """Identity of the files an extract reads (names, sizes, mtimes, inodes) -- cheap, for reuse on
        resume. The inode tells a file an atomic-rename writer replaced from one with the same size and
        mtime (a writer that copies times along)."""
        files = sorted(glob.glob(str(self.resolve_path(pattern)), recursive=True))
        stats = [(f, Path(f).stat()) for f in files]
        parts = [f"{f}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}" for f, st in stats]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def total_bytes(self, pattern: str) -> int:
        """Bytes in the files a pattern names (what an extract reads, compressed as stored)."""
        return sum(Path(f).stat().st_size for f in glob.glob(str(self.resolve_path(pattern)), recursive=True))

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
        with duckdb.connect() as con:
            for path in self.data_files():
                kind = file_format(path.name)
                columns = describe_file(con, path, kind)
                if columns is not None:
                    out.append(TableInfo(name=str(path.relative_to(self.folder)), columns=columns))
        return out

    def data_files(self) -> list[Path]:
        """The files of the folder that a reader understands, in name order."""
        if not self.folder.is_dir():
            return []
        return [p for p in sorted(self.folder.rglob("*")) if p.is_file() and _readable(p.name)]

    # ------------------------------------------------------------ file targets
    def fenced_target(self, name: str, *, who: str, field: str = "table", where: str | None = None) -> Path:
        """The real path a file target names; refused when it leaves the folder or enters .queryforge/."""
        folder = self.folder
        return self.fence.check(
            name, real_path(name, folder), who=who, field=field, where=where, write=True, base=folder
        )

    def target_path(self, target: TargetRef) -> Path:
        return self.fenced_target(target.table, who=f"connection '{self.name}'")

    def stage_view(self, run_id: str, load: StagedLoad) -> StagedLoad:
        raise SpecError(
            f"Step '{load.step_id}' publishes '{load.target.table}' as a view, but a file cannot be a "
            "view: a view is a query kept in a database, over that database's tables",
            hint="use mode: replace to write the data to the file, or load into a table of a database",
        )

    def stage(self, run_id: str, load: StagedLoad, data: pa.RecordBatchReader) -> StagedLoad:
        if "*" in load.target.table:
            raise SpecError(
                f"Step '{load.step_id}' loads into '{load.target.table}', a folder of batch files, which "
                "only a streaming pipeline writes",
                hint="name one file (e.g. out/result.parquet), or add 'mode: streaming'",
            )
        if load.mode != "replace":
            raise SpecError(
                f"Step '{load.step_id}' loads a file, which supports mode 'replace' only",
                hint="remove 'mode' or write to a table",
            )
        target = self.target_path(load.target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.qf-{run_id}.tmp")
        table = data.read_all()
        write_file(table, tmp, file_format(target.name))
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
        """The file's bytes (SHA-256) and identity (inode), not its modification time.

        A writer can keep size and mtime while changing bytes (or restore the mtime), so the content
        decides. The inode changes with every atomic-rename replace, ours included, which lets
        crash recovery see that a publish happened even when it wrote the same bytes; a mere
        `touch` is no change to refuse a commit for.
        """
        path = self.target_path(target)
        try:
            with path.open("rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
                stat = os.fstat(fh.fileno())
        except FileNotFoundError:
            return None
        return f"{stat.st_size}:{stat.st_ino}:{digest}"

    def preview(self, load: StagedLoad, limit: int = 10) -> pa.Table:
        with duckdb.connect() as con:
            fn = READERS[file_format(self.target_path(load.target).name)]
            return con.sql(
                f"SELECT * FROM {fn}($path) LIMIT {int(limit)}", params={"path": load.staging_name}
            ).to_arrow_table()


def _readable(name: str) -> bool:
    try:
        file_format(name)
    except SpecError:
        return False
    return True


def describe_file(con: duckdb.DuckDBPyConnection, path: Path, kind: str) -> tuple[ColumnInfo, ...] | None:
    """The columns DuckDB reads from one data file; None when it cannot read it."""
    fn = exp.Anonymous(this=READERS[kind], expressions=[exp.Literal.string(str(path))])
    try:
        desc = con.execute(f"DESCRIBE SELECT * FROM {fn.sql('duckdb')}").fetchall()
    except duckdb.Error:
        return None
    return tuple(ColumnInfo(r[0], r[1]) for r in desc)
