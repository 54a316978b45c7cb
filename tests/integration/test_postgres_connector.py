"""A `postgresql:` connection end to end, against the real server on 127.0.0.1:5432.

Every test gets its own fresh database and runs YAML pipelines through `Workspace.run`; what the run
did is read back with plain psycopg, and expected results are computed by the test itself in SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queryforge.connectors.base import ColumnInfo, ReadRequest
from queryforge.connectors.sql import SqlConnector
from queryforge.errors import (
    PermissionDenied,
    ProductionChanged,
    QueryForgeError,
    QueryTimeout,
    SpecError,
    StepFailed,
    TransientError,
    UserError,
)
from queryforge.workspace import Workspace
from tests.integration.db_cases import (
    MARIADB_TYPE_COLUMNS,
    PG_TYPE_COLUMNS,
    MariaDB,
    Postgres,
    connector,
    copy_pipeline,
    expected_by_sql,
    extract,
    load,
    multiset,
    open_workspace,
    plain_rows,
    seed_load_modes,
    seed_odd_names,
    seed_types,
    staging_tables,
    step,
    write_pipeline,
)
from tests.services import mysql_database, postgres_database

pytestmark = pytest.mark.postgres

STAGING = "_qf_staging"
AS_TEXT = ("doc", "docb", "uid")  # json, jsonb and uuid arrive as text when QueryForge creates the table


@pytest.fixture
def pg() -> Iterator[Postgres]:
    with postgres_database() as url:
        db = Postgres(url)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture
def ws(tmp_path: Path, pg: Postgres) -> Iterator[Workspace]:
    workspace = open_workspace(
        tmp_path / "ws",
        {
            "pg": {"url": pg.url, "writable": True},
            "pg_ro": {"url": pg.url},  # the same database, not writable
            "slow": {"url": pg.url, "statement_timeout_ms": 300},
        },
    )
    yield workspace
    workspace.close()


def staging_schema_exists(pg: Postgres, name: str = STAGING) -> bool:
    return bool(pg.value("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [name]))


def select_types(table: str, text: tuple[str, ...] = AS_TEXT, columns: list[str] = PG_TYPE_COLUMNS) -> str:
    cols = ", ".join(f"{c}::text" if c in text else c for c in columns)
    return f"SELECT {cols} FROM {table} ORDER BY id"


def column_types(pg: Postgres, table: str) -> dict[str, str]:
    return dict(
        pg.rows(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [table],
        )
    )


# ---------------------------------------------------------------- every type, round trip


def test_every_type_round_trips_into_a_new_table(ws: Workspace, pg: Postgres) -> None:
    seed_types(pg)
    outcome = ws.run(copy_pipeline(ws, "copy_types", ("pg", "types"), ("pg", "copy")))
    assert outcome.status == "succeeded", outcome.error
    assert pg.rows(select_types("copy")) == pg.rows(select_types("types"))
    types = column_types(pg, "copy")
    assert {c: types[c] for c in PG_TYPE_COLUMNS if c not in AS_TEXT} == {
        "id": "integer",
        "i16": "smallint",
        "i32": "integer",
        "i64": "bigint",
        "f64": "double precision",
        "flag": "boolean",
        "amount": "numeric(12,2)",
        "note": "text",
        "day": "date",
        "at": "timestamp without time zone",
        "at_tz": "timestamp with time zone",
        "clock": "time without time zone",
        "blob": "bytea",
    }
    assert staging_tables(ws, "pg") == []

    # A second hop reads what the first one wrote: decimals stay exact decimals, not doubles.
    again = ws.run(copy_pipeline(ws, "copy_again", ("pg", "copy"), ("pg", "copy2")))
    assert again.status == "succeeded", again.error
    assert pg.rows(select_types("copy2")) == pg.rows(select_types("types"))
    assert column_types(pg, "copy2") == types


def test_every_type_round_trips_into_an_existing_table_of_the_same_types(ws: Workspace, pg: Postgres) -> None:
    """Append, merge and replace into a table that has json, jsonb, uuid, numeric(12,2)... columns."""
    seed_types(pg)
    pg.execute("CREATE TABLE copy (LIKE types INCLUDING ALL)")
    outcome = ws.run(copy_pipeline(ws, "append_types", ("pg", "types"), ("pg", "copy"), mode="append"))
    assert outcome.status == "succeeded", outcome.error
    # Exactly the source's values, as psycopg reads them from the very same column types.
    assert pg.rows("SELECT * FROM copy ORDER BY id") == pg.rows("SELECT * FROM types ORDER BY id")
    assert pg.rows(select_types("copy")) == pg.rows(select_types("types"))
    assert column_types(pg, "copy") == column_types(pg, "types")

    # The same rows again: the diff of every type sees nothing new or changed.
    merge = ws.run(copy_pipeline(ws, "merge_types", ("pg", "types"), ("pg", "copy"), "merge", keys=["id"]))
    assert merge.status == "succeeded", merge.error
    assert merge.staged[0].diff == {"added": 0, "removed": 0, "changed": 0}
    assert pg.rows("SELECT * FROM copy ORDER BY id") == pg.rows("SELECT * FROM types ORDER BY id")

    replace = ws.run(copy_pipeline(ws, "replace_types", ("pg", "types"), ("pg", "copy")))
    assert replace.status == "succeeded", replace.error
    assert replace.staged[0].diff == {"added": 0, "removed": 0, "changed": 0}
    assert pg.rows(select_types("copy")) == pg.rows(select_types("types"))
    assert staging_tables(ws, "pg") == []


def test_a_mariadb_table_round_trips_into_postgres(tmp_path: Path, pg: Postgres) -> None:
    with mysql_database() as my_url:
        my = MariaDB(my_url)
        try:
            seed_types(my)
            source = plain_rows(my.rows(f"SELECT {', '.join(MARIADB_TYPE_COLUMNS)} FROM types ORDER BY id"))
            pg.execute(
                "CREATE TABLE existing (id integer PRIMARY KEY, i16 smallint, i32 integer, i64 bigint, "
                "f64 double precision, flag boolean, amount numeric(12,2), note text, day date, "
                "at timestamp(6), clock time, u64 numeric(20,0))"
            )
            with open_workspace(
                tmp_path / "ws",
                {"pg": {"url": pg.url, "writable": True}, "my": {"url": my_url}},
            ) as ws:
                for table, mode in [("fresh", "replace"), ("existing", "append")]:
                    path = copy_pipeline(ws, f"to_{table}", ("my", "types"), ("pg", table), mode=mode)
                    outcome = ws.run(path)
                    assert outcome.status == "succeeded", outcome.error
                    cols = ", ".join(MARIADB_TYPE_COLUMNS)
                    assert plain_rows(pg.rows(f"SELECT {cols} FROM {table} ORDER BY id")) == source, table
                # BIGINT UNSIGNED does not fit a bigint: a wider exact type, never a wrapped value.
                assert column_types(pg, "fresh")["u64"] == "numeric(20,0)"
                assert staging_tables(ws, "pg") == []
        finally:
            my.close()


# ---------------------------------------------------------------- load modes into an existing table

MODES = [
    pytest.param("append", [], False, id="append"),
    pytest.param("replace", [], True, id="replace"),
    pytest.param("merge", ["id"], True, id="merge-upsert-on-primary-key"),
    pytest.param("merge", ["id"], False, id="merge-delete-insert-without-key"),
    pytest.param("merge", ["id", "region"], False, id="merge-delete-insert-two-keys"),
    pytest.param("merge", ["id", "region"], True, id="merge-keys-differ-from-primary-key"),
]


@pytest.mark.parametrize(("mode", "keys", "primary_key"), MODES)
def test_load_modes_match_an_independent_sql_computation(
    ws: Workspace,
    pg: Postgres,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    keys: list[str],
    primary_key: bool,
) -> None:
    seed_load_modes(pg, primary_key)
    want_rows, want_diff = expected_by_sql(pg, mode, keys)
    fallback: list[str] = []
    original = SqlConnector.merge_into

    def spy(self: SqlConnector, *args: Any) -> None:
        fallback.append(self.name)
        original(self, *args)

    monkeypatch.setattr(SqlConnector, "merge_into", spy)
    options = {"keys": keys} if keys else {}
    outcome = ws.run(copy_pipeline(ws, f"load_{mode}", ("pg", "incoming"), ("pg", "target"), mode, **options))
    assert outcome.status == "succeeded", outcome.error
    assert multiset(pg.rows("SELECT id, region, name, score FROM target")) == multiset(want_rows)
    assert outcome.staged[0].diff == want_diff
    if mode == "merge":
        # ON CONFLICT when a unique index covers exactly the keys; delete + insert otherwise.
        assert fallback == ([] if primary_key and keys == ["id"] else ["pg"])
    assert staging_tables(ws, "pg") == []
    assert pg.tables() == ["incoming", "target"]


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
def test_load_creates_a_missing_table(ws: Workspace, pg: Postgres, mode: str) -> None:
    seed_load_modes(pg, primary_key=False)
    options = {"keys": ["id"]} if mode == "merge" else {}
    outcome = ws.run(copy_pipeline(ws, "fresh", ("pg", "incoming"), ("pg", "sales.fresh"), mode, **options))
    assert outcome.status == "succeeded", outcome.error
    assert multiset(pg.rows("SELECT * FROM sales.fresh")) == multiset(pg.rows("SELECT * FROM incoming"))
    assert outcome.staged[0].diff == {"added": 4, "removed": 0, "changed": 0}


def test_quoted_names_empty_input_and_long_step_ids(tmp_path: Path, pg: Postgres) -> None:
    steps = seed_odd_names(pg)
    with open_workspace(tmp_path / "ws", {"db": {"url": pg.url, "writable": True}}) as ws:
        outcome = ws.run(write_pipeline(ws, "odd", steps))
        assert outcome.status == "succeeded", outcome.error
        names = {s.step_id: s.staging_name for s in outcome.staged}
        assert len(set(names.values())) == len(names)  # every load staged apart
        assert {s.step_id: s.diff for s in outcome.staged}["merged"] == {
            "added": 1,
            "removed": 0,
            "changed": 1,
        }
        assert staging_tables(ws, "db") == []
    assert pg.rows("SELECT * FROM tgt ORDER BY 1") == [(1, "a", 10), (2, "b", 20), (3, "kept", 30)]
    assert pg.rows("SELECT count(*) FROM from_empty") == [(0,)]
    assert multiset(pg.rows("SELECT * FROM long_a")) == multiset(pg.rows("SELECT * FROM src"))
    assert pg.rows("SELECT count(*) FROM long_b") == [(0,)]


def test_a_big_table_streams_in_several_batches(ws: Workspace, pg: Postgres) -> None:
    pg.execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5(g::text) AS t, g * 0.5 AS half "
        "FROM generate_series(1, 300000) g"
    )
    conn = connector(ws, "pg")
    try:
        batches = [b.num_rows for b in conn.read(ReadRequest(table="big"))]
    finally:
        conn.close()
    assert len(batches) > 1 and sum(batches) == 300_000
    outcome = ws.run(copy_pipeline(ws, "big", ("pg", "big"), ("pg", "copy")))
    assert outcome.status == "succeeded", outcome.error
    assert step(ws, outcome.run_id, "src").rows_out == 300_000
    both = "SELECT count(*) FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {}) d"
    assert pg.value(both.format("big", "copy")) == pg.value(both.format("copy", "big")) == 0
    assert pg.value("SELECT count(*) FROM copy") == 300_000


# ---------------------------------------------------------------- incremental extracts


def test_incremental_extract_reads_only_new_rows_and_advances_only_on_publish(
    ws: Workspace, pg: Postgres
) -> None:
    pg.execute(
        "CREATE TABLE events (id integer, at timestamp(6), what text)",
        "INSERT INTO events VALUES (1, '2024-01-01 10:00:00.000001', 'a'), "
        "(2, '2024-01-01 10:00:00.5', 'b'), (3, '2024-01-01 10:00:00.500001', 'c')",
    )
    path = write_pipeline(
        ws,
        "inc",
        [
            extract("src", "pg", "events", incremental={"cursor": "at"}),
            load("publish", "src", "pg", "copy", mode="append"),
        ],
    )

    def high_water() -> Any:
        return pg.value("SELECT max(at) FROM events")

    first = ws.run(path)
    assert first.status == "succeeded", first.error
    assert step(ws, first.run_id, "src").rows_out == 3
    assert ws.repo.get_watermark("inc", "src") == high_water() == dt.datetime(2024, 1, 1, 10, 0, 0, 500001)

    pg.execute("INSERT INTO events VALUES (4, '2024-01-01 10:00:00.500002', 'd'), (5, '2024-01-02', 'e')")
    mark = ws.repo.get_watermark("inc", "src")
    rehearsal = ws.run(path, sandbox=True)
    assert rehearsal.status == "audited", rehearsal.error
    assert step(ws, rehearsal.run_id, "src").rows_out == 2
    assert rehearsal.staged[0].diff == {"added": 2, "removed": 0, "changed": 0}
    assert ws.repo.get_watermark("inc", "src") == mark  # a sandbox run publishes nothing
    assert pg.value("SELECT count(*) FROM copy") == 3
    committed = ws.commit(rehearsal.run_id)
    assert committed.status == "succeeded"
    assert ws.repo.get_watermark("inc", "src") == high_water() == dt.datetime(2024, 1, 2)

    pg.execute("INSERT INTO events VALUES (6, '2024-01-02 00:00:00.000001', 'f')")
    third = ws.run(path)
    assert third.status == "succeeded", third.error
    assert step(ws, third.run_id, "src").rows_out == 1
    assert third.staged[0].diff == {"added": 1, "removed": 0, "changed": 0}
    assert ws.repo.get_watermark("inc", "src") == high_water()
    assert multiset(pg.rows("SELECT * FROM copy")) == multiset(pg.rows("SELECT * FROM events"))
    assert staging_tables(ws, "pg") == []


def test_a_failed_run_does_not_advance_the_watermark(
    ws: Workspace, pg: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.execute("CREATE TABLE events (id integer, what text)", "INSERT INTO events VALUES (1, 'a'), (2, 'b')")
    path = write_pipeline(
        ws,
        "inc",
        [
            extract("src", "pg", "events", incremental={"cursor": "id", "initial": 0}),
            load("publish", "src", "pg", "copy", mode="append"),
        ],
    )
    assert ws.run(path).status == "succeeded"
    pg.execute("INSERT INTO events VALUES (3, 'c')")
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    failed = ws.run(path)
    assert failed.status == "dead_lettered"  # a TRANSIENT failure, retries exhausted
    assert ws.repo.get_watermark("inc", "src") == 2
    assert pg.rows("SELECT id FROM copy ORDER BY id") == [(1,), (2,)]
    monkeypatch.delenv("QUERYFORGE_FAULTS")
    again = ws.run(path)
    assert again.status == "succeeded", again.error
    assert step(ws, again.run_id, "src").rows_out == 1
    assert pg.rows("SELECT id FROM copy ORDER BY id") == [(1,), (2,), (3,)]


def test_incremental_extract_on_a_timestamptz_cursor(ws: Workspace, pg: Postgres) -> None:
    """The mark is an instant: the database's own time zone (here +09:00) must not shift the filter."""
    pg.execute(
        f"ALTER DATABASE \"{pg.name}\" SET timezone = 'Asia/Tokyo'",
        "CREATE TABLE events (id integer, at timestamptz)",
        "INSERT INTO events VALUES (1, '2024-01-01 10:00:00+00'), (2, '2024-01-01 11:00:00.000001+00')",
    )
    path = write_pipeline(
        ws,
        "inc",
        [
            extract("src", "pg", "events", incremental={"cursor": "at"}),
            load("publish", "src", "pg", "copy", mode="append"),
        ],
    )
    first = ws.run(path)
    assert first.status == "succeeded", first.error
    assert ws.repo.get_watermark("inc", "src") == pg.value("SELECT max(at) FROM events")
    pg.execute(
        "INSERT INTO events VALUES (3, '2024-01-01 11:00:00.000002+00'), (4, '2024-01-01 20:00:00+09')"
    )
    second = ws.run(path)
    assert second.status == "succeeded", second.error
    assert step(ws, second.run_id, "src").rows_out == 1  # 20:00+09 is 11:00 UTC: older than the mark
    pg.execute("INSERT INTO events VALUES (5, '2024-01-01 21:00:00+09')")
    third = ws.run(path)
    assert third.status == "succeeded", third.error
    assert step(ws, third.run_id, "src").rows_out == 1
    assert ws.repo.get_watermark("inc", "src") == pg.value("SELECT max(at) FROM events")
    assert pg.rows("SELECT id FROM copy ORDER BY id") == [(1,), (2,), (3,), (5,)]


