"""Repair logs and the hash-chained audit log of the metadata store, on SQLite and PostgreSQL.

Like test_store.py, each PostgreSQL test gets a fresh database; deselect them with `-m "not postgres"`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from queryforge.store import RecordNotFound, Repo, Store
from queryforge.store.repo import alembic_config, audit_hash

ASK_ID = re.compile(r"^a[0-9a-f]{12}[0-9a-f]{8}$")
HASH = re.compile(r"^[0-9a-f]{64}$")


def make_run(repo: Repo, name: str = "asked") -> str:
    pipeline_id, version_id, _ = repo.save_pipeline_version(name, f"hash-{name}", "{}", None)
    return repo.create_run(
        pipeline_id=pipeline_id, version_id=version_id, pipeline_name=name, mode="sandbox", params={}
    )


# -- migration ------------------------------------------------------------------------------------


def test_upgrade_keeps_runs(store_url: str) -> None:
    """Runs written before the queue columns existed (revision 0003) survive the upgrade."""
    with Store(store_url) as store:
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0003")
            version = conn.execute(
                text(
                    "INSERT INTO pipelines (org_id, name, created_at, created_by) "
                    "VALUES ('default', 'asked', CURRENT_TIMESTAMP, 'bob') RETURNING id"
                )
            ).scalar_one()
            version_id = conn.execute(
                text(
                    "INSERT INTO pipeline_versions (org_id, pipeline_id, version, content_hash, spec_json, "
                    "created_at, created_by) VALUES ('default', :p, 1, 'h', '{}', CURRENT_TIMESTAMP, 'bob') "
                    "RETURNING id"
                ),
                {"p": version},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO runs (id, org_id, pipeline_id, pipeline_version_id, pipeline_name, mode, "
                    "status, params_json, created_at, created_by, attempt) VALUES ('r0003', 'default', :p, "
                    ":v, 'asked', 'publish', 'succeeded', '{}', CURRENT_TIMESTAMP, 'bob', 0)"
                ),
                {"p": version, "v": version_id},
            )
        with store.engine.connect() as conn:
            assert not inspect(conn).has_table("run_events")
        run_id = "r0003"

        store.migrate()

        assert store.revision() == ScriptDirectory.from_config(alembic_config()).get_current_head() == "0004"
        repo = store.repo("default", user="bob")
        assert repo.get_run(run_id).pipeline_name == "asked"
        assert repo.get_run(run_id).lost_leases == 0
        repo.start_step(run_id, "orders", "extract")
        assert [s.step_id for s in repo.list_steps(run_id)] == ["orders"]
        log_id = repo.add_repair_log(ask_id=repo.new_ask_id(), attempt=1, request="q", pipeline_json="{}")
        repo.update_repair_log(log_id, run_id=run_id)
        assert [log["run_id"] for log in repo.list_repair_logs(run_id=run_id)] == [run_id]
        assert repo.audit(action="publish", decision="info", reason="after upgrade") == 1


# -- repair logs ----------------------------------------------------------------------------------


def test_repair_logs_group_attempts_of_an_ask(repo: Repo) -> None:
    ask, other_ask = repo.new_ask_id(), repo.new_ask_id()
    assert ASK_ID.match(ask) and ask != other_ask
    first_run, second_run, other_run = make_run(repo, "p1"), make_run(repo, "p2"), make_run(repo, "p3")
    prompt = "daily revenue by country " * 400  # 10 000 characters

    # Logged out of order: listing sorts by attempt number.
    second = repo.add_repair_log(
        ask_id=ask, attempt=2, request=prompt, pipeline_json='{"v": 2}', run_id=second_run
    )
    first = repo.add_repair_log(
        ask_id=ask,
        attempt=1,
        request=prompt,
        pipeline_json='{"v": 1}',
        run_id=first_run,
        error_class="VALIDATION_FAILED",
        original_error="unknown column 'contry'",
        fix_reason="renamed contry to country",
        repair_successful=False,
    )
    third = repo.add_repair_log(ask_id=ask, attempt=3, request=prompt, pipeline_json='{"v": 3}')
    repo.add_repair_log(ask_id=other_ask, attempt=1, request="other", pipeline_json="{}", run_id=other_run)

    logs = repo.list_repair_logs(ask_id=ask)
    assert [log["id"] for log in logs] == [first, second, third]
    assert [log["attempt_number"] for log in logs] == [1, 2, 3]
    assert [log["run_id"] for log in logs] == [first_run, second_run, None]
    assert set(logs[0]) == {
        "id",
        "org_id",
        "ask_id",
        "run_id",
        "attempt_number",
        "request",
        "error_class",
        "original_error",
        "fix_reason",
        "pipeline_json",
        "repair_successful",
        "created_at",
        "updated_at",
        "created_by",
    }
    assert {k: logs[0][k] for k in ("org_id", "ask_id", "error_class", "original_error", "fix_reason")} == {
        "org_id": "default",
        "ask_id": ask,
        "error_class": "VALIDATION_FAILED",
        "original_error": "unknown column 'contry'",
        "fix_reason": "renamed contry to country",
    }
    assert (logs[0]["repair_successful"], logs[1]["repair_successful"]) == (False, None)
    assert logs[0]["pipeline_json"] == '{"v": 1}'
    assert logs[0]["request"] == prompt[:4000]
    assert logs[0]["created_by"] == "alice"
    assert logs[0]["created_at"].tzinfo is not None
    assert abs(datetime.now(UTC) - logs[0]["created_at"]) < timedelta(minutes=1)

    # Any attempt's run finds the whole ask.
    assert repo.list_repair_logs(run_id=first_run) == logs
    assert repo.list_repair_logs(run_id=second_run) == logs
    assert [log["ask_id"] for log in repo.list_repair_logs(run_id=other_run)] == [other_ask]
    assert repo.list_repair_logs(ask_id=ask, run_id=other_run) == []
    assert repo.list_repair_logs(run_id="r000000000000deadbeef") == []
    assert repo.list_repair_logs(ask_id="a-unknown") == []
    assert len(repo.list_repair_logs()) == 4


def test_update_repair_log(repo: Repo) -> None:
    ask = repo.new_ask_id()
    log_id = repo.add_repair_log(ask_id=ask, attempt=1, request="q", pipeline_json="{}")
    before = repo.list_repair_logs(ask_id=ask)[0]
    run_id = make_run(repo)

    repo.update_repair_log(
        log_id, run_id=run_id, error_class="CHECK_FAILED", original_error="2 nulls", repair_successful=None
    )
    repo.update_repair_log(log_id, fix_reason="filtered nulls", repair_successful=True)

    after = repo.list_repair_logs(ask_id=ask)[0]
    assert {k: after[k] for k in ("run_id", "error_class", "original_error", "fix_reason")} == {
        "run_id": run_id,
        "error_class": "CHECK_FAILED",
        "original_error": "2 nulls",
        "fix_reason": "filtered nulls",
    }
    assert after["repair_successful"] is True
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] >= before["updated_at"]
    with pytest.raises(TypeError, match="pipeline_json"):
        repo.update_repair_log(log_id, pipeline_json="{}")
    with pytest.raises(RecordNotFound):
        repo.update_repair_log(log_id + 1000, fix_reason="x")
    with pytest.raises(LookupError):
        repo.update_repair_log(log_id, run_id="r000000000000deadbeef")
    with pytest.raises(LookupError):
        repo.add_repair_log(
            ask_id=ask, attempt=2, request="q", pipeline_json="{}", run_id="r000000000000deadbeef"
        )
    with pytest.raises(ValueError, match="error_class"):
        repo.add_repair_log(ask_id=ask, attempt=2, request="q", pipeline_json="{}", error_class="E" * 33)


# -- audit log ------------------------------------------------------------------------------------


def test_audit_appends_a_verifiable_chain(repo: Repo) -> None:
    assert repo.verify_audit_chain() is None  # empty
    at = datetime(2024, 5, 1, tzinfo=UTC)
    seqs = [
        repo.audit(action="sql_policy", decision="allow", reason="read-only SELECT"),
        repo.audit(
            action="plan_validation",
            decision="rewrite",
            reason="added LIMIT",
            details={"limit": 1000, "sql": "SELECT *\nFROM t", "at": at, "cost": Decimal("1.5"), 3: "x"},
        ),
        repo.audit(action="cost_gate", decision="block", reason="über budget", details={"bytes": 10**12}),
        repo.audit(action="publish", decision="info", reason="published", details={}),
    ]

    assert seqs == [1, 2, 3, 4]
    assert repo.verify_audit_chain() is None
    entries = repo.list_audit()
    assert [e["seq"] for e in entries] == [4, 3, 2, 1]
    assert set(entries[0]) == {
        "seq",
        "ts",
        "actor",
        "action",
        "decision",
        "reason",
        "details",
        "prev_hash",
        "hash",
    }
    second = entries[2]
    assert (second["actor"], second["action"], second["decision"], second["reason"]) == (
        "alice",
        "plan_validation",
        "rewrite",
        "added LIMIT",
    )
    assert second["details"] == {
        "limit": 1000,
        "sql": "SELECT *\nFROM t",
        "at": str(at),
        "cost": "1.5",
        "3": "x",
    }
    assert entries[3]["details"] == {}
    assert entries[3]["prev_hash"] == ""
    assert all(HASH.match(e["hash"]) for e in entries)
    assert [e["prev_hash"] for e in entries[:3]] == [e["hash"] for e in entries[1:]]
    assert second["ts"].tzinfo is not None

    # The documented formula, recomputed independently.
    canonical = json.dumps(
        {
            "org_id": "default",
            "seq": 2,
            "ts": second["ts"].astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": "alice",
            "action": "plan_validation",
            "decision": "rewrite",
            "reason": "added LIMIT",
            "details": second["details"],
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    expected = hashlib.sha256((second["prev_hash"] + canonical).encode("utf-8")).hexdigest()
    assert second["hash"] == expected
    assert (
        audit_hash(
            second["prev_hash"],
            org_id="default",
            seq=2,
            ts=second["ts"],
            actor="alice",
            action="plan_validation",
            decision="rewrite",
            reason="added LIMIT",
            details=second["details"],
        )
        == expected
    )

    assert [e["seq"] for e in repo.list_audit(limit=2)] == [4, 3]
    assert [e["seq"] for e in repo.list_audit(action="cost_gate")] == [3]
    assert repo.list_audit(action="requeue") == []
    with pytest.raises(ValueError, match="allow, rewrite, block, info"):
        repo.audit(action="publish", decision="deny", reason="x")
    with pytest.raises(ValueError, match="action"):
        repo.audit(action="x" * 65, decision="info", reason="x")
    assert repo.list_audit(limit=1)[0]["seq"] == 4


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("reason", "nothing to see here"),
        ("details_json", '{"bytes":1}'),
        ("decision", "allow"),
        ("prev_hash", ""),
    ],
)
def test_tampering_is_detected(store: Store, repo: Repo, column: str, value: str) -> None:
    for i in range(5):
        repo.audit(action="cost_gate", decision="block", reason=f"over budget #{i}", details={"bytes": i})
    other = store.repo("acme", user="ann")
    other.audit(action="publish", decision="info", reason="untouched")
    assert repo.verify_audit_chain() is None

    with store.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE audit_log SET {column} = :value WHERE org_id = 'default' AND seq = 3"),
            {"value": value},
        )

    assert repo.verify_audit_chain() == 3
    assert other.verify_audit_chain() is None


def test_deleting_a_row_is_detected(store: Store, repo: Repo) -> None:
    for i in range(4):
        repo.audit(action="requeue", decision="info", reason=f"#{i}")
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE org_id = 'default' AND seq = 2"))

    assert repo.verify_audit_chain() == 3


def test_concurrent_audit_calls_number_without_gaps(store: Store) -> None:
    start = threading.Barrier(20)

    def write(i: int) -> int:
        repo = store.repo("default", user=f"worker{i}")
        start.wait(timeout=30)
        return repo.audit(action="sql_policy", decision="allow", reason=f"query {i}", details={"i": i})

    with ThreadPoolExecutor(max_workers=20) as pool:
        seqs = list(pool.map(write, range(20)))

    assert sorted(seqs) == list(range(1, 21))
    repo = store.repo("default")
    assert repo.verify_audit_chain() is None
    entries = repo.list_audit(limit=100)
    assert [e["seq"] for e in entries] == list(range(20, 0, -1))
    assert sorted(e["details"]["i"] for e in entries) == list(range(20))


# -- org isolation --------------------------------------------------------------------------------


def test_orgs_are_isolated(store: Store) -> None:
    a, b = store.repo("a", user="ann"), store.repo("b", user="ben")
    run_id = make_run(a)
    ask = a.new_ask_id()
    log_id = a.add_repair_log(ask_id=ask, attempt=1, request="q", pipeline_json="{}", run_id=run_id)
    a.audit(action="publish", decision="info", reason="a1")
    a.audit(action="publish", decision="info", reason="a2")

    assert b.list_repair_logs() == []
    assert b.list_repair_logs(ask_id=ask) == []
    assert b.list_repair_logs(run_id=run_id) == []
    with pytest.raises(LookupError):
        b.update_repair_log(log_id, repair_successful=True)
    with pytest.raises(LookupError):  # another org's run cannot be referenced
        b.add_repair_log(ask_id=ask, attempt=2, request="q", pipeline_json="{}", run_id=run_id)
    assert b.list_audit() == []
    assert b.verify_audit_chain() is None
    assert b.audit(action="publish", decision="info", reason="b1") == 1  # each org counts from 1
    assert a.audit(action="publish", decision="info", reason="a3") == 3

    assert [log["repair_successful"] for log in a.list_repair_logs(ask_id=ask)] == [None]
    assert [e["reason"] for e in a.list_audit()] == ["a3", "a2", "a1"]
    assert [e["reason"] for e in b.list_audit()] == ["b1"]
    assert a.verify_audit_chain() is None and b.verify_audit_chain() is None


def test_ensure_schema_reaches_the_new_head(tmp_path: Path) -> None:
    from queryforge.store.repo import HEAD_REVISION

    with Store(f"sqlite:///{tmp_path / 'm.db'}") as store:
        store.ensure_schema()
        assert store.revision() == HEAD_REVISION == "0004"
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        assert store.revision() == "0001"
        store.ensure_schema()
        assert store.revision() == "0004"
