"""A folder of batch files as a stream's sink: `load: {path: lake/clicks/*.parquet, mode: append}`.

A folder has no transaction, so exactly once rests on names instead: batch N of a stream is the
file `<stream>-<N>.parquet` (written under a temporary name, then renamed), and the stream's
position is a small file in `.queryforge/streams/` replaced after the batch's files are in place.
A crash between the two leaves the position one batch behind: the restart reads that batch again
and writes it to the same name, replacing the file instead of adding one. Readers take the
folder with the same pattern (`extract: {path: lake/clicks/*.parquet}`); temporary files start
with a dot, which the pattern does not match.

Quarantined batches go to `<folder>/_quarantine/`, unreadable messages to `<folder>/_rejected/`,
both named the same way.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa

from .. import faults
from ..errors import SpecError
from .base import ConnectionConfig, StagedLoad, TargetRef
from .files import FilesConnector, file_format, write_file
from .sql import StreamMark
from .streams import QUARANTINE_SUFFIX

STATE = Path(".queryforge") / "streams"


def batch_folder_pattern(path: str, where: str) -> tuple[str, str]:
    """(folder, extension) of a stream's file target `folder/*.ext`; refused otherwise."""
    folder, _, name = path.rpartition("/")
    match = re.fullmatch(r"\*(\.[A-Za-z0-9]+(?:\.gz)?)", name)
    if not folder or not match or any(ch in folder for ch in "*?["):
        raise SpecError(
            f"A streaming pipeline writes files as a folder of batches; '{path}' is not 'folder/*.ext'",
            where=where,
            hint="e.g. path: lake/clicks/*.parquet (each batch becomes one file there)",
        )
    file_format(name)  # a format we write
    return folder, match.group(1)


class FolderSink:
    """The stream-sink side of the workspace's files connection (see the module docstring)."""

    direct_appends = False

    def __init__(self, files: FilesConnector, patterns: list[str]) -> None:
        self.files = files
        self.state = files.folder / STATE
        self.patterns = patterns  # the loads' targets; unreadable messages go beside the first

    @property
    def config(self) -> ConnectionConfig:
        return self.files.config

    def ensure_writable(self, where: str) -> None:
        self.files.ensure_writable(where)

    def stream_key(self, stream: str) -> str:
        return stream

    def close(self) -> None:
        pass

    def _position_file(self, stream: str) -> Path:
        return self.state / f"{stream}.json"

    def stream_position(self, stream: str) -> tuple[int, str, str] | None:
        try:
            saved = json.loads(self._position_file(stream).read_text())
        except FileNotFoundError:
            return None
        return int(saved["batch"]), str(saved["position"]), str(saved["token"])

    def table_columns(self, schema: str | None, name: str) -> list[tuple[str, str]] | None:
        return None

    def append_batch(
        self, appends: list[tuple[TargetRef, pa.RecordBatchReader]], mark: StreamMark
    ) -> list[int]:
        raise NotImplementedError

    def _folder(self, target: TargetRef) -> tuple[Path, str]:
        """The real folder a target's batch files go to, and their extension."""
        table = target.table
        extra = ""
        if table.endswith(QUARANTINE_SUFFIX):
            table, extra = table.removesuffix(QUARANTINE_SUFFIX), "_quarantine"
        elif "*" not in table:  # the runner's table of unreadable messages: beside the first load's
            table, extra = self.patterns[0], "_rejected"
        folder, ext = batch_folder_pattern(table, f"connection '{self.files.name}'")
        real = self.files.fenced_target(folder, who=f"connection '{self.files.name}'", field="load.path")
        return (real / extra if extra else real), ext

    def _batch_files(self, mark: StreamMark) -> set[Path]:
        """Every name batch `mark.batch` of the stream may have: in each load's folder, its
        quarantine and the rejected messages' folder."""
        targets = [TargetRef(connection=self.files.name, table=p) for p in self.patterns]
        targets += [TargetRef(connection=self.files.name, table=p + QUARANTINE_SUFFIX) for p in self.patterns]
        targets.append(TargetRef(connection=self.files.name, table="rejected"))
        found = set()
        for target in targets:
            folder, ext = self._folder(target)
            found.add(folder / f"{mark.stream}-{mark.batch:09d}{ext}")
        return found

    def stage(
        self, run_id: str, load: StagedLoad, data: pa.RecordBatchReader, *, fingerprint: bool = True
    ) -> StagedLoad:
        """The batch written beside its final place under a dot-name (renamed at publish)."""
        folder, ext = self._folder(load.target)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{run_id}-{load.step_id}{ext}.tmp"
        table = data.read_all()
        write_file(table, tmp, file_format(ext))
        load.staging_name = str(tmp)
        load.rows = table.num_rows
        load.columns = [(f.name, str(f.type)) for f in table.schema]
        load.diff = {"added": table.num_rows, "removed": 0, "changed": 0}
        return load

    def publish(self, loads: list[StagedLoad], mark: StreamMark | None = None) -> None:
        """Each staged file renamed to its batch's name (replacing a replay's earlier copy), then
        the position; a crash in between repeats the batch into the same names."""
        if mark is None:
            raise SpecError("A folder of batch files is written by streaming pipelines only")
        written: set[Path] = set()
        for load in loads:
            folder, ext = self._folder(load.target)
            os.replace(load.staging_name, folder / f"{mark.stream}-{mark.batch:09d}{ext}")
            written.add(folder / f"{mark.stream}-{mark.batch:09d}{ext}")
            faults.point("publish.in_transaction")
        for path in self._batch_files(mark) - written:  # a replay whose checks or rejects came out
            path.unlink(missing_ok=True)  # otherwise than the first try's (other batch boundaries)
        faults.point("stream.in_transaction")
        self.state.mkdir(parents=True, exist_ok=True)
        saved = {"batch": mark.batch, "position": mark.position, "token": mark.token}
        tmp = self._position_file(mark.stream).with_suffix(".tmp")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, self._position_file(mark.stream))
