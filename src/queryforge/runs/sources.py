"""Source snapshots: a run reads each source file once, from its own work area.

Before any step reads a file extract, the run snapshots every file it names into
`<run>/sources/<step id>/`: a hard link when the file is old enough and on the same filesystem
(free, and an atomic-rename writer then replaces the directory entry, not our inode), otherwise a
private copy. Checks, transforms, loads and a resume of the same run all read the snapshot, so
what was audited is what is loaded. A hard link shares its inode with an in-place writer, so
`verify` compares size and mtime again before anything is published. See
docs/decisions/0005-sources-read-once.md.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import xxhash
from sqlglot import exp

from ..connectors.files import READERS
from ..errors import StepFailed, TransientError

# A file modified this recently may be written again within the same timestamp tick, which a size
# and mtime comparison cannot see (git's "racily clean" entries): such files are copied, not linked.
RACY_NS = 2_000_000_000
CHUNK = 4 << 20
TRIES = 3
MANIFEST = "manifest.json"


class SourceChanged(TransientError):
    """A source file changed while the run read it: nothing is published, the run can be retried."""


@dataclass(frozen=True)
class SnapshotFile:
    source: str  # the path the pipeline names
    path: str  # the snapshot the run reads
    size: int  # of the snapshot, as hashed
    mtime_ns: int
    inode: int
    linked: bool  # a hard link shares the source's inode; a copy is the run's own
    xxh3_128: str


@dataclass(frozen=True)
class Snapshot:
    """Every file one extract step reads, as snapshotted for one run."""

    step_id: str
    files: tuple[SnapshotFile, ...]

    @property
    def hash(self) -> str:
        """xxh3_128 of the content: of the one file, or of the files' hashes in order."""
        if len(self.files) == 1:
            return self.files[0].xxh3_128
        return xxhash.xxh3_128_hexdigest("\n".join(f.xxh3_128 for f in self.files).encode())

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def describe(self) -> str:
        """The step's note, short enough for `runs show`: hash, files, size, link or copy."""
        linked = sum(f.linked for f in self.files)
        n = len(self.files)
        how = "linked" if linked == n else "copied" if not linked else f"{linked} linked, {n - linked} copied"
        return f"snapshot xxh3_128:{self.hash}, {n} file{'s' if n != 1 else ''}, {_size(self.bytes)}, {how}"

    def paths(self) -> dict[str, str]:
        return {f.source: f.path for f in self.files}


