"""The planner's data-file profiles are reused while a file is unchanged and redone when it changes.

A stale profile would hide a new value from the planner ("returned" orders it cannot link), a
missing one only costs time: so reuse is tied to the file's size and mtime, and every change of
either profiles the file again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from queryforge.catalog.cache import CatalogCache, FileProfiles
from queryforge.planner import catalog as planner_catalog
from queryforge.planner.catalog import file_sources


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files profiled (not taken from the cache), in order."""
    calls: list[str] = []
    real = planner_catalog._profile

    def counting(con: Any, path: Path) -> Any:
        calls.append(path.name)
        return real(con, path)

    monkeypatch.setattr(planner_catalog, "_profile", counting)
    return calls


def write_orders(root: Path, statuses: list[str]) -> Path:
    path = root / "data" / "orders.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{i},{s},{i * 1.5}\n" for i, s in enumerate(statuses))
    path.write_text("id,status,amount\n" + rows)
    return path


def domains(sources: list[Any], name: str) -> dict[str, tuple[str, ...]]:
    return next(s.domains for s in sources if s.name == name)


def test_an_unchanged_file_is_profiled_once_and_a_changed_one_again(
    tmp_path: Path, counted: list[str]
) -> None:
    cache = CatalogCache(tmp_path / "catalog")
    path = write_orders(tmp_path, ["shipped", "pending", "shipped"])
    (tmp_path / "data" / "customers.csv").write_text("id,country\n1,FR\n2,DE\n")

    first = file_sources(tmp_path, "data", cache)
    assert sorted(counted) == ["customers.csv", "orders.csv"]
    assert domains(first, "data/orders.csv")["status"] == ("pending", "shipped")

    again = file_sources(tmp_path, "data", cache)
    assert sorted(counted) == ["customers.csv", "orders.csv"]  # nothing profiled twice
    assert [(s.name, s.columns, s.domains) for s in again] == [(s.name, s.columns, s.domains) for s in first]

    write_orders(tmp_path, ["shipped", "pending", "returned", "shipped"])  # another size
    changed = file_sources(tmp_path, "data", cache)
    assert counted[2:] == ["orders.csv"]
    assert domains(changed, "data/orders.csv")["status"] == ("pending", "returned", "shipped")

    # Same size, new content: the mtime alone tells.
    stat = path.stat()
    write_orders(tmp_path, ["shipped", "pending", "cancel", "shipped"])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert domains(file_sources(tmp_path, "data", cache), "data/orders.csv")["status"] == (
        "cancel",
        "pending",
        "shipped",
    )
    assert counted[3:] == ["orders.csv"]


def test_a_removed_file_is_forgotten_and_a_broken_cache_is_rebuilt(
    tmp_path: Path, counted: list[str]
) -> None:
    cache = CatalogCache(tmp_path / "catalog")
    write_orders(tmp_path, ["a", "b"])
    gone = tmp_path / "data" / "old.csv"
    gone.write_text("x\n1\n")
    file_sources(tmp_path, "data", cache)
    stored = tmp_path / "catalog" / FileProfiles.NAME
    assert set(json.loads(stored.read_text())["files"]) == {"data/orders.csv", "data/old.csv"}

    gone.unlink()
    assert [s.name for s in file_sources(tmp_path, "data", cache)] == ["data/orders.csv"]
    assert set(json.loads(stored.read_text())["files"]) == {"data/orders.csv"}

    stored.write_text("{not json")
    before = len(counted)
    assert domains(file_sources(tmp_path, "data", cache), "data/orders.csv")["status"] == ("a", "b")
    assert counted[before:] == ["orders.csv"]


def test_an_unreadable_file_is_left_out_from_the_cache_too(tmp_path: Path, counted: list[str]) -> None:
    cache = CatalogCache(tmp_path / "catalog")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.parquet").write_bytes(b"not a parquet file")
    assert file_sources(tmp_path, "data", cache) == []
    assert file_sources(tmp_path, "data", cache) == []
    assert counted == ["broken.parquet"]  # the failure is remembered while the file is unchanged


def test_without_a_cache_every_call_profiles(tmp_path: Path, counted: list[str]) -> None:
    write_orders(tmp_path, ["a"])
    file_sources(tmp_path, "data")
    file_sources(tmp_path, "data")
    assert counted == ["orders.csv", "orders.csv"]
