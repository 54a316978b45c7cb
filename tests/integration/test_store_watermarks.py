"""High-water marks of incremental extracts in the metadata store, on SQLite and PostgreSQL.

Like test_store.py, each PostgreSQL test gets a fresh database; deselect them with `-m "not postgres"`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from queryforge.store import RecordNotFound, Repo, Store
from queryforge.store.repo import HEAD_REVISION, alembic_config, decode_watermark, encode_watermark


def make_run(repo: Repo, name: str = "orders_incremental") -> str:
    pipeline_id, version_id, _ = repo.save_pipeline_version(name, f"hash-{name}", "{}", None)
    return repo.create_run(
        pipeline_id=pipeline_id, version_id=version_id, pipeline_name=name, mode="publish", params={}
    )


# Every supported type, with the values that are easy to lose on the way through a database.
VALUES: list[tuple[str, Any]] = [
    ("int", 0),
    ("int", -42),
    ("int", 2**63 + 1),  # wider than BIGINT: stored as text, not as a number
    ("float", 0.1),
    ("float", -1.5e-300),
    ("float", 1e100),
    ("decimal", Decimal("1.50")),
    ("decimal", Decimal("12345678901234567890.123456789")),
    ("decimal", Decimal("1E+3")),
    ("decimal", Decimal("-0.00")),
    ("string", "2024-05-01|order-0042"),
    ("string", ""),
    ("string", "naïve 日本 ' \" \\ \n"),
    ("date", date(2024, 2, 29)),
    ("timestamp", datetime(2024, 5, 1, 12, 30, 45, 123456)),
    ("timestamp", datetime(2024, 5, 1)),
    ("timestamptz", datetime(2024, 5, 1, 12, 30, 45, 1, tzinfo=UTC)),
    ("timestamptz", datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-7)))),
    ("timestamptz", datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    ("timestamptz", datetime(2024, 7, 1, 2, 30, 0, 500, tzinfo=ZoneInfo("Europe/Berlin"))),
    ("bool", True),
    ("bool", False),
]


def same(stored: Any, original: Any) -> bool:
    """Equal, of the same type, and for aware datetimes at the same UTC offset; Decimals keep scale."""
    if type(stored) is not type(original) or stored != original:
        return False
    if isinstance(original, Decimal):
        return stored.as_tuple() == original.as_tuple()
    if isinstance(original, datetime):
        return stored.utcoffset() == original.utcoffset() and stored.microsecond == original.microsecond
    return True


# -- migration ------------------------------------------------------------------------------------


def test_head_is_0003(store: Store) -> None:
    assert HEAD_REVISION == "0004"
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == "0004"
    assert store.revision() == "0004"
    with store.engine.connect() as conn:
        inspector = inspect(conn)
        assert inspector.has_table("watermarks")
        uniques = {u["name"]: u["column_names"] for u in inspector.get_unique_constraints("watermarks")}
        indexes = {i["name"] for i in inspector.get_indexes("watermarks")}
        fks = [(fk["name"], fk["referred_table"]) for fk in inspector.get_foreign_keys("watermarks")]
    assert uniques["uq_watermarks_org_id_pipeline_step_id"] == ["org_id", "pipeline", "step_id"]
    assert "ix_watermarks_org_id" in indexes
    assert fks == [("fk_watermarks_run_id_runs", "runs")]


def test_downgrade_to_0002_drops_the_table_and_upgrade_restores_it(store: Store, repo: Repo) -> None:
    run_id = make_run(repo)
    repo.set_watermark("orders_incremental", "extract", 7, run_id=run_id)

    with store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    assert store.revision() == "0002"
    with store.engine.connect() as conn:
        assert not inspect(conn).has_table("watermarks")
        assert inspect(conn).has_table("audit_log")  # 0002's tables stay
        assert conn.execute(text("SELECT status FROM runs WHERE id = :r"), {"r": run_id}).scalar() == "queued"

    store.migrate()

    assert store.revision() == "0004"
    assert repo.get_watermark("orders_incremental", "extract") is None  # the marks went with the table
    repo.set_watermark("orders_incremental", "extract", 8, run_id=run_id)
    assert repo.get_watermark("orders_incremental", "extract") == 8


# -- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value_type", "value"), VALUES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(VALUES)])
def test_encoding_round_trips(value_type: str, value: Any) -> None:
    kind, encoded = encode_watermark(value)
    assert kind == value_type
    assert same(decode_watermark(kind, encoded), value)


def test_encoding_is_canonical_text() -> None:
    assert encode_watermark(True) == ("bool", "true")
    assert encode_watermark(-42) == ("int", "-42")
    assert encode_watermark(0.1) == ("float", "0.1")
    assert encode_watermark(Decimal("1.50")) == ("decimal", "1.50")
    assert encode_watermark(date(2024, 5, 1)) == ("date", "2024-05-01")
    assert encode_watermark(datetime(2024, 5, 1, 12)) == ("timestamp", "2024-05-01T12:00:00.000000")
    assert encode_watermark(datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))) == (
        "timestamptz",
        "2024-05-01T12:00:00.000000+02:00",
    )


def test_every_type_round_trips_through_the_store(repo: Repo) -> None:
    for i, (_, value) in enumerate(VALUES):
        repo.set_watermark("p", f"step_{i:02d}", value)

    for i, (value_type, value) in enumerate(VALUES):
        stored = repo.get_watermark("p", f"step_{i:02d}")
        assert same(stored, value), (i, value_type, value, stored)
    listed = repo.list_watermarks("p")
    assert [m["value_type"] for m in listed] == [value_type for value_type, _ in VALUES]
    for mark, (_, value) in zip(listed, VALUES, strict=True):
        assert same(mark["value"], value), (mark, value)


def test_stored_as_canonical_text(store: Store, repo: Repo) -> None:
    repo.set_watermark("p", "s", Decimal("1.50"))
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT org_id, value_type, value FROM watermarks")).one()
    assert tuple(row) == ("default", "decimal", "1.50")


def test_unsupported_types_raise_type_error(repo: Repo) -> None:
    for value in (None, b"bytes", [1], {"a": 1}, object(), 1 + 2j, timedelta(seconds=1)):
        with pytest.raises(TypeError, match="Unsupported watermark type"):
            repo.set_watermark("p", "s", value)
    assert repo.list_watermarks() == []


def test_values_that_cannot_be_a_mark_raise_value_error(repo: Repo) -> None:
    for value in (float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity"), "a\x00b"):
        with pytest.raises(ValueError):
            repo.set_watermark("p", "s", value)
    with pytest.raises(ValueError, match="step_id"):
        repo.set_watermark("p", "x" * 256, 1)
    assert repo.list_watermarks() == []


def test_ambiguous_local_time_keeps_its_instant(repo: Repo) -> None:
    # 02:30 happens twice in Berlin on 2024-10-27; `fold` picks which. Such times never compare equal
    # to another zone's (PEP 495), so compare instants and offsets.
    berlin = ZoneInfo("Europe/Berlin")
    for fold, hours in ((0, 2), (1, 1)):
        value = datetime(2024, 10, 27, 2, 30, tzinfo=berlin, fold=fold)
        repo.set_watermark("p", f"fold{fold}", value)
        stored = repo.get_watermark("p", f"fold{fold}")
        assert stored.timestamp() == value.timestamp()
        assert stored.utcoffset() == timedelta(hours=hours)


def test_decoding_rejects_unknown_types() -> None:
    with pytest.raises(ValueError, match="Unknown watermark type"):
        decode_watermark("uuid", "x")
    with pytest.raises(ValueError):
        decode_watermark("timestamptz", "2024-05-01T12:00:00")


# -- get, set, list, delete -----------------------------------------------------------------------


def test_missing_watermark_is_none(repo: Repo) -> None:
    assert repo.get_watermark("p", "s") is None
    assert repo.list_watermarks() == []


def test_set_overwrites_value_type_and_run(repo: Repo) -> None:
    first, second = make_run(repo), make_run(repo)
    repo.set_watermark("p", "s", 10, run_id=first)
    [before] = repo.list_watermarks()

    repo.set_watermark("p", "s", datetime(2024, 5, 2, tzinfo=UTC), run_id=second)
    assert repo.get_watermark("p", "s") == datetime(2024, 5, 2, tzinfo=UTC)
    [after] = repo.list_watermarks()
    assert (after["value_type"], after["run_id"]) == ("timestamptz", second)
    assert after["updated_at"] >= before["updated_at"]
    assert after["updated_at"].tzinfo is not None

    repo.set_watermark("p", "s", 11)  # without a run: the mark no longer names one
    assert repo.list_watermarks()[0]["run_id"] is None
    assert len(repo.list_watermarks()) == 1


def test_list_is_ordered_and_filtered_by_pipeline(repo: Repo) -> None:
    run_id = make_run(repo)
    repo.set_watermark("b", "s2", 2)
    repo.set_watermark("a", "s9", "z", run_id=run_id)
    repo.set_watermark("b", "s1", 1)

    marks = repo.list_watermarks()
    assert [(m["pipeline"], m["step_id"], m["value"]) for m in marks] == [
        ("a", "s9", "z"),
        ("b", "s1", 1),
        ("b", "s2", 2),
    ]
    assert set(marks[0]) == {"pipeline", "step_id", "value_type", "value", "run_id", "updated_at"}
    assert marks[0]["run_id"] == run_id
    assert [m["step_id"] for m in repo.list_watermarks("b")] == ["s1", "s2"]
    assert repo.list_watermarks("c") == []


def test_delete_one_step_or_a_whole_pipeline(repo: Repo) -> None:
    repo.set_watermark("p", "s1", 1)
    repo.set_watermark("p", "s2", 2)
    repo.set_watermark("p", "s3", 3)
    repo.set_watermark("q", "s1", 4)

    assert repo.delete_watermark("p", "s1") == 1
    assert repo.delete_watermark("p", "s1") == 0
    assert repo.get_watermark("p", "s1") is None
    assert repo.get_watermark("p", "s2") == 2

    assert repo.delete_watermark("p") == 2
    assert repo.delete_watermark("p") == 0
    assert repo.list_watermarks("p") == []
    assert repo.get_watermark("q", "s1") == 4  # another pipeline's step of the same name stays

    repo.set_watermark("p", "s1", 5)  # after a full refresh, the next publish sets it again
    assert repo.get_watermark("p", "s1") == 5


def test_unknown_run_id_raises_and_stores_nothing(repo: Repo) -> None:
    with pytest.raises(RecordNotFound):
        repo.set_watermark("p", "s", 1, run_id="r000000000000deadbeef")
    assert repo.get_watermark("p", "s") is None

    repo.set_watermark("p", "s", 1)
    with pytest.raises(LookupError):
        repo.set_watermark("p", "s", 2, run_id="r000000000000deadbeef")
    assert repo.get_watermark("p", "s") == 1  # the failed update left the old mark


def test_orgs_are_isolated(store: Store) -> None:
    a, b = store.repo("acme", user="alice"), store.repo("globex", user="bob")
    run_a = make_run(a)
    a.set_watermark("p", "s", 1, run_id=run_a)

    assert b.get_watermark("p", "s") is None
    assert b.list_watermarks() == []
    assert b.delete_watermark("p") == 0
    assert b.delete_watermark("p", "s") == 0
    with pytest.raises(RecordNotFound):  # another org's run cannot be named
        b.set_watermark("p", "s", 2, run_id=run_a)

    b.set_watermark("p", "s", 2)  # same pipeline and step in another org: another mark
    assert a.get_watermark("p", "s") == 1
    assert b.get_watermark("p", "s") == 2
    assert [m["value"] for m in a.list_watermarks()] == [1]
    assert a.delete_watermark("p") == 1
    assert b.get_watermark("p", "s") == 2


def test_concurrent_first_sets_make_one_mark(store: Store) -> None:
    """Writers racing to create the same mark all succeed (the loser of the insert updates instead)."""
    workers = 8
    barrier = threading.Barrier(workers)

    def write(i: int) -> None:
        repo = store.repo("default", user=f"w{i}")
        barrier.wait()
        repo.set_watermark("raced", "s", i)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, range(workers)))

    marks = store.repo().list_watermarks("raced")
    assert len(marks) == 1
    assert marks[0]["value"] in range(workers)