def _size(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


# ---------------------------------------------------------------- files in a compiled query


def _readers(query: exp.Expr) -> list[exp.Array]:
    """The file lists of the read_csv/read_json/read_parquet calls a file extract compiles to."""
    names = set(READERS.values())
    return [
        fn.expressions[0]
        for fn in query.find_all(exp.Anonymous)
        if str(fn.this).lower() in names and fn.expressions and isinstance(fn.expressions[0], exp.Array)
    ]


def files_read(query: exp.Expr) -> list[str]:
    return [str(lit.this) for array in _readers(query) for lit in array.expressions]


def repoint(query: exp.Query, snapshot: Snapshot) -> exp.Query:
    """The extract's query reading the snapshot instead of the source (types pinned at compile stay)."""
    paths = snapshot.paths()
    query = query.copy()
    for array in _readers(query):
        array.set("expressions", [exp.Literal.string(paths[str(lit.this)]) for lit in array.expressions])
    return query


# ---------------------------------------------------------------- taking and checking


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def _hash(path: Path) -> str:
    digest = xxhash.xxh3_128()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _copy(source: str, target: Path) -> SnapshotFile | None:
    """A private copy hashed while it is written; None when the source moved during the copy."""
    digest = xxhash.xxh3_128()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    tmp = target.with_name(target.name + ".part")
    with open(source, "rb", buffering=0) as src, tmp.open("wb") as dst:
        before = os.fstat(src.fileno())
        while n := src.readinto(buf):
            digest.update(view[:n])
            dst.write(view[:n])
        after = os.fstat(src.fileno())
    if not _same(before, after) or after.st_size != tmp.stat().st_size:
        tmp.unlink()
        return None
    os.replace(tmp, target)
    st = target.stat()
    return SnapshotFile(source, str(target), st.st_size, st.st_mtime_ns, st.st_ino, False, digest.hexdigest())


def _link(source: str, target: Path) -> SnapshotFile | None:
    """A hard link, hashed; None when linking is impossible or the file is (or was just) written."""
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or linking not permitted: copy instead
        return None
    before = target.stat()
    if before.st_mtime_ns > time.time_ns() - RACY_NS:
        target.unlink()
        return None
    digest = _hash(target)
    if not _same(before, target.stat()):
        target.unlink()
        return None
    return SnapshotFile(source, str(target), before.st_size, before.st_mtime_ns, before.st_ino, True, digest)


def _take_file(source: str, target: Path) -> SnapshotFile:
    for _ in range(TRIES):
        target.unlink(missing_ok=True)
        try:
            taken = _link(source, target) or _copy(source, target)
        except FileNotFoundError:
            taken = None  # replaced by a writer that deletes first, or gone: try again
        except OSError as exc:
            raise StepFailed(
                f"Could not snapshot source file '{source}': {exc.strerror or exc}",
                hint="check that the file is readable and that the workspace's disk has room for a copy",
            ) from exc
        if taken is not None:
            return taken
        time.sleep(0.01)
    raise SourceChanged(
        f"Source file '{source}' kept changing (or disappeared) while the run snapshotted it",
        hint="the run is tried again; make writers replace files by atomic rename",
    )


def take(step_id: str, files: list[str], folder: Path, known: dict[str, SnapshotFile]) -> Snapshot:
    """Snapshot `files` into `folder/<step_id>/`; files in `known` (taken earlier in this run) are shared."""
    target = folder / step_id
    for source in [s for s, f in known.items() if Path(f.path).parent == target]:
        del known[source]  # a try of this step that failed half-way
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    taken: list[SnapshotFile] = []
    for i, source in enumerate(files):
        entry = known.get(source) or _take_file(source, target / f"{i}-{Path(source).name}")
        known[source] = entry
        taken.append(entry)
    snapshot = Snapshot(step_id=step_id, files=tuple(taken))
    (target / MANIFEST).write_text(
        json.dumps({"step_id": step_id, "hash": snapshot.hash, "files": [asdict(f) for f in taken]}, indent=1)
    )
    return snapshot


def load(step_id: str, folder: Path) -> Snapshot | None:
    """The snapshot an earlier attempt of this run took for a step, as its manifest records it."""
    try:
        data = json.loads((folder / step_id / MANIFEST).read_text())
        return Snapshot(step_id=step_id, files=tuple(SnapshotFile(**f) for f in data["files"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def changed(snapshot: Snapshot) -> list[str]:
    """Sources whose snapshot is no longer as taken (an in-place writer changed a hard-linked file)."""
    out = []
    for f in snapshot.files:
        try:
            st = os.stat(f.path)
        except OSError:
            out.append(f.source)
            continue
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (f.size, f.mtime_ns, f.inode):
            out.append(f.source)
    return out


def verify(snapshots: list[Snapshot]) -> None:
    """Raise SourceChanged if any snapshot moved since it was taken: what was audited must be loaded."""
    moved = sorted({s for snap in snapshots for s in changed(snap)})
    if moved:
        names = ", ".join(f"'{m}'" for m in moved[:3]) + (
            f" and {len(moved) - 3} more" if len(moved) > 3 else ""
        )
        raise SourceChanged(
            f"Source file changed while the run read it: {names} was written in place after the run "
            "snapshotted it, so nothing was published",
            hint="the run is tried again (or resume it); make writers replace files by atomic rename",
        )


def discard(folder: Path) -> None:
    """Drop a finished run's snapshots: hard links keep replaced versions of sources on disk."""
    shutil.rmtree(folder, ignore_errors=True)
