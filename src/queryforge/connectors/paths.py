"""One resolver and one fence for every pipeline field that names a file.

`extract.path` (globs too), `load.path`, a files connection's `table`, `@file` connection names
and database files given as `path:` all end up here: the text is resolved to the real path it
reaches (`..` and every symlink resolved), and the fence decides on that, never on the spelling.

- `.queryforge/` (metadata DB, warehouse, run work areas, drafts) is never readable or writable
  by a pipeline, human-written or drafted;
- a write stays inside its connection's folder;
- a drafted (`ask`) pipeline reads only inside the workspace, and never names a URL.

A human-written pipeline may still read a file outside the workspace that it names explicitly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import STATE_DIR
from ..errors import PermissionDenied

URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
GLOB_CHARS = "*?["
DRAFTS_DIR = Path(STATE_DIR, "asks")  # where `ask` writes its drafts (Workspace.ask's drafts_dir)


def real_path(text: str | os.PathLike[str], base: Path) -> Path:
    """The real location a path reaches: relative to `base`, with `..` and every symlink resolved."""
    path = Path(text)
    return Path(os.path.realpath(path if path.is_absolute() else base / path))


def glob_base(pattern: str) -> str:
    """The folder a glob searches: its components before the first one with a wildcard."""
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if any(ch in part for ch in GLOB_CHARS):
            return str(Path(*parts[:i])) if i else "."
    return pattern


class PathRefused(PermissionDenied):
    """A pipeline field names a file the fence forbids; carries what the audit log records."""

    def __init__(
        self, message: str, *, field: str, path: str, resolved: Path, where: str | None, hint: str
    ) -> None:
        self.field = field
        self.path = path
        self.resolved = resolved
        super().__init__(message, where=where, hint=hint)

    @property
    def details(self) -> dict[str, Any]:
        return {"field": self.field, "path": self.path[:500], "resolved": str(self.resolved)[:500]}


@dataclass(frozen=True)
class PathFence:
    """What a pipeline may read and write; `drafted` pipelines (from `ask`) get the strict rules."""

    root: Path  # the workspace's real path
    drafted: bool = False

    @classmethod
    def of(cls, root: Path, *, drafted: bool = False) -> PathFence:
        return cls(Path(os.path.realpath(root)), drafted)

    @classmethod
    def for_origin(cls, root: Path, origin: str) -> PathFence:
        """The fence for a pipeline source: drafted when `ask` wrote it (it lives under .queryforge/asks)."""
        fence = cls.of(root)
        drafts = real_path(DRAFTS_DIR, fence.root)
        return cls(fence.root, drafted=real_path(origin, Path.cwd()).is_relative_to(drafts))

    @property
    def state_dirs(self) -> tuple[Path, ...]:
        """The state folder as written and as it really is (it may itself be a symlink)."""
        return (self.root / STATE_DIR, real_path(STATE_DIR, self.root))

    def refusal(
        self, text: str, resolved: Path, *, write: bool = False, base: Path | None = None
    ) -> str | None:
        """Why a pipeline may not read (or write) `text`, which resolves to `resolved`; None if it may."""
        if self.drafted and URL.match(text):
            return "it is a URL, and drafted pipelines use only files inside the workspace"
        if any(resolved.is_relative_to(d) for d in self.state_dirs):
            return (
                f"it resolves to {resolved}, inside the workspace state folder {STATE_DIR}/ "
                "(metadata, warehouse, run work areas), which no pipeline may read or write"
            )
        if write and base is not None and not resolved.is_relative_to(base):
            return f"it resolves to {resolved}, outside its connection's folder {base}"
        if self.drafted and not resolved.is_relative_to(self.root):
            return f"it resolves to {resolved}, outside the workspace {self.root}"
        return None

    def check(
        self,
        text: str,
        resolved: Path,
        *,
        who: str,
        field: str,
        where: str | None = None,
        write: bool = False,
        base: Path | None = None,
    ) -> Path:
        """`resolved`, or PathRefused naming who, the field, the text and the real path."""
        reason = self.refusal(text, resolved, write=write, base=base)
        if reason is None:
            return resolved
        hint = (
            "drafted pipelines read and write only inside the workspace, never in .queryforge/"
            if self.drafted
            else "pipelines never read or write .queryforge/, and a load stays inside its connection's folder"
        )
        raise PathRefused(
            f"Blocked: {who} may not {'write' if write else 'read'} {field} '{text}': {reason}",
            field=field,
            path=text,
            resolved=resolved,
            where=where,
            hint=hint,
        )
