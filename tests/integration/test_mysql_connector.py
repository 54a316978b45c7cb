"""A `mysql:` connection end to end, against the real MariaDB 10.11 server on 127.0.0.1:3306.

Every test gets its own fresh database and runs YAML pipelines through `Workspace.run`; what the run
did is read back with plain PyMySQL (autocommit, so no metadata lock outlives a check), and expected
results are computed by the test itself in SQL. Staging goes to a database of the test's own
(connection option `staging_schema`), so parallel tests never see each other's staging tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queryforge.connectors.base import ReadRequest
from queryforge.connectors.mysql import MySQLConnector
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
from tests.services import mysql_admin, mysql_database, postgres_database


@pytest.fixture
def my() -> Iterator[MariaDB]:
    with mysql_database() as url:
        db = MariaDB(url)
        try:
            yield db
        finally:
            db.execute(f"DROP DATABASE IF EXISTS `{staging_of(db)}`")
            db.close()


def staging_of(db: MariaDB) -> str:
    return f"{db.name}_stage"


@pytest.fixture
def ws(tmp_path: Path, my: MariaDB) -> Iterator[Workspace]:
    stage = staging_of(my)
    workspace = open_workspace(
        tmp_path / "ws",
        {
            "my": {"url": my.url, "writable": True, "staging_schema": stage},
            "my_ro": {"url": my.url, "staging_schema": stage},  # the same database, not writable
            "slow": {"url": my.url, "statement_timeout_ms": 300},
        },
    )
    yield workspace
    workspace.close()


def columns(my: MariaDB, table: str, schema: str | None = None) -> list[tuple[str, str]]:
    return [
        (str(r[0]), str(r[1]))
        for r in my.rows(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            [schema or my.name, table],
        )
    ]


def primary_key(my: MariaDB, table: str) -> list[str]:
    return [
        r[0]
        for r in my.rows(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            [my.name, table],
        )
    ]


def databases(my: MariaDB) -> list[str]:
    return [r[0] for r in my.rows("SHOW DATABASES")]


# ---------------------------------------------------------------- every type, round trip


def test_every_type_round_trips_into_a_new_table(ws: Workspace, my: MariaDB) -> None:
    seed_types(my)
    outcome = ws.run(copy_pipeline(ws, "copy_types", ("my", "types"), ("my", "copy")))
    assert outcome.status == "succeeded", outcome.error
    cols = ", ".join(MARIADB_TYPE_COLUMNS)
    assert my.rows(f"SELECT {cols} FROM copy ORDER BY id") == my.rows(f"SELECT {cols} FROM types ORDER BY id")
    # Empty text and NULL stay apart; tricky text is byte for byte the same.
    assert my.rows("SELECT id FROM copy WHERE BINARY note = ''") == [(2,)]
    assert my.rows("SELECT id FROM copy WHERE note IS NULL") == [(4,)]
    assert my.rows(
        "SELECT count(*) FROM copy c JOIN types t ON t.id = c.id AND BINARY c.note = BINARY t.note"
    ) == [(3,)]
    types = dict(columns(my, "copy"))
    assert {c: types[c] for c in ["i16", "i32", "i64", "f64", "note", "day", "at", "clock", "u64"]} == {
        "i16": "smallint(6)",
        "i32": "int(11)",
        "i64": "bigint(20)",
        "f64": "double",
        "note": "longtext",
        "day": "date",
        "at": "datetime(6)",
        "clock": "time(6)",
        "u64": "bigint(20) unsigned",
    }
    assert staging_tables(ws, "my") == []


def test_every_type_round_trips_into_an_existing_table_of_the_same_types(ws: Workspace, my: MariaDB) -> None:
    seed_types(my)
    my.execute("CREATE TABLE copy LIKE types")
    outcome = ws.run(copy_pipeline(ws, "append_types", ("my", "types"), ("my", "copy"), mode="append"))
    assert outcome.status == "succeeded", outcome.error
    assert my.rows("SELECT * FROM copy ORDER BY id") == my.rows("SELECT * FROM types ORDER BY id")
    assert columns(my, "copy") == columns(my, "types")

    merge = ws.run(copy_pipeline(ws, "merge_types", ("my", "types"), ("my", "copy"), "merge", keys=["id"]))
    assert merge.status == "succeeded", merge.error
    assert merge.staged[0].diff == {"added": 0, "removed": 0, "changed": 0}
    assert my.rows("SELECT * FROM copy ORDER BY id") == my.rows("SELECT * FROM types ORDER BY id")

    replace = ws.run(copy_pipeline(ws, "replace_types", ("my", "types"), ("my", "copy")))
    assert replace.status == "succeeded", replace.error
    assert replace.staged[0].diff == {"added": 0, "removed": 0, "changed": 0}
    assert my.rows("SELECT * FROM copy ORDER BY id") == my.rows("SELECT * FROM types ORDER BY id")
    assert staging_tables(ws, "my") == []


def test_a_postgres_table_round_trips_into_mariadb(tmp_path: Path, my: MariaDB) -> None:
    """json, jsonb and uuid arrive as text; timestamptz as its UTC wall clock in DATETIME(6)."""
    wanted = [c for c in PG_TYPE_COLUMNS if c != "blob"]  # MariaDB has no mapping for binary data
    as_text = {"doc", "docb", "uid"}
    select = ", ".join(f"{c}::text" if c in as_text else c for c in wanted)
    my.execute(
        "CREATE TABLE existing (id INT PRIMARY KEY, i16 SMALLINT, i32 INT, i64 BIGINT, f64 DOUBLE, "
        "flag BOOLEAN, amount DECIMAL(12,2), note LONGTEXT, day DATE, at DATETIME(6), at_tz DATETIME(6), "
        "clock TIME(6), doc JSON, docb JSON, uid UUID) DEFAULT CHARSET=utf8mb4"
    )
    with postgres_database() as pg_url:
        pg = Postgres(pg_url)
        try:
            seed_types(pg)
            source = plain_rows(pg.rows(f"SELECT {select} FROM types ORDER BY id"))
            conns = {
                "pg": {"url": pg_url},
                "my": {"url": my.url, "writable": True, "staging_schema": staging_of(my)},
            }
            with open_workspace(tmp_path / "ws", conns) as ws:
                for table, mode in [("fresh", "replace"), ("existing", "append")]:
                    path = write_pipeline(
                        ws,
                        f"to_{table}",
                        [
                            extract("src", "pg", "types", columns=wanted),
                            load("publish", "src", "my", table, mode),
                        ],
                    )
                    outcome = ws.run(path)
                    assert outcome.status == "succeeded", outcome.error
                    got = plain_rows(my.rows(f"SELECT {', '.join(wanted)} FROM {table} ORDER BY id"))
                    assert got == source, table
                assert staging_tables(ws, "my") == []
        finally:
            pg.close()


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
    ws: Workspace, my: MariaDB, monkeypatch: pytest.MonkeyPatch, mode: str, keys: list[str], primary_key: bool
) -> None:
    seed_load_modes(my, primary_key)
    want_rows, want_diff = expected_by_sql(my, mode, keys)
    fallback: list[str] = []
    original = SqlConnector.merge_into

    def spy(self: SqlConnector, *args: Any) -> None:
        fallback.append(self.name)
        original(self, *args)

    monkeypatch.setattr(SqlConnector, "merge_into", spy)
    options = {"keys": keys} if keys else {}
    outcome = ws.run(copy_pipeline(ws, f"load_{mode}", ("my", "incoming"), ("my", "target"), mode, **options))
    assert outcome.status == "succeeded", outcome.error
    assert multiset(my.rows("SELECT id, region, name, score FROM target")) == multiset(want_rows)
    assert outcome.staged[0].diff == want_diff
    if mode == "merge":
        # ON DUPLICATE KEY UPDATE when the primary key is exactly the keys; delete + insert otherwise.
        assert fallback == ([] if primary_key and keys == ["id"] else ["my"])
    if mode != "replace":
        assert primary_key_of_target(my) == (["id"] if primary_key else [])
    assert staging_tables(ws, "my") == []
    assert my.tables() == ["incoming", "target"]


def primary_key_of_target(my: MariaDB) -> list[str]:
    return primary_key(my, "target")


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_the_diff_counts_changes_of_case_and_trailing_spaces(ws: Workspace, my: MariaDB, mode: str) -> None:
    """The default collation finds 'ann' = 'Ann' and 'bob' = 'bob ', yet publishing changes the bytes."""
    my.execute(
        "CREATE TABLE target (id INT PRIMARY KEY, name VARCHAR(20))",
        "INSERT INTO target VALUES (1, 'ann'), (2, 'bob'), (3, 'cy')",
        "CREATE TABLE incoming (id INT, name VARCHAR(20))",
        "INSERT INTO incoming VALUES (1, 'Ann'), (2, 'bob '), (3, 'cy'), (4, 'dee')",
    )
    as_bytes = "SELECT id, CAST(name AS BINARY) AS name FROM {}"
    if mode == "merge":
        want = my.rows(
            f"{as_bytes.format('target')} WHERE id NOT IN (SELECT id FROM incoming) "
            f"UNION ALL {as_bytes.format('incoming')}"
        )
        changed = my.value(
            "SELECT count(*) FROM incoming i JOIN target t ON t.id = i.id "
            "WHERE CAST(i.name AS BINARY) <> CAST(t.name AS BINARY)"
        )
        added = my.value("SELECT count(*) FROM incoming WHERE id NOT IN (SELECT id FROM target)")
        diff = {"added": added, "removed": 0, "changed": changed}
    else:
        want = my.rows(as_bytes.format("incoming"))
        only = "SELECT count(*) FROM ({} EXCEPT ALL {}) d"
        diff = {
            "added": my.value(only.format(as_bytes.format("incoming"), as_bytes.format("target"))),
            "removed": my.value(only.format(as_bytes.format("target"), as_bytes.format("incoming"))),
            "changed": 0,
        }
    options = {"keys": ["id"]} if mode == "merge" else {}
    outcome = ws.run(copy_pipeline(ws, "bytes", ("my", "incoming"), ("my", "target"), mode, **options))
    assert outcome.status == "succeeded", outcome.error
    assert outcome.staged[0].diff == diff
    assert diff["changed"] == 2 or diff["removed"] == 2  # the case- and space-only changes are counted
    assert multiset(my.rows(as_bytes.format("target"))) == multiset(want)


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
def test_load_creates_a_missing_table(ws: Workspace, my: MariaDB, mode: str) -> None:
    seed_load_modes(my, primary_key=False)
    options = {"keys": ["id"]} if mode == "merge" else {}
    outcome = ws.run(copy_pipeline(ws, "fresh", ("my", "incoming"), ("my", "fresh"), mode, **options))
    assert outcome.status == "succeeded", outcome.error
    assert multiset(my.rows("SELECT * FROM fresh")) == multiset(my.rows("SELECT * FROM incoming"))
    assert outcome.staged[0].diff == {"added": 4, "removed": 0, "changed": 0}
    assert staging_tables(ws, "my") == []


def test_quoted_names_empty_input_and_long_step_ids(tmp_path: Path, my: MariaDB) -> None:
    steps = seed_odd_names(my)
    with open_workspace(
        tmp_path / "ws", {"db": {"url": my.url, "writable": True, "staging_schema": staging_of(my)}}
    ) as ws:
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
    assert my.rows("SELECT * FROM tgt ORDER BY 1") == [(1, "a", 10), (2, "b", 20), (3, "kept", 30)]
    assert my.rows("SELECT count(*) FROM from_empty") == [(0,)]
    assert multiset(my.rows("SELECT * FROM long_a")) == multiset(my.rows("SELECT * FROM src"))
    assert my.rows("SELECT count(*) FROM long_b") == [(0,)]


def test_a_big_table_streams_in_several_batches(ws: Workspace, my: MariaDB) -> None:
    my.execute(
        "CREATE TABLE big AS SELECT seq AS id, concat(md5(seq), md5(seq)) AS t, seq * 0.5 AS half "
        "FROM seq_1_to_300000"
    )
    conn = connector(ws, "my")
    try:
        batches = [b.num_rows for b in conn.read(ReadRequest(table="big", batch_rows=50_000))]
    finally:
        conn.close()
    assert len(batches) > 1 and sum(batches) == 300_000
    outcome = ws.run(copy_pipeline(ws, "big", ("my", "big"), ("my", "copy")))
    assert outcome.status == "succeeded", outcome.error
    assert step(ws, outcome.run_id, "src").rows_out == 300_000
    both = "SELECT count(*) FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {}) d"
    assert my.value(both.format("big", "copy")) == my.value(both.format("copy", "big")) == 0
    assert my.value("SELECT count(*) FROM copy") == 300_000


# ---------------------------------------------------------------- incremental extracts


@pytest.mark.parametrize("cursor", ["at", "id"])
def test_incremental_extract_reads_only_new_rows_and_advances_only_on_publish(
    ws: Workspace, my: MariaDB, cursor: str
) -> None:
    my.execute(
        "CREATE TABLE events (id INT, at DATETIME(6), what VARCHAR(10))",
        "INSERT INTO events VALUES (1, '2024-01-01 10:00:00.000001', 'a'), "
        "(2, '2024-01-01 10:00:00.5', 'b'), (3, '2024-01-01 10:00:00.500001', 'c')",
    )
    path = write_pipeline(
        ws,
        "inc",
        [
            extract("src", "my", "events", incremental={"cursor": cursor}),
            load("publish", "src", "my", "copy", mode="append"),
        ],
    )

    def high_water() -> Any:
        return my.value(f"SELECT max({cursor}) FROM events")

    first = ws.run(path)
    assert first.status == "succeeded", first.error
    assert step(ws, first.run_id, "src").rows_out == 3
    assert ws.repo.get_watermark("inc", "src") == high_water()

    my.execute("INSERT INTO events VALUES (4, '2024-01-01 10:00:00.500002', 'd'), (5, '2024-01-02', 'e')")
    mark = ws.repo.get_watermark("inc", "src")
    rehearsal = ws.run(path, sandbox=True)
    assert rehearsal.status == "audited", rehearsal.error
    assert step(ws, rehearsal.run_id, "src").rows_out == 2
    assert rehearsal.staged[0].diff == {"added": 2, "removed": 0, "changed": 0}
    assert ws.repo.get_watermark("inc", "src") == mark
    assert my.value("SELECT count(*) FROM copy") == 3
    assert ws.commit(rehearsal.run_id).status == "succeeded"
    assert ws.repo.get_watermark("inc", "src") == high_water()

    my.execute("INSERT INTO events VALUES (6, '2024-01-02 00:00:00.000001', 'f')")
    third = ws.run(path)
    assert third.status == "succeeded", third.error
    assert step(ws, third.run_id, "src").rows_out == 1
    assert third.staged[0].diff == {"added": 1, "removed": 0, "changed": 0}
    assert ws.repo.get_watermark("inc", "src") == high_water()
    assert multiset(my.rows("SELECT * FROM copy")) == multiset(my.rows("SELECT * FROM events"))
    assert staging_tables(ws, "my") == []


def test_a_high_water_mark_keeps_its_microseconds(ws: Workspace, my: MariaDB) -> None:
    my.execute(
        "CREATE TABLE events (id INT, at DATETIME(6))",
        "INSERT INTO events VALUES (1, '2024-01-01 10:00:00.25'), (2, '2024-01-01 10:00:00.75')",
    )
    conn = connector(ws, "my")
    try:
        since = dt.datetime(2024, 1, 1, 10, 0, 0, 250000)
        data = conn.read(ReadRequest(table="events", cursor="at", since=since)).read_all()
    finally:
        conn.close()
    assert data.column("id").to_pylist() == [2]


# ---------------------------------------------------------------- schema changes


def test_a_new_column_is_refused_by_default_and_production_is_untouched(ws: Workspace, my: MariaDB) -> None:
    my.execute(
        "CREATE TABLE wide (id INT PRIMARY KEY, name VARCHAR(20))",
        "INSERT INTO wide VALUES (1, 'a'), (2, 'b')",
        "CREATE TABLE wider (id INT, name VARCHAR(20), extra DECIMAL(8,3))",
        "INSERT INTO wider VALUES (3, 'c', 1.5)",
    )
    before = my.rows("SELECT * FROM wide ORDER BY id")
    outcome = ws.run(copy_pipeline(ws, "grow", ("my", "wider"), ("my", "wide"), mode="append"))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, StepFailed)
    message = outcome.error.message
    assert "extra" in message and "my.wide" in message and "'fail'" in message and "publish" in message
    assert my.rows("SELECT * FROM wide ORDER BY id") == before
    assert columns(my, "wide") == [("id", "int(11)"), ("name", "varchar(20)")]
    assert staging_tables(ws, "my") == []


@pytest.mark.parametrize("mode", ["append", "merge"])
def test_add_columns_widens_the_table_by_a_swap(
    ws: Workspace, my: MariaDB, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    my.execute(
        "CREATE TABLE wide (id INT PRIMARY KEY, name VARCHAR(20))",
        "INSERT INTO wide VALUES (1, 'a'), (2, 'b')",
        "CREATE TABLE wider (id INT, name VARCHAR(20), extra DECIMAL(8,3))",
        "INSERT INTO wider VALUES (2, 'B', 2.25), (3, 'c', 1.5)",
    )
    if mode == "append":
        want = my.rows("SELECT id, name, NULL FROM wide UNION ALL SELECT * FROM wider WHERE id = 3")
        options: dict[str, Any] = {"on_schema_change": "add_columns"}
        my.execute("DELETE FROM wider WHERE id = 2")
    else:
        want = my.rows(
            "SELECT id, name, NULL FROM wide w WHERE NOT EXISTS "
            "(SELECT 1 FROM wider n WHERE n.id = w.id) UNION ALL SELECT * FROM wider"
        )
        options = {"on_schema_change": "add_columns", "keys": ["id"]}
    swaps: list[int] = []
    original = MySQLConnector._publish_by_swap

    def spy(self: MySQLConnector, loads: Any, current: Any) -> None:
        swaps.append(len(loads))
        original(self, loads, current)

    monkeypatch.setattr(MySQLConnector, "_publish_by_swap", spy)
    outcome = ws.run(copy_pipeline(ws, "grow", ("my", "wider"), ("my", "wide"), mode, **options))
    assert outcome.status == "succeeded", outcome.error
    assert swaps == [1]
    assert [c for c, _ in columns(my, "wide")] == ["id", "name", "extra"]
    assert multiset(my.rows("SELECT id, name, extra FROM wide")) == multiset(want)
    assert primary_key(my, "wide") == ["id"]  # the swapped-in table keeps the production table's keys
    assert my.tables() == ["wide", "wider"]
    assert staging_tables(ws, "my") == []


def test_appends_without_new_columns_publish_in_place(
    ws: Workspace, my: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_load_modes(my, primary_key=True)
    swaps: list[int] = []
    monkeypatch.setattr(MySQLConnector, "_publish_by_swap", lambda self, *a: swaps.append(1))
    outcome = ws.run(
        copy_pipeline(ws, "in_place", ("my", "incoming"), ("my", "target"), "merge", keys=["id"])
    )
    assert outcome.status == "succeeded", outcome.error
    assert swaps == []


ORDERS_DDL = (
    "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, "
    "FOREIGN KEY (customer_id) REFERENCES customers (id))"
)


@pytest.mark.parametrize(
    ("mode", "options"),
    [("replace", {}), ("append", {"on_schema_change": "add_columns"})],
    ids=["replace", "append-new-column"],
)
def test_a_table_referenced_by_foreign_keys_is_never_swapped(
    ws: Workspace, my: MariaDB, mode: str, options: dict[str, Any]
) -> None:
    """RENAME TABLE would carry the children's foreign keys over to the retired table."""
    my.execute(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20))",
        "INSERT INTO customers VALUES (1, 'a'), (2, 'b')",
        ORDERS_DDL,
        "INSERT INTO orders VALUES (10, 1)",
        "CREATE TABLE incoming (id INT, name VARCHAR(20), extra INT)",
        "INSERT INTO incoming VALUES (3, 'C', 3), (4, 'D', 4)",
    )
    outcome = ws.run(copy_pipeline(ws, "swap", ("my", "incoming"), ("my", "customers"), mode, **options))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, StepFailed), outcome.error
    assert "my.customers" in outcome.error.message and "orders" in outcome.error.message
    assert my.rows("SELECT * FROM customers ORDER BY id") == [(1, "a"), (2, "b")]
    assert my.rows(
        "SELECT REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'orders' AND REFERENCED_TABLE_NAME IS NOT NULL"
    ) == [(my.name, "customers")]
    assert staging_tables(ws, "my") == []