def test_an_aware_high_water_mark_is_compared_as_an_instant(ws: Workspace, pg: Postgres) -> None:
    """The filter pushed down for a timestamptz cursor must not depend on the session's time zone."""
    pg.execute(
        f"ALTER DATABASE \"{pg.name}\" SET timezone = 'Asia/Tokyo'",
        "CREATE TABLE events (id integer, at timestamptz)",
        "INSERT INTO events VALUES (1, '2024-01-01 10:00:00+00'), (2, '2024-01-01 11:00:00+00')",
    )
    conn = connector(ws, "pg")
    try:
        since = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 10:00 UTC
        data = conn.read(ReadRequest(table="events", cursor="at", since=since)).read_all()
    finally:
        conn.close()
    assert data.column("id").to_pylist() == [2]


@pytest.mark.parametrize(
    ("expression", "kind"), [("{'a': id, 'b': name}", "struct"), ("map([name], [id])", "map")]
)
def test_a_type_postgres_cannot_store_is_named(
    ws: Workspace, pg: Postgres, expression: str, kind: str
) -> None:
    seed_load_modes(pg, primary_key=True)
    path = write_pipeline(
        ws,
        "nested",
        [
            extract("src", "pg", "incoming"),
            {"id": "shaped", "derive": {"input": "src", "columns": {"nested": expression}}},
            load("publish", "shaped", "pg", "target", mode="append", on_schema_change="add_columns"),
        ],
    )
    before = pg.rows("SELECT * FROM target ORDER BY id")
    outcome = ws.run(path)
    assert outcome.status == "failed"
    assert isinstance(outcome.error, StepFailed), outcome.error
    text = outcome.error.render()
    assert "'nested'" in text and kind in text and "'pg'" in text and "publish" in text
    assert pg.rows("SELECT * FROM target ORDER BY id") == before
    assert staging_tables(ws, "pg") == []


