"""Source snapshots: a run reads each source file once, from its own work area.

Before any step reads a file extract, the run snapshots every file it names into
`<run>/sources/<step id>/`: a hard link when the file is old enough and on the same filesystem
(free, and an atomic-rename writer then replaces the directory entry, not our inode), otherwise a
private copy. Checks, transforms, loads and a resume of the same run all read the snapshot, so
what was audited is what is loaded. A hard link shares its inode with an in-place writer, so
`verify` compares size and mtime again before anything is published. See
docs/decisions/0005-sources-read-once.md.

A run hashes its hard links on a background thread (`Hasher`), so reading a large source once more
for its hash overlaps the run's query instead of preceding it; the hashes are awaited, and a file
that moved while it was hashed raises `SourceChanged`, before anything is published or a sandbox
run ends audited (decision 0007).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
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
PENDING = ""  # the hash of a hard link that a `Hasher` is still hashing
# Smaller files are hashed on the spot (~2 ms at most): waiting for a thread and writing the manifest
# and the step's note again would cost more than it hides.
BACKGROUND_MIN_BYTES = 8 << 20


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
    xxh3_128: str  # PENDING while a Hasher hashes it

    @property
    def pending(self) -> bool:
        return self.xxh3_128 == PENDING


@dataclass(frozen=True)
class Snapshot:
    """Every file one extract step reads, as snapshotted for one run."""

    step_id: str
    files: tuple[SnapshotFile, ...]

    @property
    def pending(self) -> bool:
        """Some file's hash is still being computed (see `Hasher`)."""
        return any(f.pending for f in self.files)

    @property
    def hash(self) -> str:
        """xxh3_128 of the content: of the one file, or of the files' hashes in order (PENDING
        while a file's hash is)."""
        if self.pending:
            return PENDING
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
        digest = "pending" if self.pending else self.hash
        return f"snapshot xxh3_128:{digest}, {n} file{'s' if n != 1 else ''}, {_size(self.bytes)}, {how}"

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


def _link(source: str, target: Path, hasher: Hasher | None) -> SnapshotFile | None:
    """A hard link, hashed (by `hasher` in the background if given); None when linking is impossible
    or the file is (or was just) written."""
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or linking not permitted: copy instead
        return None
    before = target.stat()
    if before.st_mtime_ns > time.time_ns() - RACY_NS:
        target.unlink()
        return None
    if hasher is not None and before.st_size >= BACKGROUND_MIN_BYTES:
        entry = SnapshotFile(
            source, str(target), before.st_size, before.st_mtime_ns, before.st_ino, True, PENDING
        )
        hasher.submit(entry)
        return entry
    digest = _hash(target)
    if not _same(before, target.stat()):
        target.unlink()
        return None
    return SnapshotFile(source, str(target), before.st_size, before.st_mtime_ns, before.st_ino, True, digest)


def _take_file(source: str, target: Path, hasher: Hasher | None) -> SnapshotFile:
    for _ in range(TRIES):
        target.unlink(missing_ok=True)
        try:
            taken = _link(source, target, hasher) or _copy(source, target)
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


def take(
    step_id: str,
    files: list[str],
    folder: Path,
    known: dict[str, SnapshotFile],
    hasher: Hasher | None = None,
) -> Snapshot:
    """Snapshot `files` into `folder/<step_id>/`; files in `known` (taken earlier in this run) are shared.

    With `hasher`, hard links are hashed in the background: their hash is PENDING until
    `hasher.settle` (the manifest is written again then)."""
    target = folder / step_id
    for source in [s for s, f in known.items() if Path(f.path).parent == target]:
        del known[source]  # a try of this step that failed half-way
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    taken: list[SnapshotFile] = []
    for i, source in enumerate(files):
        entry = known.get(source) or _take_file(source, target / f"{i}-{Path(source).name}", hasher)
        known[source] = entry
        taken.append(entry)
    snapshot = Snapshot(step_id=step_id, files=tuple(taken))
    write_manifest(snapshot, folder)
    return snapshot