def test_a_merge_into_a_referenced_table_is_published_in_place(ws: Workspace, my: MariaDB) -> None:
    my.execute(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20))",
        "INSERT INTO customers VALUES (1, 'a'), (2, 'b')",
        ORDERS_DDL,
        "INSERT INTO orders VALUES (10, 1)",
        "CREATE TABLE incoming (id INT, name VARCHAR(20))",
        "INSERT INTO incoming VALUES (1, 'A'), (3, 'C')",
    )
    outcome = ws.run(copy_pipeline(ws, "m", ("my", "incoming"), ("my", "customers"), "merge", keys=["id"]))
    assert outcome.status == "succeeded", outcome.error
    assert my.rows("SELECT * FROM customers ORDER BY id") == [(1, "A"), (2, "b"), (3, "C")]


# ---------------------------------------------------------------- read-only connection


@pytest.mark.parametrize("mode", ["append", "replace", "merge"])
def test_a_read_only_connection_refuses_loads_before_any_data_moves(
    ws: Workspace, my: MariaDB, mode: str
) -> None:
    seed_load_modes(my, primary_key=True)
    before = my.rows("SELECT * FROM target ORDER BY id")
    options = {"keys": ["id"]} if mode == "merge" else {}
    path = copy_pipeline(ws, "ro", ("my", "incoming"), ("my_ro", "target"), mode, **options)
    with pytest.raises(PermissionDenied) as info:
        ws.run(path)
    err = info.value
    assert "my_ro" in err.message and "read-only" in err.message
    assert err.where is not None and "step 'publish'" in err.where
    assert my.rows("SELECT * FROM target ORDER BY id") == before
    assert staging_of(my) not in databases(my)  # nothing was staged: not even the staging database
    assert ws.list_runs() == []


