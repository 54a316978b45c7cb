"""The production fingerprint on PostgreSQL and MariaDB: the same properties as the DuckDB and SQLite
unit tests (tests/unit/test_fingerprint.py), computed in the database, plus `commit` refusing after
duplicated rows were updated alike behind a sandbox run's back (defect 6 of issue 10).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queryforge.connectors.base import ConnectionConfig, connector_for
from queryforge.connectors.sql import SqlConnector
from queryforge.errors import ProductionChanged
from tests.integration.db_cases import Database, MariaDB, Postgres, copy_pipeline, open_workspace
from tests.services import mysql_database, postgres_database
from tests.unit.test_fingerprint import MUTATIONS, SETTINGS, Backend, Row, check_property, table_pairs

pytestmark = pytest.mark.postgres


class ServerBackend(Backend):
    """Tables written with the plain driver (autocommit); the fingerprint from QueryForge's connector."""

    def __init__(self, connector: SqlConnector, db: Database, dialect: str) -> None:
        super().__init__(connector)
        self.db = db
        self.dialect = dialect

    def execute(self, sql: str) -> None:
        self.db.execute(sql)


@pytest.fixture(params=["postgres", "mariadb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    database = postgres_database if request.param == "postgres" else mysql_database
    with database() as url:
        db: Database = Postgres(url) if request.param == "postgres" else MariaDB(url)
        made = connector_for(ConnectionConfig("db", url, writable=True), tmp_path)
        assert isinstance(made, SqlConnector)
        try:
            yield ServerBackend(made, db, request.param if request.param == "postgres" else "mysql")
        finally:
            made.close()
            db.close()


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
        pytest.param([(1, None, "a")], [(1, "", "a")], id="null-vs-empty"),
        pytest.param([(1, "x", "y")], [(1, "y", "x")], id="column-swap"),
        pytest.param([(1, "a,b", "c")], [(1, "a", "b,c")], id="separator-inside-value"),
    ],
)
def test_known_blind_spots_of_the_old_fingerprint_are_seen(
    backend: Backend, before: list[Row], after: list[Row]
) -> None:
    assert backend.fingerprint(before) != backend.fingerprint(after)


def test_commit_refuses_after_duplicated_rows_were_updated_alike_on_postgres(tmp_path: Path) -> None:
    with postgres_database() as url:
        pg = Postgres(url)
        try:
            pg.execute(
                "CREATE TABLE sales (id integer, region text, amount integer)",
                "INSERT INTO sales VALUES (1, 'eu', 10), (1, 'eu', 10), (2, 'us', 5)",
                "CREATE TABLE incoming (id integer, region text, amount integer)",
                "INSERT INTO incoming VALUES (3, 'eu', 7)",
            )
            ws = open_workspace(tmp_path / "ws", {"pg": {"url": url, "writable": True}})
            try:
                path = copy_pipeline(ws, "more_sales", ("pg", "incoming"), ("pg", "sales"), mode="append")
                sandbox = ws.run(path, sandbox=True)
                assert sandbox.status == "audited", sandbox.error
                pg.execute("UPDATE sales SET amount = 99 WHERE id = 1")  # both duplicates alike

                with pytest.raises(ProductionChanged):
                    ws.commit(sandbox.run_id)
                assert sorted(pg.rows("SELECT * FROM sales")) == [(1, "eu", 99), (1, "eu", 99), (2, "us", 5)]
            finally:
                ws.close()
        finally:
            pg.close()
