"""The production fingerprint `commit` compares: equal exactly when the table holds the same rows.

The property, for every connector: two tables with the same columns get the same fingerprint if and
only if they hold the same multiset of rows. Hypothesis generates tables with duplicated rows and
derives a second table from each by one mutation: (a) both duplicates changed alike (XOR of row
hashes cancelled that pair: defect 6 of issue 10), (b) values swapped between two rows, (c) values
swapped between two columns of one row, (d) rows reordered, (e) NULL turned into the string 'NULL'.
The oracle is Python's `Counter` of the rows, never the fingerprint code.

`Backend` is shared with tests/integration/test_fingerprint_databases.py (PostgreSQL, MariaDB).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from queryforge.connectors.base import ConnectionConfig, TargetRef, connector_for
from queryforge.connectors.sql import SqlConnector
from queryforge.errors import ProductionChanged
from queryforge.workspace import Workspace

Row = tuple[int, str | None, str | None]  # id, b, c
COLUMNS = ("id", "b", "c")
TARGET = TargetRef("db", "t")

# Values that break naive row encodings: separators, the NULL spelling, a length-like prefix.
texts = (
    st.none() | st.sampled_from(["NULL", "", "N", "1:a", ",", "a,b", ":", "a"]) | st.text("aN:,1", max_size=4)
)
rows = st.tuples(st.integers(0, 3), texts, texts)

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---------------------------------------------------------------- mutations: (name, new rows)


def dup_mutated_alike(table: list[Row], draw: st.DrawFn) -> list[Row]:
    """(a) Both copies of a duplicated row get the same new values (an UPDATE ... WHERE of both)."""
    counts = Counter(table)
    dup = draw(st.sampled_from(sorted((r for r, n in counts.items() if n > 1), key=repr)))
    new = draw(rows.filter(lambda r: r != dup))
    return [new if r == dup else r for r in table]


def values_swapped_between_rows(table: list[Row], draw: st.DrawFn) -> list[Row]:
    """(b) One column's values of two rows trade places."""
    i, j = draw(st.lists(st.integers(0, len(table) - 1), min_size=2, max_size=2, unique=True))
    col = draw(st.integers(0, 2))
    out: list[list[Any]] = [list(r) for r in table]
    out[i][col], out[j][col] = out[j][col], out[i][col]
    return [(r[0], r[1], r[2]) for r in out]


def columns_swapped_in_a_row(table: list[Row], draw: st.DrawFn) -> list[Row]:
    """(c) The values of columns b and c of one row trade places."""
    i = draw(st.integers(0, len(table) - 1))
    return [(r[0], r[2], r[1]) if k == i else r for k, r in enumerate(table)]


def reordered(table: list[Row], draw: st.DrawFn) -> list[Row]:
    """(d) The same rows in another order: must NOT change the fingerprint."""
    return draw(st.permutations(table))


def null_became_text(table: list[Row], draw: st.DrawFn) -> list[Row]:
    """(e) A NULL becomes the string 'NULL' (or the other way round)."""
    i = draw(st.integers(0, len(table) - 1))
    col = draw(st.integers(1, 2))
    out: list[list[Any]] = [list(r) for r in table]
    out[i][col] = "NULL" if out[i][col] is None else None
    return [(r[0], r[1], r[2]) for r in out]


MUTATIONS: dict[str, Callable[[list[Row], st.DrawFn], list[Row]]] = {
    "a_duplicates_mutated_alike": dup_mutated_alike,
    "b_values_swapped_between_rows": values_swapped_between_rows,
    "c_columns_swapped_in_a_row": columns_swapped_in_a_row,
    "d_reordered": reordered,
    "e_null_vs_text_null": null_became_text,
}


@st.composite
def table_pairs(draw: st.DrawFn, mutation: str) -> tuple[list[Row], list[Row]]:
    """A table holding at least one duplicated row, and the table one mutation makes of it."""
    base = draw(st.lists(rows, min_size=1, max_size=6))
    dup = draw(st.sampled_from(base))
    table = draw(st.permutations([*base, dup]))
    return table, MUTATIONS[mutation](table, draw)


# ---------------------------------------------------------------- backends


class Backend:
    """A database a table of `Row`s can be written to, and the connector whose fingerprint we test."""

    dialect: str
    text_type = "VARCHAR(20)"

    def __init__(self, connector: SqlConnector) -> None:
        self.connector = connector

    def execute(self, sql: str) -> None:
        self.connector.execute(sql)

    def fingerprint(self, table: list[Row]) -> str | None:
        """Write `table` as production table `t` (dropping the old one) and fingerprint it."""
        self.execute("DROP TABLE IF EXISTS t")
        self.execute(f"CREATE TABLE t (id INTEGER, b {self.text_type}, c {self.text_type})")
        if table:
            self.execute(exp.insert(exp.values(table), "t").sql(dialect=self.dialect))
        return self.connector.fingerprint(TARGET)


def check_property(backend: Backend, mutation: str, pair: tuple[list[Row], list[Row]]) -> None:
    before, after = pair
    same = Counter(before) == Counter(after)
    event("same rows" if same else "different rows")
    first, second = backend.fingerprint(before), backend.fingerprint(after)
    assert first is not None and second is not None
    if same:
        assert first == second, f"{mutation}: same rows, different fingerprints: {before} vs {after}"
    else:
        assert first != second, f"{mutation}: a change went unseen: {before} -> {after}"
    if mutation == "d_reordered":
        assert same