# ---------------------------------------------------------------- bad input and faults


def test_a_wrong_password_is_permission_denied_and_never_printed(
    tmp_path: Path, my: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = f"qf_{my.name[-12:]}"
    admin = mysql_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'the-right-one-42'")
            cur.execute(f"GRANT ALL ON `{my.name}`.* TO '{user}'@'%'")
        monkeypatch.setenv("QF_TEST_MY_PASSWORD", "not-the-right-one-99")
        url = my.url.replace("root@", f"{user}@")
        conns = {"app": {"url": url, "password": "${env:QF_TEST_MY_PASSWORD}"}}
        with open_workspace(tmp_path / "ws", conns) as ws:
            with pytest.raises(PermissionDenied) as info:
                ws.run(copy_pipeline(ws, "x", ("app", "t"), ("warehouse", "t")))
            text = info.value.render()
            assert "Connection 'app'" in text and "Access denied" in text and user in text
            assert "not-the-right-one-99" not in text
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


def test_an_unknown_database_is_a_clear_error(tmp_path: Path, my: MariaDB) -> None:
    with open_workspace(tmp_path / "ws", {"gone": {"url": my.url + "_missing"}}) as ws:
        with pytest.raises(UserError) as info:
            ws.run(copy_pipeline(ws, "x", ("gone", "t"), ("warehouse", "t")))
        assert type(info.value) is UserError
        assert "Connection 'gone'" in info.value.message and "Unknown database" in info.value.message


def test_a_server_that_is_down_is_transient(tmp_path: Path, my: MariaDB) -> None:
    with open_workspace(tmp_path / "ws", {"down": {"url": "mysql://root@127.0.0.1:1/x"}}) as ws:
        with pytest.raises(TransientError) as info:
            ws.run(copy_pipeline(ws, "x", ("down", "t"), ("warehouse", "t")))
        assert "Connection 'down'" in info.value.message and "refused" in info.value.message.lower()


def test_a_missing_table_suggests_the_nearest_one(ws: Workspace, my: MariaDB) -> None:
    seed_load_modes(my, primary_key=True)
    with pytest.raises(UserError) as info:
        ws.validate(copy_pipeline(ws, "typo", ("my", "incomng"), ("my", "t")))
    assert "'incomng'" in info.value.message and "'my'" in info.value.message
    assert info.value.hint == "did you mean 'incoming'?"
    assert info.value.where is not None and "step 'src'" in info.value.where


@pytest.mark.parametrize(
    ("expression", "kind"),
    [("[id, id + 1]", "list"), ("{'a': id, 'b': name}", "struct"), ("map([name], [id])", "map")],
)
def test_a_type_mariadb_cannot_store_is_named(ws: Workspace, my: MariaDB, expression: str, kind: str) -> None:
    seed_load_modes(my, primary_key=True)
    path = write_pipeline(
        ws,
        "nested",
        [
            extract("src", "my", "incoming"),
            {"id": "shaped", "derive": {"input": "src", "columns": {"nested": expression}}},
            load("publish", "shaped", "my", "target", mode="append", on_schema_change="add_columns"),
        ],
    )
    before = my.rows("SELECT * FROM target ORDER BY id")
    outcome = ws.run(path)
    assert outcome.status == "failed"
    assert isinstance(outcome.error, StepFailed), outcome.error
    text = outcome.error.render()
    assert "'nested'" in text and kind in text and "'my'" in text and "publish" in text
    assert my.rows("SELECT * FROM target ORDER BY id") == before
    assert staging_tables(ws, "my") == []


def test_duplicate_merge_keys_fail_and_leave_the_target_untouched(ws: Workspace, my: MariaDB) -> None:
    seed_load_modes(my, primary_key=True)
    my.execute("INSERT INTO incoming VALUES (4, 'eu', 'Dan again', 1.0), (5, 'eu', 'Eve again', 2.0)")
    before = my.rows("SELECT * FROM target ORDER BY id")
    outcome = ws.run(copy_pipeline(ws, "dupes", ("my", "incoming"), ("my", "target"), "merge", keys=["id"]))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, StepFailed)
    assert "2 duplicate keys on (id)" in outcome.error.message and "'publish'" in outcome.error.message
    assert outcome.error.hint is not None and "dedupe" in outcome.error.hint
    assert my.rows("SELECT * FROM target ORDER BY id") == before
    assert staging_tables(ws, "my") == []


