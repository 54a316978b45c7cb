"""A file-drop folder as a stream source: `extract: {path: inbox/*.json}` in a streaming pipeline.

Files are taken oldest first into `<folder>/.inflight/` (one rename each), read as one batch, and
moved to `<folder>/.done/` after the batch's publish committed. The position stored with the
publish names the batch's files (name, size, mtime), so after a crash the files still in flight
are either the committed batch (then only moved on) or an unpublished one (then read again).
Writers should write elsewhere and rename into the folder, so a half-written file is never taken.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import SpecError
from .streams import StreamBatch

INFLIGHT = ".inflight"
DONE = ".done"


def _identity(path: Path) -> list[object]:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


class FolderSource:
    def __init__(self, folder: Path, pattern: str, committed: str | None) -> None:
        if any(ch in str(folder) for ch in "*?[") or "/" in pattern:
            raise SpecError(
                f"A streaming file extract watches one folder; '{folder}/{pattern}' spans several",
                hint="use a path like inbox/*.json",
            )
        self.folder = folder
        self.pattern = pattern
        self.inflight = folder / INFLIGHT
        self.done = folder / DONE
        self.inflight.mkdir(parents=True, exist_ok=True)
        self.done.mkdir(parents=True, exist_ok=True)
        left = self._in_flight()
        if left and committed is not None and json.loads(committed) == [_identity(p) for p in left]:
            self._finish(left)  # the crash came after the commit, before the move: only move on

    def _in_flight(self) -> list[Path]:
        return sorted(p for p in self.inflight.iterdir() if p.is_file())

    def _finish(self, files: list[Path]) -> None:
        for path in files:
            os.replace(path, self.done / path.name)

    def poll(self, max_rows: int, max_wait_s: float) -> StreamBatch | None:
        """Up to `max_rows` files (each may hold many rows); the unfinished batch first."""
        files = self._in_flight()
        deadline = time.monotonic() + max_wait_s
        while not files:
            waiting = self._waiting()
            if waiting:
                waiting.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
                for path in waiting[:max_rows]:
                    os.replace(path, self.inflight / path.name)
                files = self._in_flight()
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
        return StreamBatch(
            count=len(files),
            position=json.dumps([_identity(p) for p in files]),
            files=tuple(files),
        )

    def ack(self, batch: StreamBatch) -> None:
        self._finish(list(batch.files))

    def _waiting(self) -> list[Path]:
        return [p for p in self.folder.glob(self.pattern) if p.is_file() and not p.name.startswith(".")]

    def lag(self) -> int | None:
        return len(self._waiting())

    def close(self) -> None:
        pass
