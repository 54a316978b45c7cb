"""A per-connection cache of introspection results, kept as JSON files with a time to live.

Introspecting a large database takes seconds (PostgreSQL's catalog, MySQL's information_schema);
the planner and `queryforge catalog` ask often, so results are kept in `.queryforge/catalog/` and
reused until they are older than the TTL or `--refresh` drops them. Every result says whether it
came from the cache, so nobody mistakes an old listing for a fresh one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..connectors.base import ColumnInfo, TableInfo

DEFAULT_TTL_S = 600.0
FORMAT = 1


@dataclass(frozen=True)
class CatalogEntry:
    connection: str
    tables: tuple[TableInfo, ...]
    fetched_at: float
    cache_hit: bool
    error: str | None = None  # set when the connection could not be introspected (nothing cached)

    def names(self) -> set[str]:
        """Every table by its bare and its schema-qualified name, lower-cased (for lookups)."""
        return {n.lower() for t in self.tables for n in (t.name, t.qualified)}

    def to_json(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            **({"error": self.error} if self.error else {}),
            "fetched_at": self.fetched_at,
            "age_s": round(time.time() - self.fetched_at, 3),
            "cache_hit": self.cache_hit,
            "tables": [asdict(t) for t in self.tables],
        }


def _table(data: dict[str, Any]) -> TableInfo:
    return TableInfo(
        name=data["name"],
        schema=data.get("schema"),
        columns=tuple(ColumnInfo(**c) for c in data.get("columns", ())),
        row_estimate=data.get("row_estimate"),
        primary_key=tuple(data.get("primary_key", ())),
        foreign_keys=tuple((a, b) for a, b in data.get("foreign_keys", ())),
    )


class CatalogCache:
    def __init__(self, folder: Path, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.folder = folder
        self.ttl_s = ttl_s

    def path(self, connection: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in connection)
        return self.folder / f"{safe}.json"

    def get(
        self, connection: str, introspect: Callable[[], list[TableInfo]], *, refresh: bool = False
    ) -> CatalogEntry:
        """The cached listing if it is fresh, else a new one (which replaces the cached one)."""
        if not refresh:
            cached = self._read(connection)
            if cached is not None:
                return cached
        tables = tuple(introspect())
        entry = CatalogEntry(connection=connection, tables=tables, fetched_at=time.time(), cache_hit=False)
        self._write(entry)
        return entry

    def invalidate(self, connection: str | None = None) -> None:
        paths = [self.path(connection)] if connection else list(self.folder.glob("*.json"))
        for path in paths:
            path.unlink(missing_ok=True)

    def _read(self, connection: str) -> CatalogEntry | None:
        try:
            data = json.loads(self.path(connection).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if data.get("format") != FORMAT or data.get("connection") != connection:
            return None
        fetched = float(data["fetched_at"])
        if time.time() - fetched > self.ttl_s:
            return None
        return CatalogEntry(
            connection=connection,
            tables=tuple(_table(t) for t in data["tables"]),
            fetched_at=fetched,
            cache_hit=True,
        )

    def _write(self, entry: CatalogEntry) -> None:
        """Write atomically (a reader never sees half a file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, **entry.to_json()}
        target = self.path(entry.connection)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
        tmp.replace(target)


FileProfile = tuple[tuple[tuple[str, str], ...], dict[str, tuple[str, ...]]]  # columns, value domains


class FileProfiles:
    """Columns and value domains of the data files, reused while a file's size and mtime are unchanged.

    Every `ask` describes each data file and counts the distinct values of its text columns; on a
    folder of large files that is most of the planner's time, and the files rarely change between
    two requests. Kept beside the connection listings (one JSON file; a dot in its name keeps it
    apart from any connection's). No TTL: an entry is used only for the same size and mtime.
    """

    NAME = "planner-files.profiles.json"

    def __init__(self, folder: Path) -> None:
        self.path = folder / self.NAME
        self._entries: dict[str, Any] = {}
        self._seen: set[str] = set()
        self._changed = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") == FORMAT:
                self._entries = dict(data.get("files", {}))
        except (OSError, ValueError, AttributeError):
            pass

    def get(self, rel: str, path: Path, compute: Callable[[], FileProfile | None]) -> FileProfile | None:
        """The profile of one file: cached when its size and mtime match, else computed (None: unreadable)."""
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        self._seen.add(rel)
        entry = self._entries.get(rel)
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            if entry.get("columns") is None:
                return None
            columns = tuple((str(c), str(t)) for c, t in entry["columns"])
            return columns, {k: tuple(v) for k, v in entry.get("domains", {}).items()}
        profile = compute()
        self._entries[rel] = {
            "stamp": stamp,
            "columns": None if profile is None else [list(c) for c in profile[0]],
            "domains": {} if profile is None else {k: list(v) for k, v in profile[1].items()},
        }
        self._changed = True
        return profile

    def save(self) -> None:
        """Write the profiles of the files seen since loading (files gone since are forgotten), atomically."""
        if not self._changed and set(self._entries) == self._seen:
            return
        kept = {rel: entry for rel, entry in self._entries.items() if rel in self._seen}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "files": kept}), encoding="utf-8")
            tmp.replace(self.path)
        except OSError:  # a read-only state folder only costs the next ask the same work again
            pass