@pytest.mark.parametrize(
    "query", ["SELECT 1 AS a; DROP TABLE target", "DROP TABLE target", "DELETE FROM target"]
)
def test_an_extract_query_must_be_one_select(ws: Workspace, my: MariaDB, query: str) -> None:
    seed_load_modes(my, primary_key=True)
    path = write_pipeline(ws, "q", [extract("src", "my", query=query), load("publish", "src", "my", "copy")])
    with pytest.raises(SpecError) as info:
        ws.run(path)
    assert "Extract query is not allowed" in info.value.message
    assert my.value("SELECT count(*) FROM target") == 4


@pytest.mark.parametrize(
    "query",
    ["SELECT NEXTVAL(counter) AS n", "SELECT * FROM target FOR UPDATE", "SELECT SETVAL(counter, 100)"],
)
def test_an_extract_select_that_writes_is_refused_by_the_policy_and_by_the_read_only_session(
    ws: Workspace, my: MariaDB, query: str
) -> None:
    seed_load_modes(my, primary_key=True)
    my.execute("CREATE SEQUENCE counter")
    path = write_pipeline(ws, "q", [extract("src", "my", query=query), load("publish", "src", "my", "copy")])
    with pytest.raises(SpecError) as info:  # the allow-list refuses it before MariaDB sees it
        ws.run(path)
    assert "Extract query is not allowed" in info.value.message
    # Below the policy, reads run in a READ ONLY session: the same SQL sent directly is refused.
    with pytest.raises(PermissionDenied) as wall:
        connector(ws, "my").fetch_arrow(query)
    assert "Connection 'my'" in wall.value.message and "READ ONLY" in wall.value.message
    assert my.rows("SELECT next_not_cached_value FROM counter") == [(1,)]
    assert "copy" not in my.tables()


