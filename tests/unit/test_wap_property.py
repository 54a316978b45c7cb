"""Write-audit-publish as a property: a failed error check never touches production, a passing one
publishes exactly the expected rows; a sandbox run never touches production and `commit` publishes
exactly what was audited.

Random small tables (ints, strings, NULLs) are written as Parquet (exact types), a production table
with known rows is set up directly in the warehouse, and the expected result is computed in Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from queryforge.errors import ChecksFailed, ProductionChanged, UserError
from queryforge.workspace import Workspace

Row = tuple[int, int, str | None, int | None]  # id, score, label, extra
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("score", pa.int64(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("extra", pa.int64()),
    ]
)
DDL = "CREATE OR REPLACE TABLE prod (id BIGINT, score BIGINT, label VARCHAR, extra BIGINT)"
MODES = ("replace", "append", "merge")

labels = st.none() | st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=6
)
row = st.tuples(
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=-50, max_value=50),
    labels,
    st.none() | st.integers(min_value=-(2**40), max_value=2**40),
)
SETTINGS = settings(
    max_examples=9,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Staging tables of runs (the publish ledger `_qf_published` lives beside them and stays).
STAGING_QUERY = (
    "SELECT table_name FROM duckdb_tables() "
    "WHERE schema_name = '_qf_staging' AND table_name <> '_qf_published'"
)


@st.composite
def scenarios(draw: st.DrawFn, mode: str) -> tuple[list[Row], list[Row], bool, int]:
    """(old production rows, new rows, whether the error check should fail, its threshold)."""
    fail = draw(st.booleans())
    old = draw(st.lists(row, max_size=8))
    unique = mode == "merge"  # merge needs unique keys in what it loads
    new = draw(
        st.lists(row, min_size=1 if fail else 0, max_size=8, unique_by=(lambda r: r[0]) if unique else None)
    )
    scores = [r[1] for r in new]
    # range: {column: score, min: threshold} fails exactly when some score < threshold
    if fail:
        threshold = min(scores) + draw(st.integers(1, 5)) if draw(st.booleans()) else max(scores) + 1
    else:
        threshold = min(scores, default=0) - draw(st.integers(0, 5))
    return old, new, fail, threshold


# ---------------------------------------------------------------- helpers


def warehouse(ws: Workspace) -> Path:
    return ws.root / ".queryforge" / "warehouse.duckdb"


def set_production(ws: Workspace, rows: list[Row]) -> None:
    with duckdb.connect(str(warehouse(ws))) as con:
        con.execute(DDL)
        if rows:
            con.executemany("INSERT INTO prod VALUES (?, ?, ?, ?)", rows)


def production(ws: Workspace) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """Schema and full contents of the production table, sorted (a multiset snapshot)."""
    with duckdb.connect(str(warehouse(ws)), read_only=True) as con:
        schema = [(r[0], r[1]) for r in con.execute("DESCRIBE prod").fetchall()]
        rows = con.execute("SELECT * FROM prod").fetchall()
    return schema, sorted(rows, key=repr)


def write_input(ws: Workspace, rows: list[Row]) -> None:
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    table = pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    )
    pq.write_table(table, ws.root / "data" / "new.parquet")


def write_pipeline(ws: Workspace, mode: str, threshold: int) -> str:
    load: dict[str, Any] = {"input": "new", "table": "prod", "mode": mode}
    if mode == "merge":
        load["keys"] = ["id"]
    doc = {
        "name": "wap",
        "steps": [
            {"id": "new", "extract": {"path": "data/new.parquet"}},
            {
                "id": "guard",
                "check": {"input": "new", "rules": [{"range": {"column": "score", "min": threshold}}]},
            },
            {"id": "publish", "load": load},
        ],
    }
    path = ws.root / "pipelines" / "wap.yaml"
    path.write_text(json.dumps(doc))
    return str(path)


def expected_after(mode: str, old: list[Row], new: list[Row]) -> list[tuple[Any, ...]]:
    """The independent result of publishing `new` into a table holding `old`."""
    if mode == "replace":
        result = list(new)
    elif mode == "append":
        result = old + new
    else:
        keys = {r[0] for r in new}
        result = [r for r in old if r[0] not in keys] + new
    return sorted(result, key=repr)


SCHEMA_ROWS = [("id", "BIGINT"), ("score", "BIGINT"), ("label", "VARCHAR"), ("extra", "BIGINT")]


# ---------------------------------------------------------------- properties


@pytest.fixture
def ws(make_workspace: Callable[..., Workspace]) -> Workspace:
    return make_workspace(bare=True)


@pytest.mark.parametrize("mode", MODES)
@SETTINGS
@given(data=st.data())
def test_publish_is_all_or_nothing(ws: Workspace, mode: str, data: st.DataObject) -> None:
    old, new, fail, threshold = data.draw(scenarios(mode))
    assert fail == any(score < threshold for _, score, _, _ in new)  # the generator's own promise
    event(f"check {'fails' if fail else 'passes'}")
    set_production(ws, old)
    before = production(ws)
    write_input(ws, new)

    outcome = ws.run(write_pipeline(ws, mode, threshold))

    after = production(ws)
    if fail:
        assert outcome.status == "failed"
        assert isinstance(outcome.error, ChecksFailed)
        assert outcome.published == []
        assert after == before  # byte-for-byte the same rows and schema
    else:
        assert outcome.error is None, outcome.error
        assert outcome.status == "succeeded"
        assert after == (SCHEMA_ROWS, expected_after(mode, old, new))


@pytest.mark.parametrize("mode", MODES)
@SETTINGS
@given(data=st.data(), replacement=st.lists(row, max_size=4))
def test_sandbox_never_touches_production_and_commit_publishes_the_audited_rows(
    ws: Workspace, mode: str, data: st.DataObject, replacement: list[Row]
) -> None:
    old, new, fail, threshold = data.draw(scenarios(mode))
    event(f"check {'fails' if fail else 'passes'}")
    set_production(ws, old)
    before = production(ws)
    write_input(ws, new)

    outcome = ws.run(write_pipeline(ws, mode, threshold), sandbox=True)

    assert production(ws) == before
    if fail:
        assert outcome.status == "failed"
        assert isinstance(outcome.error, ChecksFailed)
        with pytest.raises(UserError):
            ws.commit(outcome.run_id)
        assert production(ws) == before
        return
    assert outcome.status == "audited", outcome.error
    assert [s.rows for s in outcome.staged] == [len(new)]
    # the input changes after the audit: commit must publish what was audited, not re-run
    write_input(ws, [(r[0], r[1] - 1000, r[2], r[3]) for r in replacement])
    committed = ws.commit(outcome.run_id)
    assert committed.status == "succeeded"
    assert production(ws) == (SCHEMA_ROWS, expected_after(mode, old, new))
    assert ws.get_run(outcome.run_id).status == "succeeded"
    with pytest.raises(UserError):  # a run is committed once
        ws.commit(outcome.run_id)


# ---------------------------------------------------------------- examples


def test_commit_refuses_when_production_changed_since_the_audit(ws: Workspace) -> None:
    set_production(ws, [(1, 1, "old", None)])
    write_input(ws, [(2, 5, "new", 7)])
    outcome = ws.run(write_pipeline(ws, "append", 0), sandbox=True)
    assert outcome.status == "audited"
    set_production(ws, [(1, 1, "changed by someone else", None)])
    changed = production(ws)
    with pytest.raises(ProductionChanged):
        ws.commit(outcome.run_id)
    assert production(ws) == changed
    assert ws.get_run(outcome.run_id).status == "audited"  # the refused commit changed nothing


def test_sandbox_into_a_new_table_creates_nothing_until_commit(ws: Workspace) -> None:
    write_input(ws, [(1, 5, "a", None), (2, 6, None, 3)])
    outcome = ws.run(write_pipeline(ws, "replace", 0), sandbox=True)
    assert outcome.status == "audited"
    with duckdb.connect(str(warehouse(ws)), read_only=True) as con:
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    assert ("main", "prod") not in tables
    ws.commit(outcome.run_id)
    assert production(ws) == (
        SCHEMA_ROWS,
        expected_after("replace", [], [(1, 5, "a", None), (2, 6, None, 3)]),
    )
    with duckdb.connect(str(warehouse(ws)), read_only=True) as con:
        staging = con.execute(STAGING_QUERY).fetchall()
    assert staging == []  # the audited staging table is gone once published


def test_all_loads_of_one_connection_publish_together_or_not_at_all(ws: Workspace) -> None:
    """The second load fails while publishing (it would add a column): the first must roll back too."""
    set_production(ws, [(1, 1, "old", None)])
    with duckdb.connect(str(warehouse(ws))) as con:
        con.execute("CREATE TABLE narrow (id BIGINT, score BIGINT)")
        con.execute("INSERT INTO narrow VALUES (7, 7)")
    before = production(ws)
    write_input(ws, [(2, 5, "new", 9)])
    doc = {
        "name": "two_loads",
        "steps": [
            {"id": "new", "extract": {"path": "data/new.parquet"}},
            {"id": "first", "load": {"input": "new", "table": "prod", "mode": "replace"}},
            {"id": "second", "load": {"input": "new", "table": "narrow", "mode": "append"}},
        ],
    }
    (ws.root / "pipelines" / "two_loads.yaml").write_text(json.dumps(doc))
    outcome = ws.run("two_loads")
    assert outcome.status == "failed"
    assert outcome.error is not None and "extra" in outcome.error.message
    assert production(ws) == before
    with duckdb.connect(str(warehouse(ws)), read_only=True) as con:
        assert con.execute("SELECT * FROM narrow").fetchall() == [(7, 7)]
        staging = con.execute(STAGING_QUERY)
        assert staging.fetchall() == []
