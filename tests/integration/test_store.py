"""The metadata store against both backends: SQLite (a tmp file) and the PostgreSQL at 127.0.0.1:5432.

Each PostgreSQL test gets its own database `qf_test_<random>`, dropped afterwards. An unreachable
PostgreSQL fails these tests (it is never skipped): deselect them with `-m "not postgres"`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from queryforge.errors import ConfigError
from queryforge.store import RecordNotFound, Repo, RunRecord, StepRecord, Store
from queryforge.store.repo import alembic_config
from queryforge.store.tables import metadata

RUN_ID = re.compile(r"^r[0-9a-f]{12}[0-9a-f]{8}$")

MakeRun = Callable[..., str]


@pytest.fixture
def make_run(repo: Repo) -> MakeRun:
    """Builds a run of pipeline `name` (one version per distinct spec) and returns its id."""

    def build(
        name: str = "daily_sales",
        *,
        on: Repo | None = None,
        spec: str = '{"steps": []}',
        mode: str = "sandbox",
        params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        target = on or repo
        pipeline_id, version_id, _ = target.save_pipeline_version(name, f"hash-{spec}", spec, None)
        return target.create_run(
            pipeline_id=pipeline_id,
            version_id=version_id,
            pipeline_name=name,
            mode=mode,
            params=params or {},
            **kwargs,
        )

    return build


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


# -- engine and migrations ------------------------------------------------------------------------


def test_migrate_twice_is_idempotent(store: Store) -> None:
    store.migrate()
    store.migrate()

    assert store.revision() == head_revision()
    with store.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        orgs = conn.execute(text("SELECT id FROM orgs")).scalars().all()
    assert set(metadata.tables) <= tables
    assert orgs == ["default"]


def test_migrations_match_tables_module(store: Store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, metadata)
    assert diffs == []


def test_upgrade_from_old_database(store_url: str) -> None:
    """A database created at revision 0001 by an older release keeps its data when upgraded to head."""
    with Store(store_url) as store:
        assert store.revision() is None
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
        assert store.revision() == "0001"

        created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        if store.dialect == "sqlite":
            created_param: datetime = created.replace(tzinfo=None)
        else:
            created_param = created
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO pipelines (org_id, name, created_at, created_by) "
                    "VALUES ('default', 'legacy', :at, 'bob')"
                ),
                {"at": created_param},
            )
            pipeline_id = conn.execute(text("SELECT id FROM pipelines WHERE name = 'legacy'")).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO pipeline_versions (org_id, pipeline_id, version, content_hash, spec_json,"
                    " created_at, created_by) VALUES ('default', :p, 1, 'abc', '{}', :at, 'bob')"
                ),
                {"p": pipeline_id, "at": created_param},
            )
            version_id = conn.execute(text("SELECT id FROM pipeline_versions")).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO runs (id, org_id, pipeline_id, pipeline_version_id, pipeline_name, mode,"
                    " status, params_json, created_at, created_by) VALUES ('r00000000000100000000',"
                    " 'default', :p, :v, 'legacy', 'publish', 'succeeded', '{\"day\": \"2024-05-01\"}',"
                    " :at, 'bob')"
                ),
                {"p": pipeline_id, "v": version_id, "at": created_param},
            )

        store.migrate()

        assert store.revision() == head_revision()
        run = store.repo().get_run("r00000000000100000000")
        assert (run.pipeline_name, run.version, run.status, run.attempt) == ("legacy", 1, "succeeded", 0)
        assert run.params == {"day": "2024-05-01"}
        assert run.created_at == created
        assert store.repo().save_pipeline_version("legacy", "def", "{}", None) == (pipeline_id, 2, 2)


def test_postgres_url_uses_psycopg3() -> None:
    with Store("postgresql://postgres@127.0.0.1:5432/postgres") as store:
        assert store.engine.url.drivername == "postgresql+psycopg"
        assert store.dialect == "postgresql"


def test_unsupported_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Unsupported metadata store 'mysql'"):
        Store("mysql://root@localhost/meta")


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'meta.db'}") as store, store.engine.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 30000, "foreign_keys": 1}


# -- pipelines ------------------------------------------------------------------------------------


def test_pipeline_versions_are_numbered_and_deduplicated(repo: Repo) -> None:
    pid, v1, n1 = repo.save_pipeline_version("daily", "h1", '{"a": 1}', "pipelines/daily.yaml")
    _, v2, n2 = repo.save_pipeline_version("daily", "h2", '{"a": 2}', "pipelines/daily.yaml")
    again = repo.save_pipeline_version("daily", "h1", '{"a": 1}', "pipelines/daily.yaml")
    other_pid, _, other_n = repo.save_pipeline_version("weekly", "h1", '{"a": 1}', None)

    assert (n1, n2) == (1, 2)
    assert v1 != v2
    assert again == (pid, v1, 1)
    assert other_pid != pid
    assert other_n == 1
    version = repo.get_pipeline_version(v2)
    assert {k: version[k] for k in ("name", "version", "content_hash", "spec_json", "source_path")} == {
        "name": "daily",
        "version": 2,
        "content_hash": "h2",
        "spec_json": '{"a": 2}',
        "source_path": "pipelines/daily.yaml",
    }
    assert version["created_by"] == "alice"
    assert version["created_at"].tzinfo is not None
    with pytest.raises(LookupError):
        repo.get_pipeline_version(v2 + 1000)


def test_concurrent_saves_number_versions_without_gaps(repo: Repo) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        saved = list(pool.map(lambda i: repo.save_pipeline_version("busy", f"h{i}", "{}", None), range(12)))

    assert sorted(number for _, _, number in saved) == list(range(1, 13))
    assert len({pipeline_id for pipeline_id, _, _ in saved}) == 1


# -- runs -----------------------------------------------------------------------------------------


def test_create_get_and_list_runs(repo: Repo, make_run: MakeRun) -> None:
    first = make_run("daily", params={"day": "2024-05-01"})
    second = make_run("daily", mode="publish", status="running")
    third = make_run("weekly")

    assert all(RUN_ID.match(run_id) for run_id in (first, second, third))
    assert first[:13] <= second[:13] <= third[:13]  # ids start with the creation time in ms
    run = repo.get_run(first)
    assert isinstance(run, RunRecord)
    assert (run.id, run.org_id, run.pipeline_name, run.version, run.mode, run.status) == (
        first,
        "default",
        "daily",
        1,
        "sandbox",
        "queued",
    )
    assert run.params == {"day": "2024-05-01"}
    assert run.created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - run.created_at) < timedelta(minutes=1)
    assert (run.started_at, run.ended_at, run.staged, run.result, run.attempt) == (None, None, None, None, 0)
    assert run.created_by == "alice"

    assert [r.id for r in repo.list_runs()] == [third, second, first]
    assert [r.id for r in repo.list_runs(limit=2)] == [third, second]
    assert [r.id for r in repo.list_runs(status="running")] == [second]
    assert [r.id for r in repo.list_runs(pipeline="daily")] == [second, first]
    assert repo.list_runs(pipeline="nope") == []


def test_get_run_by_prefix(repo: Repo, make_run: MakeRun) -> None:
    run_id = make_run()

    assert repo.get_run(run_id[:-1]).id == run_id
    assert repo.get_run(run_id[:6]).id == run_id
    with pytest.raises(LookupError, match="not found"):
        repo.get_run(run_id[:5])  # too short to be a prefix
    with pytest.raises(LookupError, match="not found"):
        repo.get_run("rzzzzzzz")
    with pytest.raises(LookupError, match="not found"):
        repo.get_run(run_id[:6] + "%")

    make_run()  # created in the same second: shares the first hex digits of the clock
    with pytest.raises(LookupError, match="ambiguous"):
        repo.get_run(run_id[:6])


def test_idempotency_key_returns_the_existing_run(store: Store, repo: Repo, make_run: MakeRun) -> None:
    first = make_run(idempotency_key="nightly-2024-05-01")
    again = make_run(idempotency_key="nightly-2024-05-01", params={"ignored": True})
    other = make_run(idempotency_key="nightly-2024-05-02")
    elsewhere = make_run(on=store.repo("acme"), idempotency_key="nightly-2024-05-01")

    assert again == first
    assert len({first, other, elsewhere}) == 3
    assert repo.get_run(first).idempotency_key == "nightly-2024-05-01"
    assert len(repo.list_runs()) == 2


def test_update_run(repo: Repo, make_run: MakeRun) -> None:
    run_id = make_run()
    started = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    ended = started + timedelta(seconds=3)

    repo.update_run(run_id, status="running", started_at=started, attempt=1)
    repo.update_run(
        run_id,
        status="failed",
        ended_at=ended,
        error_class="CHECK_FAILED",
        error_message="2 rows violate not_null(country)",
        staged=[{"target": "analytics.daily", "rows": 3, "at": started}],
        result={"rows": Decimal("3.5")},
    )
    repo.update_run(run_id)  # nothing to change

    run = repo.get_run(run_id)
    assert run.started_at == started
    assert run.started_at is not None and run.started_at.utcoffset() == timedelta(0)
    assert run.ended_at == ended
    assert (run.status, run.attempt, run.error_class) == ("failed", 1, "CHECK_FAILED")
    assert run.error_message == "2 rows violate not_null(country)"
    assert run.staged == [{"target": "analytics.daily", "rows": 3, "at": str(started)}]
    assert run.result == {"rows": "3.5"}

    repo.update_run(run_id, staged=None, result=None)
    assert (repo.get_run(run_id).staged, repo.get_run(run_id).result) == (None, None)
    with pytest.raises(TypeError, match="pipeline_name"):
        repo.update_run(run_id, pipeline_name="renamed")
    with pytest.raises(ValueError, match="timezone-aware"):
        repo.update_run(run_id, ended_at=datetime(2024, 5, 1))
    with pytest.raises(LookupError):
        repo.update_run("r000000000000deadbeef", status="failed")


def test_create_run_validates(repo: Repo) -> None:
    pipeline_id, version_id, _ = repo.save_pipeline_version("daily", "h", "{}", None)
    with pytest.raises(ValueError, match="sandbox, publish"):
        repo.create_run(
            pipeline_id=pipeline_id, version_id=version_id, pipeline_name="daily", mode="dry", params={}
        )
    with pytest.raises(LookupError):
        repo.create_run(
            pipeline_id=pipeline_id,
            version_id=version_id + 1,
            pipeline_name="daily",
            mode="sandbox",
            params={},
        )


# -- steps ----------------------------------------------------------------------------------------


def test_steps_upsert_and_order(repo: Repo, make_run: MakeRun) -> None:
    run_id = make_run()
    repo.start_step(run_id, "orders", "extract")
    repo.start_step(run_id, "customers", "extract")
    repo.finish_step(run_id, "orders", status="succeeded", rows_out=10, bytes=2048, output_hash="abc")
    repo.finish_step(
        run_id,
        "customers",
        status="failed",
        failure_class="TRANSIENT",
        message="connection reset",
    )
    repo.start_step(run_id, "customers", "extract")  # the retry
    repo.finish_step(run_id, "customers", status="succeeded", rows_in=5, rows_out=5)
    repo.start_step(run_id, "daily", "sql")

    steps = repo.list_steps(run_id)
    assert [s.step_id for s in steps] == ["orders", "customers", "daily"]
    orders, customers, daily = steps
    assert isinstance(orders, StepRecord)
    assert (orders.kind, orders.status, orders.rows_out, orders.bytes, orders.output_hash) == (
        "extract",
        "succeeded",
        10,
        2048,
        "abc",
    )
    assert orders.retry_count == 0
    assert orders.started_at is not None and orders.ended_at is not None
    assert orders.started_at.tzinfo is not None
    assert orders.duration_ms is not None and orders.duration_ms >= 0
    assert (customers.status, customers.retry_count, customers.rows_in, customers.rows_out) == (
        "succeeded",
        1,
        5,
        5,
    )
    assert (customers.failure_class, customers.message) == (None, None)  # cleared by the retry
    assert (daily.status, daily.ended_at, daily.duration_ms) == ("running", None, None)

    with pytest.raises(LookupError, match="never started"):
        repo.finish_step(run_id, "publish", status="succeeded")
    with pytest.raises(LookupError):
        repo.start_step("r000000000000deadbeef", "orders", "extract")


def test_concurrent_step_bookkeeping(repo: Repo, make_run: MakeRun) -> None:
    run_ids = [make_run(spec=f'{{"n": {i}}}') for i in range(4)]

    def work(run_id: str) -> None:
        for i in range(25):
            repo.start_step(run_id, f"s{i:02d}", "sql")
            repo.finish_step(run_id, f"s{i:02d}", status="succeeded", rows_out=i)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(work, run_id) for run_id in run_ids]:
            future.result()

    for run_id in run_ids:
        steps = repo.list_steps(run_id)
        assert [s.step_id for s in steps] == [f"s{i:02d}" for i in range(25)]
        assert {s.status for s in steps} == {"succeeded"}


def test_check_results_round_trip(repo: Repo, make_run: MakeRun) -> None:
    run_id = make_run()
    results = [
        {
            "step_id": "daily_ok",
            "rule_name": "not_null(country)",
            "rule": "not_null",
            "column": "country",
            "severity": "error",
            "passed": False,
            "violations": 2,
            "samples": [
                {"country": None, "day": datetime(2024, 5, 1, tzinfo=UTC), "revenue": Decimal("1.5")}
            ],
        },
        {
            "step_id": "daily_ok",
            "rule_name": "row_count(min=1)",
            "rule": "row_count",
            "column": None,
            "severity": "warn",
            "passed": True,
            "violations": 0,
            "samples": [],
        },
    ]
    repo.add_check_results(run_id, results)
    repo.add_check_results(run_id, [])

    back = repo.list_check_results(run_id)
    assert back[1] == results[1]
    assert {k: v for k, v in back[0].items() if k != "samples"} == {
        k: v for k, v in results[0].items() if k != "samples"
    }
    assert back[0]["samples"] == [{"country": None, "day": "2024-05-01 00:00:00+00:00", "revenue": "1.5"}]


def test_schema_snapshots_round_trip(repo: Repo, make_run: MakeRun) -> None:
    run_id = make_run()
    repo.add_schema_snapshot(
        run_id,
        connection="warehouse",
        table="analytics.daily",
        phase="before",
        exists=False,
        columns=[],
        rows=0,
    )
    repo.add_schema_snapshot(
        run_id,
        connection="warehouse",
        table="analytics.daily",
        phase="after",
        exists=True,
        columns=[("country", "VARCHAR"), ("revenue", "DECIMAL(18,2)")],
        rows=42,
    )
    repo.add_schema_snapshot(
        None, connection="warehouse", table="analytics.other", phase="before", exists=True, columns=[], rows=1
    )

    snapshots = repo.list_schema_snapshots(run_id)
    assert [{k: v for k, v in s.items() if k != "taken_at"} for s in snapshots] == [
        {
            "run_id": run_id,
            "connection": "warehouse",
            "table": "analytics.daily",
            "phase": "before",
            "exists": False,
            "columns": [],
            "rows": 0,
        },
        {
            "run_id": run_id,
            "connection": "warehouse",
            "table": "analytics.daily",
            "phase": "after",
            "exists": True,
            "columns": [("country", "VARCHAR"), ("revenue", "DECIMAL(18,2)")],
            "rows": 42,
        },
    ]
    assert all(s["taken_at"].tzinfo is not None for s in snapshots)
    with pytest.raises(ValueError, match="before, after"):
        repo.add_schema_snapshot(
            run_id, connection="w", table="t", phase="during", exists=True, columns=[], rows=0
        )


# -- org isolation --------------------------------------------------------------------------------


def test_orgs_are_isolated(store: Store, make_run: MakeRun) -> None:
    a, b = store.repo("a", user="ann"), store.repo("b", user="ben")
    run_id = make_run(on=a)
    a.start_step(run_id, "orders", "extract")
    a.add_check_results(
        run_id,
        [
            {
                "step_id": "x",
                "rule_name": "r",
                "rule": "unique",
                "severity": "error",
                "passed": True,
                "violations": 0,
                "samples": [],
            }
        ],
    )
    a.add_schema_snapshot(run_id, connection="w", table="t", phase="before", exists=True, columns=[], rows=0)
    version_id = a.get_run(run_id).pipeline_version_id

    assert a.get_run(run_id).org_id == "a"
    assert a.get_run(run_id).created_by == "ann"
    assert b.list_runs() == []
    assert store.repo().list_runs() == []
    calls: list[Callable[[], object]] = [
        lambda: b.get_run(run_id),
        lambda: b.get_run(run_id[:8]),
        lambda: b.update_run(run_id, status="cancelled"),
        lambda: b.start_step(run_id, "orders", "extract"),
        lambda: b.finish_step(run_id, "orders", status="failed"),
        lambda: b.list_steps(run_id),
        lambda: b.add_check_results(run_id, []),
        lambda: b.list_check_results(run_id),
        lambda: b.list_schema_snapshots(run_id),
        lambda: b.add_schema_snapshot(
            run_id, connection="w", table="t", phase="after", exists=True, columns=[], rows=0
        ),
        lambda: b.get_pipeline_version(version_id),
    ]
    for call in calls:
        with pytest.raises(LookupError):
            call()
    with pytest.raises(RecordNotFound):
        b.create_run(
            pipeline_id=a.get_run(run_id).pipeline_id,
            version_id=version_id,
            pipeline_name="daily_sales",
            mode="sandbox",
            params={},
        )
    # Same pipeline name in another org is another pipeline.
    assert b.save_pipeline_version("daily_sales", "hash-{}", "{}", None)[2] == 1
    assert a.get_run(run_id).status == "queued"
    assert [s.status for s in a.list_steps(run_id)] == ["running"]


def test_head_revision_constant_matches_alembic_head() -> None:
    from alembic.script import ScriptDirectory

    from queryforge.store.repo import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_ensure_schema_migrates_a_new_database_once(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'm.db'}") as store:
        assert store.revision() is None
        store.ensure_schema()
        assert store.revision() == head_revision()
        store.ensure_schema()
        assert store.revision() == head_revision()