def test_a_slow_extract_hits_the_statement_timeout(ws: Workspace, my: MariaDB) -> None:
    # allowed SQL that takes seconds: a billion-row cross join of a 1,000-row recursive CTE
    slow = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000) "
        "SELECT count(*) AS slept, 1 AS id FROM r AS a, r AS b, r AS c"
    )
    path = write_pipeline(
        ws,
        "slow",
        [extract("src", "slow", query=slow), load("publish", "src", "my", "copy")],
    )
    try:
        outcome = ws.run(path)
        error: QueryForgeError | None = outcome.error
        assert outcome.status == "failed"
        assert step(ws, outcome.run_id, "src").failure_class == "TIMEOUT"
    except QueryForgeError as exc:  # MariaDB runs the derived table even to describe it: while validating
        error = exc
    assert isinstance(error, QueryTimeout), error
    assert "Connection 'slow'" in error.message and "max_statement_time" in error.message
    assert "copy" not in my.tables()


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_a_failing_publish_leaves_production_untouched(
    ws: Workspace, my: MariaDB, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """In place (one InnoDB transaction) for the merge, by swap for the replace: both roll back."""
    seed_load_modes(my, primary_key=True)
    before = my.rows("SELECT * FROM target ORDER BY id")
    path = write_pipeline(
        ws,
        "two",
        [
            extract("src", "my", "incoming"),
            load("first", "src", "my", "target", mode=mode, **({"keys": ["id"]} if mode == "merge" else {})),
            load("second", "src", "my", "incoming", mode="append"),
        ],
    )
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    outcome = ws.run(path)
    assert outcome.status == "dead_lettered"  # a TRANSIENT failure, retries exhausted
    assert my.rows("SELECT * FROM target ORDER BY id") == before
    assert my.value("SELECT count(*) FROM incoming") == 4
    assert my.tables() == ["incoming", "target"]
    assert staging_tables(ws, "my") == []


# ---------------------------------------------------------------- staging cleanup


def test_staging_tables_exist_only_while_a_run_waits_for_commit(ws: Workspace, my: MariaDB) -> None:
    seed_load_modes(my, primary_key=True)
    path = copy_pipeline(ws, "stage", ("my", "incoming"), ("my", "target"), "merge", keys=["id"])
    audited = ws.run(path, sandbox=True)
    assert audited.status == "audited", audited.error
    (staged,) = audited.staged
    assert staged.staging_name.startswith(f"{staging_of(my)}.{audited.run_id}")
    assert staging_tables(ws, "my") == [staged.staging_name.split(".", 1)[1]]
    assert multiset(my.rows(f"SELECT * FROM {staged.staging_name}")) == multiset(
        my.rows("SELECT * FROM incoming")
    )
    ws.commit(audited.run_id)
    assert staging_tables(ws, "my") == []
    assert ws.run(path).status == "succeeded"
    assert staging_tables(ws, "my") == []


def test_the_default_staging_database_is_cleaned_up_per_run(tmp_path: Path, my: MariaDB) -> None:
    seed_load_modes(my, primary_key=True)
    with open_workspace(tmp_path / "ws", {"my": {"url": my.url, "writable": True}}) as ws:
        path = copy_pipeline(ws, "stage", ("my", "incoming"), ("my", "target"), "merge", keys=["id"])
        audited = ws.run(path, sandbox=True)
        assert audited.status == "audited", audited.error
        ours = [t for t in staging_tables(ws, "my") if t.startswith(audited.run_id)]
        assert [f"_qf_staging.{t}" for t in ours] == [audited.staged[0].staging_name]
        ws.commit(audited.run_id)
        assert [t for t in staging_tables(ws, "my") if t.startswith(audited.run_id)] == []


@pytest.mark.parametrize("failure", ["duplicate-keys", "schema-policy", "swap-fault"])
def test_staging_tables_of_a_failed_run_are_dropped(
    ws: Workspace, my: MariaDB, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    seed_load_modes(my, primary_key=True)
    my.execute("ALTER TABLE incoming ADD COLUMN extra INT")
    bad: dict[str, Any] = {"mode": "merge", "keys": ["region"] if failure == "duplicate-keys" else ["id"]}
    if failure == "swap-fault":
        bad["on_schema_change"] = "add_columns"
        monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    path = write_pipeline(
        ws,
        "half",
        [
            extract("src", "my", "incoming"),
            load("good", "src", "my", "copy"),
            load("bad", "src", "my", "target", **bad),
        ],
    )
    before = my.rows("SELECT * FROM target ORDER BY id")
    outcome = ws.run(path)
    # the injected fault is TRANSIENT (retries exhausted: dead-lettered); the others are terminal
    assert outcome.status == ("dead_lettered" if failure == "swap-fault" else "failed")
    assert staging_tables(ws, "my") == []
    assert my.tables() == ["incoming", "target"]
    assert my.rows("SELECT * FROM target ORDER BY id") == before


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE target SET score = 9.5 WHERE id = 9",
        "DELETE FROM target WHERE id = 3",
        "INSERT INTO target VALUES (7, 'x', 'y', 1)",
    ],
)
def test_commit_refuses_when_production_changed_after_the_audit(
    ws: Workspace, my: MariaDB, change: str
) -> None:
    seed_load_modes(my, primary_key=True)
    path = copy_pipeline(ws, "stage", ("my", "incoming"), ("my", "target"), "merge", keys=["id"])
    audited = ws.run(path, sandbox=True)
    assert audited.status == "audited", audited.error
    my.execute(change)
    changed = my.rows("SELECT * FROM target ORDER BY id")
    with pytest.raises(ProductionChanged) as info:
        ws.commit(audited.run_id)
    assert "my.target" in info.value.message
    assert my.rows("SELECT * FROM target ORDER BY id") == changed  # nobody's change was overwritten
    assert ws.get_run(audited.run_id).status == "audited"