def test_a_list_becomes_an_array(ws: Workspace, pg: Postgres) -> None:
    seed_load_modes(pg, primary_key=True)
    path = write_pipeline(
        ws,
        "lists",
        [
            extract("src", "pg", "incoming"),
            {"id": "shaped", "derive": {"input": "src", "columns": {"pair": "[id, id * 10]"}}},
            load("publish", "shaped", "pg", "pairs"),
        ],
    )
    outcome = ws.run(path)
    assert outcome.status == "succeeded", outcome.error
    assert column_types(pg, "pairs")["pair"] == "integer[]"
    assert pg.rows("SELECT id, pair FROM pairs ORDER BY id") == pg.rows(
        "SELECT id, ARRAY[id, id * 10] FROM incoming ORDER BY id"
    )


# ---------------------------------------------------------------- schema changes


def test_a_new_column_is_refused_by_default_and_production_is_untouched(ws: Workspace, pg: Postgres) -> None:
    pg.execute(
        "CREATE TABLE wide (id integer PRIMARY KEY, name text)",
        "INSERT INTO wide VALUES (1, 'a'), (2, 'b')",
        "CREATE TABLE wider (id integer, name text, extra numeric(8,3))",
        "INSERT INTO wider VALUES (3, 'c', 1.5)",
    )
    before = pg.rows("SELECT * FROM wide ORDER BY id")
    outcome = ws.run(copy_pipeline(ws, "grow", ("pg", "wider"), ("pg", "wide"), mode="append"))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, StepFailed)
    message = outcome.error.message
    assert "extra" in message and "pg.wide" in message and "'fail'" in message and "publish" in message
    assert outcome.error.hint is not None and "add_columns" in outcome.error.hint
    assert pg.rows("SELECT * FROM wide ORDER BY id") == before
    assert list(column_types(pg, "wide")) == ["id", "name"]
    assert staging_tables(ws, "pg") == []