def duckdb_backend(root: Path) -> Backend:
    backend = Backend(_sql(connector_for(ConnectionConfig("db", f"duckdb:{root / 'fp.duckdb'}", True), root)))
    backend.dialect = "duckdb"
    return backend


def sqlite_backend(root: Path) -> Backend:
    backend = Backend(_sql(connector_for(ConnectionConfig("db", f"sqlite:{root / 'fp.sqlite'}", True), root)))
    backend.dialect = "sqlite"
    backend.text_type = "TEXT"
    backend.execute("PRAGMA synchronous = OFF")  # hundreds of tiny tables: no fsync per statement
    return backend


def _sql(connector: Any) -> SqlConnector:
    assert isinstance(connector, SqlConnector)
    return connector


@pytest.fixture(params=["duckdb", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = (duckdb_backend if request.param == "duckdb" else sqlite_backend)(tmp_path)
    yield made
    made.connector.close()


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@SETTINGS
@given(data=st.data())
def test_fingerprint_changes_exactly_when_the_rows_change(
    backend: Backend, mutation: str, data: st.DataObject
) -> None:
    check_property(backend, mutation, data.draw(table_pairs(mutation)))


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param([(1, "x", "y"), (1, "x", "y")], [(1, "z", "y"), (1, "z", "y")], id="duplicates"),
        pytest.param([(1, None, "a")], [(1, "NULL", "a")], id="null-vs-text"),
        pytest.param([(1, "x", "y")], [(1, "y", "x")], id="column-swap"),
        pytest.param([(1, "a,b", "c")], [(1, "a", "b,c")], id="separator-inside-value"),
        pytest.param([(1, "x", "y"), (2, "u", "v")], [(1, "u", "y"), (2, "x", "v")], id="row-swap"),
    ],
)
def test_known_blind_spots_of_the_old_fingerprint_are_seen(
    backend: Backend, before: list[Row], after: list[Row]
) -> None:
    assert backend.fingerprint(before) != backend.fingerprint(after)


def test_fingerprint_names_columns_and_types_and_is_none_without_a_table(backend: Backend) -> None:
    assert backend.connector.fingerprint(TargetRef("db", "missing")) is None
    first = backend.fingerprint([(1, "a", "b")])
    backend.execute("DROP TABLE t")
    backend.execute(f"CREATE TABLE t (id INTEGER, b {backend.text_type}, renamed {backend.text_type})")
    backend.execute("INSERT INTO t VALUES (1, 'a', 'b')")
    assert backend.connector.fingerprint(TARGET) != first
    assert '"renamed"' in str(backend.connector.fingerprint(TARGET))


def test_empty_table_has_a_stable_fingerprint(backend: Backend) -> None:
    assert backend.fingerprint([]) == backend.fingerprint([])
    assert backend.fingerprint([]) != backend.fingerprint([(0, None, None)])


# ---------------------------------------------------------------- files


def test_file_fingerprint_follows_the_bytes_not_the_modification_time(tmp_path: Path) -> None:
    import os

    connector = connector_for(ConnectionConfig("files", "file:.", True), tmp_path)
    target = TargetRef("files", "out.csv")
    path = tmp_path / "out.csv"
    assert connector.fingerprint(target) is None
    path.write_text("id,v\n1,aaaa\n")
    stat = path.stat()
    first = connector.fingerprint(target)
    with path.open("r+") as fh:  # same size, same inode, mtime restored: only the bytes differ
        fh.write("id,v\n1,bbbb\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert connector.fingerprint(target) != first
    second = connector.fingerprint(target)
    os.utime(path)  # a touch changes nothing anyone would audit
    assert connector.fingerprint(target) == second


# ---------------------------------------------------------------- end to end: commit refuses


def test_commit_refuses_after_duplicated_rows_were_updated_alike(
    make_workspace: Callable[..., Workspace],
) -> None:
    """Defect 6: an UPDATE of two identical production rows between sandbox and commit went unseen."""
    ws = make_workspace(bare=True)
    warehouse = ws.root / ".queryforge" / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE sales (id INTEGER, region VARCHAR, amount INTEGER)")
        con.execute("INSERT INTO sales VALUES (1, 'eu', 10), (1, 'eu', 10), (2, 'us', 5)")
    (ws.root / "data" / "new.csv").write_text("id,region,amount\n3,eu,7\n")
    pipeline = ws.root / "pipelines" / "more_sales.yaml"
    pipeline.write_text(
        "name: more_sales\nsteps:\n"
        "  - id: new\n    extract: {path: data/new.csv}\n"
        "  - id: publish\n    load: {input: new, table: sales, mode: append}\n"
    )
    sandbox = ws.run(str(pipeline), sandbox=True)
    assert sandbox.status == "audited", sandbox.error
    ws.close()
    with duckdb.connect(str(warehouse)) as con:  # behind the run's back: both duplicates alike
        con.execute("UPDATE sales SET amount = 99 WHERE id = 1")

    with Workspace(ws.root) as again, pytest.raises(ProductionChanged):
        again.commit(sandbox.run_id)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert sorted(con.execute("SELECT * FROM sales").fetchall()) == [
            (1, "eu", 99),
            (1, "eu", 99),
            (2, "us", 5),
        ]