# ---------------------------------------------------------------- catalog


def test_introspect_lists_tables_keys_and_estimates_without_staging(ws: Workspace, my: MariaDB) -> None:
    my.execute(
        "CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) NOT NULL, email TEXT)",
        "CREATE TABLE orders (order_id BIGINT, line SMALLINT, customer_id INT NOT NULL, "
        "amount DECIMAL(10,2), at DATETIME(6), PRIMARY KEY (order_id, line), "
        "FOREIGN KEY (customer_id) REFERENCES customers (id))",
        "INSERT INTO customers (name) SELECT concat('c', seq) FROM seq_1_to_250",
        "INSERT INTO orders SELECT seq, 1, 1 + seq % 250, seq, now() FROM seq_1_to_1000",
        "CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 500",
        "ANALYZE TABLE customers, orders",
    )
    audited = ws.run(copy_pipeline(ws, "s", ("my", "customers"), ("my", "copy")), sandbox=True)
    assert audited.status == "audited", audited.error
    assert staging_tables(ws, "my") != []
    conn = connector(ws, "my")
    try:
        tables = {t.qualified: t for t in conn.introspect()}
    finally:
        conn.close()
    assert sorted(tables) == ["big_orders", "customers", "orders"]
    customers, orders = tables["customers"], tables["orders"]
    assert [(c.name, c.type, c.nullable) for c in customers.columns] == [
        ("id", "int(11)", False),
        ("name", "varchar(50)", False),
        ("email", "text", True),
    ]
    assert customers.primary_key == ("id",) and customers.foreign_keys == ()
    assert [(c.name, c.type, c.nullable) for c in orders.columns] == [
        ("order_id", "bigint(20)", False),
        ("line", "smallint(6)", False),
        ("customer_id", "int(11)", False),
        ("amount", "decimal(10,2)", True),
        ("at", "datetime(6)", True),
    ]
    assert orders.primary_key == ("order_id", "line")
    assert orders.foreign_keys == (("customer_id", "customers.id"),)
    assert customers.row_estimate == 250 and orders.row_estimate == 1000
    assert tables["big_orders"].row_estimate is None and tables["big_orders"].primary_key == ()