@pytest.mark.parametrize("mode", ["append", "merge"])
def test_add_columns_widens_the_table(ws: Workspace, pg: Postgres, mode: str) -> None:
    pg.execute(
        "CREATE TABLE wide (id integer PRIMARY KEY, name text)",
        "INSERT INTO wide VALUES (1, 'a'), (2, 'b')",
        "CREATE TABLE wider (id integer, name text, extra numeric(8,3))",
        "INSERT INTO wider VALUES (2, 'B', 2.25), (3, 'c', 1.5)",
    )
    if mode == "append":
        pg.execute("DELETE FROM wider WHERE id = 2")  # the primary key forbids appending id 2 again
        want = pg.rows("SELECT id, name, NULL::numeric FROM wide UNION ALL SELECT * FROM wider")
    else:
        want = pg.rows(
            "SELECT id, name, NULL::numeric FROM wide w WHERE NOT EXISTS "
            "(SELECT 1 FROM wider n WHERE n.id = w.id) UNION ALL SELECT * FROM wider"
        )
    options: dict[str, Any] = {"on_schema_change": "add_columns"}
    if mode == "merge":
        options["keys"] = ["id"]
    outcome = ws.run(copy_pipeline(ws, "grow", ("pg", "wider"), ("pg", "wide"), mode, **options))
    assert outcome.status == "succeeded", outcome.error
    assert list(column_types(pg, "wide")) == ["id", "name", "extra"]
    assert multiset(pg.rows("SELECT id, name, extra FROM wide")) == multiset(want)
    assert pg.rows(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'wide'::regclass AND i.indisprimary"
    ) == [("id",)]
    assert staging_tables(ws, "pg") == []


