"""`load: {mode: snapshot}` keeps SCD type 2 history: three versions of a source, a hand-computed history.

Version 1 has customers 1-4. Version 2 changes 2's city, leaves 1 and 4 alone, deletes 3 and
adds 5. Version 3 changes 2 again, changes only 4's `note` (not a checked column, so no new
version) and brings 3 back. The expected history below is written by hand; each valid_from /
valid_to is matched to the run whose publish window holds it. Run on the DuckDB warehouse and on
PostgreSQL and MariaDB (real servers), and once more on SQLite.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pymysql
import pytest

from queryforge.errors import SpecError
from queryforge.workspace import Workspace
from tests.services import mysql_database, postgres_database

VERSIONS = [
    "id,name,city,note\n1,Ann,Oslo,a\n2,Bob,Rome,b\n3,Cid,Kyiv,c\n4,Dan,Lima,d\n",
    "id,name,city,note\n1,Ann,Oslo,a\n2,Bob,Pisa,b\n4,Dan,Lima,d\n5,Eve,Bonn,e\n",
    "id,name,city,note\n1,Ann,Oslo,a\n2,Bob,Nice,b\n3,Cid,Kyiv,c\n4,Dan,Lima,changed\n5,Eve,Bonn,e\n",
]

# (id, city, valid_from run, valid_to run or None, is_current): by hand from the versions above.
HISTORY = {
    (1, "Oslo", 1, None, True),
    (2, "Rome", 1, 2, False),
    (2, "Pisa", 2, 3, False),
    (2, "Nice", 3, None, True),
    (3, "Kyiv", 1, 2, False),
    (3, "Kyiv", 3, None, True),
    (4, "Lima", 1, None, True),
    (5, "Bonn", 2, None, True),
}

PIPELINE = """
name: customers_history
steps:
  - id: src
    extract: {path: data/customers.csv}
  - id: out
    load: {input: src, table: customers_history, mode: snapshot, keys: [id], check_columns: [name, city]}
"""


@contextlib.contextmanager
def target(kind: str, root: Path) -> Iterator[tuple[str, Any]]:
    """(queryforge.yaml, a function returning the history rows) for one kind of target."""
    if kind == "duckdb":

        def rows_duckdb() -> list[tuple[Any, ...]]:
            path = root / ".queryforge" / "warehouse.duckdb"
            with closing(duckdb.connect(str(path), read_only=True)) as con:
                return con.execute(
                    "SELECT id, city, note, valid_from, valid_to, is_current FROM customers_history"
                ).fetchall()

        yield "name: ws\n", rows_duckdb
    elif kind == "sqlite":
        db = root / "target.sqlite"

        def rows_sqlite() -> list[tuple[Any, ...]]:
            with closing(sqlite3.connect(db)) as con:
                got = con.execute(
                    "SELECT id, city, note, valid_from, valid_to, is_current FROM customers_history"
                ).fetchall()
            parse = lambda v: datetime.fromisoformat(v) if isinstance(v, str) else v  # noqa: E731
            return [(i, c, n, parse(f), parse(t), bool(cur)) for i, c, n, f, t, cur in got]

        yield (
            f"name: ws\ntarget: lite\nconnections:\n  lite: {{url: 'sqlite:{db}', writable: true}}\n",
            rows_sqlite,
        )
    elif kind == "mariadb":
        with mysql_database() as url:

            def rows_my() -> list[tuple[Any, ...]]:
                con = pymysql.connect(
                    host="127.0.0.1", port=3306, user="root", database=url.rsplit("/", 1)[1]
                )
                try:
                    with con.cursor() as cur:
                        cur.execute(
                            "SELECT id, city, note, valid_from, valid_to, is_current FROM customers_history"
                        )
                        got = cur.fetchall()
                finally:
                    con.close()
                return [(i, c, n, f, t, bool(cur)) for i, c, n, f, t, cur in got]

            yield f"name: ws\ntarget: my\nconnections:\n  my: {{url: '{url}', writable: true}}\n", rows_my
    else:
        with postgres_database() as url:

            def rows_pg() -> list[tuple[Any, ...]]:
                with psycopg.connect(url) as con:
                    return con.execute(
                        "SELECT id, city, note, valid_from, valid_to, is_current FROM customers_history"
                    ).fetchall()

            yield f"name: ws\ntarget: pg\nconnections:\n  pg: {{url: '{url}', writable: true}}\n", rows_pg


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "sqlite", "mariadb"])
def test_three_versions_give_the_hand_computed_history(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    (root / "pipelines" / "customers_history.yaml").write_text(PIPELINE)
    with target(kind, root) as (config, rows):
        (root / "queryforge.yaml").write_text(config)
        windows: list[tuple[datetime, datetime]] = []
        diffs = []
        for version in VERSIONS:
            (root / "data" / "customers.csv").write_text(version)
            start = datetime.utcnow()
            with Workspace(root) as ws:
                outcome = ws.run("customers_history")
            windows.append((start, datetime.utcnow()))
            assert outcome.error is None, outcome.error
            diffs.append({k: outcome.staged[0].diff.get(k) for k in ("added", "changed", "removed")})
        got = rows()

    def run_of(moment: datetime | None) -> int | None:
        if moment is None:
            return None
        found = [i + 1 for i, (a, b) in enumerate(windows) if a <= moment.replace(tzinfo=None) <= b]
        assert len(found) == 1, f"{moment} is in no run's publish window {windows}"
        return found[0]

    history = {(i, city, run_of(start), run_of(end), current) for i, city, _, start, end, current in got}
    assert history == HISTORY
    assert len(got) == len(HISTORY)
    # The note change of customer 4 made no version: its one row is the first, with the first note.
    assert [(n, cur) for i, _, n, _, _, cur in got if i == 4] == [("d", True)]
    # The preview diff of each run, against the current versions.
    assert diffs[1] == {"added": 1, "changed": 1, "removed": 1}
    assert diffs[2] == {"added": 1, "changed": 1, "removed": 0}


def test_a_snapshot_needs_keys_a_sql_target_and_free_history_names(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    (root / "data" / "c.csv").write_text("id,valid_to\n1,x\n")
    cases = {
        "load: {input: src, table: h, mode: snapshot}": "names no keys",
        "load: {input: src, table: h, mode: snapshot, keys: [id]}": "already has a column named valid_to",
        "load: {input: src, path: out/h.parquet, mode: snapshot, keys: [id]}": "supports mode 'replace' only",
        "load: {input: src, table: h, mode: merge, keys: [id], check_columns: [id]}": "only mode 'snapshot'",
    }
    with Workspace(root) as ws:
        for load, message in cases.items():
            (root / "pipelines" / "p.yaml").write_text(
                f"name: p\nsteps:\n  - id: src\n    extract: {{path: data/c.csv}}\n  - id: out\n    {load}\n"
            )
            with pytest.raises(SpecError, match=message):
                ws.validate("p")