def write_manifest(snapshot: Snapshot, folder: Path) -> None:
    """`folder/<step id>/manifest.json`, replaced atomically (a resume reads it)."""
    target = folder / snapshot.step_id / MANIFEST
    tmp = target.with_name(MANIFEST + ".part")
    files = [asdict(f) for f in snapshot.files]
    tmp.write_text(json.dumps({"step_id": snapshot.step_id, "hash": snapshot.hash, "files": files}, indent=1))
    os.replace(tmp, target)


def load(step_id: str, folder: Path) -> Snapshot | None:
    """The snapshot an earlier attempt of this run took for a step, as its manifest records it
    (a file's hash is PENDING when the attempt ended before its background hash did)."""
    try:
        data = json.loads((folder / step_id / MANIFEST).read_text())
        return Snapshot(step_id=step_id, files=tuple(SnapshotFile(**f) for f in data["files"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _moved(f: SnapshotFile) -> bool:
    """The snapshot file is no longer as taken (gone, or an in-place writer changed a hard link)."""
    try:
        st = os.stat(f.path)
    except OSError:
        return True
    return (st.st_size, st.st_mtime_ns, st.st_ino) != (f.size, f.mtime_ns, f.inode)


def changed(snapshot: Snapshot) -> list[str]:
    """Sources whose snapshot is no longer as taken."""
    return [f.source for f in snapshot.files if _moved(f)]


def _changed_error(moved: list[str], when: str) -> SourceChanged:
    names = ", ".join(f"'{m}'" for m in moved[:3]) + (f" and {len(moved) - 3} more" if len(moved) > 3 else "")
    return SourceChanged(
        f"Source file changed while the run read it: {names} was written in place {when}, so nothing "
        "was published",
        hint="the run is tried again (or resume it); make writers replace files by atomic rename",
    )


def verify(snapshots: list[Snapshot]) -> None:
    """Raise SourceChanged if any snapshot moved since it was taken: what was audited must be loaded."""
    moved = sorted({s for snap in snapshots for s in changed(snap)})
    if moved:
        raise _changed_error(moved, "after the run snapshotted it")


def _hash_linked(entry: SnapshotFile) -> str | None:
    """The hash of a hard-linked snapshot, or None when the file moved while it was read."""
    try:
        digest = _hash(Path(entry.path))
    except OSError:
        return None
    return None if _moved(entry) else digest


class Hasher:
    """Hashes a run's hard-linked snapshots on one background thread (decision 0007).

    Taking the link, its stat and the racy-file check stay on the run's thread, before the first
    read; only reading the file once more for its hash moves here, so that it overlaps the run's
    query (xxhash and file reads release the GIL). `settle` waits for a snapshot's hashes. A linked
    file that moved while it was hashed is not retried as a copy (the run may have read it
    already): `settle` raises `SourceChanged`, before anything is published.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: dict[str, Future[str | None]] = {}

    def submit(self, entry: SnapshotFile) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qf-snapshot-hash")
        self._jobs[entry.path] = self._pool.submit(_hash_linked, entry)

    def settle(self, snapshot: Snapshot) -> Snapshot:
        """`snapshot` with every pending hash filled in, waiting for them; SourceChanged if one moved."""
        if not snapshot.pending:
            return snapshot
        files = []
        moved = []
        for f in snapshot.files:
            if f.pending:
                job = self._jobs.get(f.path)
                digest = job.result() if job is not None else _hash_linked(f)
                if digest is None:
                    moved.append(f.source)
                    continue
                f = replace(f, xxh3_128=digest)
            files.append(f)
        if moved:
            raise _changed_error(moved, "while the run hashed its snapshot")
        return replace(snapshot, files=tuple(files))

    def close(self) -> None:
        """Stop the thread; hashes nobody waited for are dropped (their manifests stay PENDING)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._jobs.clear()


def discard(folder: Path) -> None:
    """Drop a finished run's snapshots: hard links keep replaced versions of sources on disk."""
    shutil.rmtree(folder, ignore_errors=True)