@pytest.mark.parametrize(
    "dependent",
    [
        "CREATE VIEW customer_names AS SELECT name FROM customers",
        "CREATE TABLE orders (id integer, customer_id integer REFERENCES customers (id))",
    ],
    ids=["view", "foreign-key"],
)
def test_replacing_a_table_others_depend_on_fails_cleanly(
    ws: Workspace, pg: Postgres, dependent: str
) -> None:
    pg.execute(
        "CREATE TABLE customers (id integer PRIMARY KEY, name text)",
        "INSERT INTO customers VALUES (1, 'a'), (2, 'b')",
        dependent,
        "CREATE TABLE incoming (id integer, name text)",
        "INSERT INTO incoming VALUES (1, 'A'), (3, 'C')",
    )
    outcome = ws.run(copy_pipeline(ws, "swap", ("pg", "incoming"), ("pg", "customers")))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, UserError), outcome.error
    assert "Connection 'pg'" in outcome.error.message and "depend" in outcome.error.message
    assert pg.rows("SELECT * FROM customers ORDER BY id") == [(1, "a"), (2, "b")]
    assert staging_tables(ws, "pg") == []


# ---------------------------------------------------------------- read-only connection


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
def test_a_read_only_connection_refuses_loads_before_any_data_moves(
    ws: Workspace, pg: Postgres, mode: str
) -> None:
    seed_load_modes(pg, primary_key=True)
    before = pg.rows("SELECT * FROM target ORDER BY id")
    options = {"keys": ["id"]} if mode == "merge" else {}
    path = copy_pipeline(ws, "ro", ("pg", "incoming"), ("pg_ro", "target"), mode, **options)
    with pytest.raises(PermissionDenied) as info:
        ws.run(path)
    err = info.value
    assert "pg_ro" in err.message and "read-only" in err.message
    assert err.where is not None and "step 'publish'" in err.where
    assert err.hint is not None and "writable: true" in err.hint
    assert pg.rows("SELECT * FROM target ORDER BY id") == before
    assert not staging_schema_exists(pg)  # nothing was staged: the schema was not even created
    assert ws.list_runs() == []


def test_a_read_only_connection_can_be_read(ws: Workspace, pg: Postgres) -> None:
    seed_load_modes(pg, primary_key=True)
    outcome = ws.run(copy_pipeline(ws, "read", ("pg_ro", "incoming"), ("pg", "copy")))
    assert outcome.status == "succeeded", outcome.error
    assert multiset(pg.rows("SELECT * FROM copy")) == multiset(pg.rows("SELECT * FROM incoming"))


# ---------------------------------------------------------------- bad input and faults


def test_an_unknown_database_is_a_clear_error(tmp_path: Path, pg: Postgres) -> None:
    url = pg.url + "_missing"
    with open_workspace(
        tmp_path / "ws", {"gone": {"url": url}, "pg": {"url": pg.url, "writable": True}}
    ) as ws:
        with pytest.raises(UserError) as info:
            ws.run(copy_pipeline(ws, "x", ("gone", "t"), ("pg", "t")))
        assert type(info.value) is UserError
        assert "Connection 'gone'" in info.value.message and "does not exist" in info.value.message
        assert ws.list_runs() == []


def test_an_unknown_role_is_permission_denied(
    tmp_path: Path, pg: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QF_TEST_PG_PASSWORD", "pg-secret-7f3a9")
    url = pg.url.replace("postgres@", "no_such_role_qf@")
    conns = {"who": {"url": url, "password": "${env:QF_TEST_PG_PASSWORD}"}, "pg": {"url": pg.url}}
    with open_workspace(tmp_path / "ws", conns) as ws:
        with pytest.raises(PermissionDenied) as info:
            ws.run(copy_pipeline(ws, "x", ("who", "t"), ("warehouse", "t")))
        text = info.value.render()
        assert "Connection 'who'" in text and "no_such_role_qf" in text
        assert "pg-secret-7f3a9" not in text


def test_a_server_that_is_down_is_transient(tmp_path: Path, pg: Postgres) -> None:
    with open_workspace(tmp_path / "ws", {"down": {"url": "postgresql://postgres@127.0.0.1:1/x"}}) as ws:
        with pytest.raises(TransientError) as info:
            ws.run(copy_pipeline(ws, "x", ("down", "t"), ("warehouse", "t")))
        assert "Connection 'down'" in info.value.message and "refused" in info.value.message.lower()


def test_a_missing_table_suggests_the_nearest_one(ws: Workspace, pg: Postgres) -> None:
    seed_load_modes(pg, primary_key=True)
    with pytest.raises(UserError) as info:
        ws.validate(copy_pipeline(ws, "typo", ("pg", "incomng"), ("pg", "t")))
    assert "'incomng'" in info.value.message and "'pg'" in info.value.message
    assert info.value.hint == "did you mean 'incoming'?"
    assert info.value.where is not None and "step 'src'" in info.value.where


def test_duplicate_merge_keys_fail_and_leave_the_target_untouched(ws: Workspace, pg: Postgres) -> None:
    seed_load_modes(pg, primary_key=True)
    pg.execute("INSERT INTO incoming VALUES (4, 'eu', 'Dan again', 1.0), (5, 'eu', 'Eve again', 2.0)")
    before = pg.rows("SELECT * FROM target ORDER BY id")
    outcome = ws.run(copy_pipeline(ws, "dupes", ("pg", "incoming"), ("pg", "target"), "merge", keys=["id"]))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, StepFailed)
    assert "2 duplicate keys on (id)" in outcome.error.message and "'publish'" in outcome.error.message
    assert outcome.error.hint is not None and "dedupe" in outcome.error.hint
    assert pg.rows("SELECT * FROM target ORDER BY id") == before
    assert staging_tables(ws, "pg") == []


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1 AS a; DROP TABLE target",
        "DROP TABLE target",
        "DELETE FROM target RETURNING *",
    ],
)
def test_an_extract_query_must_be_one_select(ws: Workspace, pg: Postgres, query: str) -> None:
    seed_load_modes(pg, primary_key=True)
    path = write_pipeline(ws, "q", [extract("src", "pg", query=query), load("publish", "src", "pg", "copy")])
    with pytest.raises(SpecError) as info:
        ws.run(path)
    assert "Extract query is not allowed" in info.value.message
    assert info.value.where is not None and "step 'src'" in info.value.where
    assert pg.value("SELECT count(*) FROM target") == 4


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("SELECT nextval('counter') AS n", "nextval() in a read-only transaction"),
        ("SELECT * FROM target FOR UPDATE", "read-only transaction"),
        ("SELECT setval('counter', 100) AS n", "setval() in a read-only transaction"),
    ],
)
def test_an_extract_select_that_writes_is_refused_by_the_policy_and_by_the_read_only_transaction(
    ws: Workspace, pg: Postgres, query: str, words: str
) -> None:
    seed_load_modes(pg, primary_key=True)
    pg.execute("CREATE SEQUENCE counter")
    path = write_pipeline(ws, "q", [extract("src", "pg", query=query), load("publish", "src", "pg", "copy")])
    with pytest.raises(SpecError) as info:  # the allow-list refuses it before PostgreSQL sees it
        ws.run(path)
    assert "Extract query is not allowed" in info.value.message
    # Below the policy, reads run in a READ ONLY transaction: the same SQL sent directly is refused.
    with pytest.raises(PermissionDenied) as wall:
        connector(ws, "pg").fetch_arrow(query)
    assert "Connection 'pg'" in wall.value.message and words in wall.value.message
    assert pg.rows("SELECT last_value, is_called FROM counter") == [(1, False)]
    assert "copy" not in pg.tables()


def test_a_data_modifying_cte_is_refused(ws: Workspace, pg: Postgres) -> None:
    seed_load_modes(pg, primary_key=True)
    query = "WITH gone AS (DELETE FROM target RETURNING *) SELECT * FROM gone"
    path = write_pipeline(ws, "q", [extract("src", "pg", query=query), load("publish", "src", "pg", "copy")])
    with pytest.raises(SpecError) as info:
        ws.run(path)
    assert "Extract query is not allowed" in info.value.message and "DELETE" in info.value.message
    with pytest.raises(QueryForgeError) as wall:  # and the database refuses it too
        connector(ws, "pg").fetch_arrow(query)
    assert isinstance(wall.value, UserError) and "Connection 'pg'" in wall.value.message
    assert pg.value("SELECT count(*) FROM target") == 4


def test_a_slow_extract_hits_the_statement_timeout(ws: Workspace, pg: Postgres) -> None:
    # allowed SQL that takes seconds: 300 million generated rows, summed (the connection allows 300 ms)
    slow = "SELECT sum(x) AS slept, 1 AS id FROM (SELECT generate_series(1, 300000000) AS x) s"
    path = write_pipeline(
        ws,
        "slow",
        [extract("src", "slow", query=slow), load("publish", "src", "pg", "copy")],
    )
    try:
        outcome = ws.run(path)
        error: QueryForgeError | None = outcome.error
        assert outcome.status == "failed"
        assert step(ws, outcome.run_id, "src").failure_class == "TIMEOUT"
    except QueryForgeError as exc:  # a describe that has to run the query times out while validating
        error = exc
    assert isinstance(error, QueryTimeout), error
    assert "Connection 'slow'" in error.message and "statement timeout" in error.message
    assert "copy" not in pg.tables()


def test_a_failing_publish_rolls_back_every_load_of_the_connection(
    ws: Workspace, pg: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_load_modes(pg, primary_key=True)
    before = pg.rows("SELECT * FROM target ORDER BY id")
    path = write_pipeline(
        ws,
        "two",
        [
            extract("src", "pg", "incoming"),
            load("merge_it", "src", "pg", "target", mode="merge", keys=["id"]),
            load("copy_it", "src", "pg", "copy"),
        ],
    )
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    outcome = ws.run(path)
    assert outcome.status == "dead_lettered"  # a TRANSIENT failure, retries exhausted
    assert pg.rows("SELECT * FROM target ORDER BY id") == before
    assert pg.tables() == ["incoming", "target"]
    assert staging_tables(ws, "pg") == []


# ---------------------------------------------------------------- staging cleanup


def test_staging_tables_exist_only_while_a_run_waits_for_commit(ws: Workspace, pg: Postgres) -> None:
    seed_load_modes(pg, primary_key=True)
    path = copy_pipeline(ws, "stage", ("pg", "incoming"), ("pg", "target"), "merge", keys=["id"])
    audited = ws.run(path, sandbox=True)
    assert audited.status == "audited", audited.error
    (staged,) = audited.staged
    assert staged.staging_name.startswith(f"{STAGING}.{audited.run_id}")
    assert staging_tables(ws, "pg") == [staged.staging_name.split(".", 1)[1]]
    assert multiset(pg.rows(f"SELECT * FROM {staged.staging_name}")) == multiset(
        pg.rows("SELECT * FROM incoming")
    )
    ws.commit(audited.run_id)
    assert staging_tables(ws, "pg") == []

    done = ws.run(path)
    assert done.status == "succeeded"
    assert staging_tables(ws, "pg") == []


def test_staging_tables_of_a_failed_run_are_dropped(ws: Workspace, pg: Postgres) -> None:
    seed_load_modes(pg, primary_key=True)
    path = write_pipeline(
        ws,
        "half",
        [
            extract("src", "pg", "incoming"),
            load("good", "src", "pg", "copy"),
            {"id": "bad", "load": {"input": "src", "connection": "pg", "table": "target", "mode": "merge",
                                   "keys": ["region"]}},
        ],
    )  # fmt: skip
    outcome = ws.run(path)
    assert outcome.status == "failed"
    assert "duplicate key" in str(outcome.error)
    assert staging_tables(ws, "pg") == []
    assert pg.tables() == ["incoming", "target"]


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE target SET score = 9.5 WHERE id = 9",
        "DELETE FROM target WHERE id = 3",
        "INSERT INTO target VALUES (7, 'x', 'y', 1)",
    ],
)
def test_commit_refuses_when_production_changed_after_the_audit(
    ws: Workspace, pg: Postgres, change: str
) -> None:
    seed_load_modes(pg, primary_key=True)
    path = copy_pipeline(ws, "stage", ("pg", "incoming"), ("pg", "target"), "merge", keys=["id"])
    audited = ws.run(path, sandbox=True)
    assert audited.status == "audited", audited.error
    pg.execute(change)
    changed = pg.rows("SELECT * FROM target ORDER BY id")
    with pytest.raises(ProductionChanged) as info:
        ws.commit(audited.run_id)
    assert "pg.target" in info.value.message
    assert pg.rows("SELECT * FROM target ORDER BY id") == changed  # nobody's change was overwritten
    assert ws.get_run(audited.run_id).status == "audited"


# ---------------------------------------------------------------- catalog


@pytest.mark.parametrize("staging_option", [None, "qf_stage"])
def test_introspect_lists_tables_keys_and_estimates_without_staging(
    tmp_path: Path, pg: Postgres, staging_option: str | None
) -> None:
    pg.execute(
        "CREATE SCHEMA sales",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email varchar(200))",
        "CREATE TABLE sales.orders (order_id bigint, line smallint, customer_id integer NOT NULL "
        "REFERENCES customers (id), amount numeric(10,2), at timestamptz, PRIMARY KEY (order_id, line))",
        "INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 250) g",
        "INSERT INTO sales.orders SELECT g, 1, 1 + g % 250, g, now() FROM generate_series(1, 1000) g",
        "CREATE VIEW big_orders AS SELECT * FROM sales.orders WHERE amount > 500",
        "ANALYZE",
    )
    conns: dict[str, Any] = {"pg": {"url": pg.url, "writable": True}}
    if staging_option:
        conns["pg"]["staging_schema"] = staging_option
    with open_workspace(tmp_path / "ws", conns) as ws:
        audited = ws.run(copy_pipeline(ws, "s", ("pg", "customers"), ("pg", "copy")), sandbox=True)
        assert audited.status == "audited", audited.error
        assert staging_schema_exists(pg, staging_option or STAGING)
        conn = connector(ws, "pg")
        try:
            tables = {t.qualified: t for t in conn.introspect()}
        finally:
            conn.close()
    assert sorted(tables) == ["big_orders", "customers", "sales.orders"]
    customers, orders = tables["customers"], tables["sales.orders"]
    assert customers.columns == (
        ColumnInfo("id", "integer", False),
        ColumnInfo("name", "text", False),
        ColumnInfo("email", "character varying(200)", True),
    )
    assert customers.primary_key == ("id",) and customers.foreign_keys == ()
    assert customers.row_estimate == 250
    assert [(c.name, c.type, c.nullable) for c in orders.columns] == [
        ("order_id", "bigint", False),
        ("line", "smallint", False),
        ("customer_id", "integer", False),
        ("amount", "numeric(10,2)", True),
        ("at", "timestamp with time zone", True),
    ]
    assert orders.schema == "sales" and orders.name == "orders"
    assert orders.primary_key == ("order_id", "line")
    assert orders.foreign_keys == (("customer_id", "customers.id"),)
    assert orders.row_estimate == 1000
    assert [c.name for c in tables["big_orders"].columns] == [
        "order_id",
        "line",
        "customer_id",
        "amount",
        "at",
    ]
    assert tables["big_orders"].primary_key == ()
