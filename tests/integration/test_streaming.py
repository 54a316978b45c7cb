"""Streaming pipelines end to end against the real brokers and databases of this machine.

NATS JetStream, Redis Streams and a file-drop folder feed micro-batches into DuckDB, PostgreSQL,
MariaDB and SQLite. Every sink is read back with the database's own driver and compared with what
the test published (ids, rows, sums computed here in Python), and the committed positions in
`_qf_stream_batches` with the broker's own sequence numbers / entry ids.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pymysql
import pytest
import redis
import yaml

from queryforge.errors import ChecksFailed, SpecError, UserError
from queryforge.runs.stream import StreamStatus
from queryforge.workspace import Workspace
from tests.conftest import CliResult
from tests.services import (
    NATS_URL,
    REDIS_URL,
    mysql_database,
    nats_publish,
    nats_subject,
    postgres_database,
    redis_publish,
    redis_stream_key,
)

WAREHOUSE = "duckdb:.queryforge/warehouse.duckdb"
FAST = {"max_rows": 100, "max_wait_s": 0.2}

Rows = list[dict[str, Any]]


# ---------------------------------------------------------------- helpers
@pytest.fixture
def build(tmp_path: Path) -> Iterator[Callable[..., Workspace]]:
    """build(connections, *pipelines) -> an open Workspace whose queryforge.yaml has the default
    `warehouse` DuckDB connection plus `connections`, and pipelines/<name>.yaml for each pipeline."""
    opened: list[Workspace] = []

    def make(connections: dict[str, dict[str, Any]], *pipelines: dict[str, Any]) -> Workspace:
        root = tmp_path / "ws"
        Workspace.init(root, bare=True).close()
        config = {
            "name": "ws",
            "target": "warehouse",
            "connections": {"warehouse": {"url": WAREHOUSE, "writable": True}, **connections},
        }
        (root / "queryforge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for pipeline in pipelines:
            write_pipeline(root, pipeline)
        ws = Workspace(root)
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()


def write_pipeline(root: Path, pipeline: dict[str, Any]) -> None:
    (root / "pipelines" / f"{pipeline['name']}.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


def streaming(
    name: str,
    extract: dict[str, Any],
    *middle: dict[str, Any],
    load: dict[str, Any],
    trigger: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A streaming pipeline: step `incoming` reads the stream, then `middle`, then step `sink` loads."""
    return {
        "name": name,
        "mode": "streaming",
        "trigger": trigger or FAST,
        **extra,
        "steps": [{"id": "incoming", "extract": extract}, *middle, {"id": "sink", "load": load}],
    }


def encode(rows: Rows) -> list[bytes]:
    return [json.dumps(row).encode() for row in rows]


def redis_ids(key: str) -> list[str]:
    """The entry ids of a Redis stream, asked of Redis itself."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return [str(entry_id) for entry_id, _ in client.xrange(key) or []]
    finally:
        client.close()


def stream(
    ws: Workspace, pipeline: str, max_batches: int, timeout: float = 20, **kwargs: Any
) -> tuple[str, StreamStatus]:
    """`ws.stream` with a safety net: a stream that never reaches `max_batches` (a resume at the
    wrong position waits for messages that never come) is stopped after `timeout` s instead of hanging."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        return ws.stream(pipeline, stop=stop, max_batches=max_batches, **kwargs)
    finally:
        timer.cancel()


def duck(ws: Workspace, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def duck_tables(ws: Workspace) -> set[str]:
    if not (ws.root / ".queryforge" / "warehouse.duckdb").exists():
        return set()
    return {f"{s}.{t}" for s, t in duck(ws, "SELECT table_schema, table_name FROM information_schema.tables")}


def duck_batches(ws: Workspace, stream: str) -> list[tuple[int, str]]:
    return [
        (int(batch), str(position))
        for batch, position in duck(
            ws,
            "SELECT batch, position FROM _qf_staging._qf_stream_batches "
            f"WHERE stream = '{stream}' ORDER BY batch",
        )
    ]


# ---------------------------------------------------------------- 1. NATS -> DuckDB
def test_nats_into_duckdb_commits_positions_and_resumes_after_them(build: Callable[..., Workspace]) -> None:
    with nats_subject() as subject:
        # max_wait_s is roomy so every batch fills to max_rows (nats-py needs ~0.1 s per 1,000 messages).
        pipeline = streaming(
            "clicks",
            {"connection": "bus", "stream": subject, "types": {"id": "BIGINT", "url": "VARCHAR"}},
            load={"input": "incoming", "connection": "warehouse", "table": "clicks", "mode": "append"},
            trigger={"max_rows": 1000, "max_wait_s": 1.0},
        )
        ws = build({"bus": {"url": NATS_URL}}, pipeline)
        first = [{"id": i, "url": f"/p/{i % 17}"} for i in range(2500)]
        nats_publish(subject, encode(first))

        run_id, status = stream(ws, "clicks", 3)

        assert (status.batches, status.rows, status.published_rows) == (3, 2500, 2500)
        assert (status.last_batch, status.position) == (3, "2500")
        assert sorted(duck(ws, "SELECT id, url FROM clicks")) == [(r["id"], r["url"]) for r in first]
        # A fresh JetStream stream numbers its messages 1, 2, ...: each batch stores its last sequence.
        assert duck_batches(ws, "clicks.incoming") == [(1, "1000"), (2, "2000"), (3, "2500")]
        assert ws.get_run(run_id).status == "succeeded"

        more = [{"id": i, "url": f"/p/{i % 17}"} for i in range(2500, 3000)]
        nats_publish(subject, encode(more))
        _, again = stream(ws, "clicks", 1)

        assert (again.batches, again.rows, again.last_batch, again.position) == (1, 500, 4, "3000")
        count, distinct, low, high = duck(
            ws, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM clicks"
        )[0]
        assert (count, distinct, low, high) == (3000, 3000, 0, 2999)
        assert duck_batches(ws, "clicks.incoming")[-1] == (4, "3000")
        assert [b for b, _ in duck_batches(ws, "clicks.incoming")] == [1, 2, 3, 4]


# ---------------------------------------------------------------- 2. Redis -> PostgreSQL, merge
def order(i: int, price: float) -> dict[str, Any]:
    return {"id": i, "sku": f"sku-{i % 11}", "qty": i % 5, "price": price}


def expected_orders(published: Rows) -> dict[int, tuple[str, int, float, float]]:
    """What a filter `qty > 0`, a derive `total = qty * price` and a merge on id leave: the last
    message of each id that passes the filter."""
    out: dict[int, tuple[str, int, float, float]] = {}
    for r in published:
        if r["qty"] > 0:
            out[r["id"]] = (r["sku"], r["qty"], r["price"], r["qty"] * r["price"])
    return out


@pytest.mark.postgres
def test_redis_into_postgres_merge_updates_instead_of_duplicating(build: Callable[..., Workspace]) -> None:
    with postgres_database() as pg, redis_stream_key() as key:
        pipeline = streaming(
            "orders",
            {
                "connection": "cache",
                "stream": key,
                "types": {"id": "BIGINT", "sku": "VARCHAR", "qty": "BIGINT", "price": "DOUBLE"},
            },
            {"id": "kept", "filter": {"input": "incoming", "where": "qty > 0"}},
            {"id": "priced", "derive": {"input": "kept", "columns": {"total": "qty * price"}}},
            load={"input": "priced", "connection": "pg", "table": "orders", "mode": "merge", "keys": ["id"]},
        )
        ws = build({"cache": {"url": REDIS_URL}, "pg": {"url": pg, "writable": True}}, pipeline)
        published = [order(i, round(1 + i * 0.25, 2)) for i in range(300)]
        redis_publish(key, encode(published))

        _, status = stream(ws, "orders", 3)
        assert (status.batches, status.rows) == (3, 300)
        assert status.published_rows == sum(1 for r in published if r["qty"] > 0)

        def sink() -> dict[int, tuple[str, int, float, float]]:
            with psycopg.connect(pg) as con:
                rows = con.execute("SELECT id, sku, qty, price, total FROM orders").fetchall()
            got = {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}
            assert len(got) == len(rows), "the merge key id is duplicated in the sink"
            return got

        assert sink() == expected_orders(published)

        # Ids 1..12 again with new prices (5 and 10 still filtered out: qty 0), and a new id 301.
        updates = [order(i, 99.5 + i) for i in range(1, 13)] + [order(301, 7.0)]
        redis_publish(key, encode(updates))
        _, again = stream(ws, "orders", 1)
        assert (again.batches, again.rows, again.last_batch) == (1, 13, 4)

        got = sink()
        assert got == expected_orders(published + updates)
        assert got[1] == ("sku-1", 1, 100.5, 100.5)
        with psycopg.connect(pg) as con:
            total = con.execute("SELECT sum(total) FROM orders").fetchone()
            position = con.execute(
                "SELECT batch, position FROM _qf_staging._qf_stream_batches ORDER BY batch DESC LIMIT 1"
            ).fetchone()
        assert total is not None
        assert total[0] == pytest.approx(sum(v[3] for v in expected_orders(published + updates).values()))
        assert position == (4, redis_ids(key)[-1])


# ---------------------------------------------------------------- 3. NATS -> MariaDB


def mysql_rows(database: str | None, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    con = pymysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", database=database, autocommit=True
    )
    try:
        with con.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        con.close()


def mysql_has(database: str, table: str) -> bool:
    found = mysql_rows(
        None,
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (database, table),
    )
    return bool(found)


def mysql_batches(database: str, stream_id: str) -> list[tuple[int, str]]:
    """The committed batches of a stream publishing into `database`, from its `_qf_stream_batches`
    table: in that database, or else in the server's `_qf_staging` database."""
    found = mysql_rows(
        None,
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN (%s, "
        "'_qf_staging') AND table_name IN ('_qf_stream_batches', '_qf_staging___qf_stream_batches') "
        "ORDER BY table_schema = %s DESC",
        (database, database),
    )
    if not found:
        return []
    schema, table = found[0]
    rows = mysql_rows(
        None,
        f"SELECT batch, position FROM `{schema}`.`{table}` WHERE stream = %s ORDER BY batch",
        (stream_id,),
    )
    return [(int(b), str(p)) for b, p in rows]


def forget_mysql_stream(pipeline: str) -> None:
    """Remove what the stream left in the server-wide `_qf_staging` database, which outlives the
    test's database: its committed batches (keyed `<database>/<pipeline>.incoming`) and staging
    tables (`stream_<hash>__sink`, left by a failed publish)."""
    if mysql_has("_qf_staging", "_qf_stream_batches"):
        mysql_rows(
            None,
            "DELETE FROM `_qf_staging`.`_qf_stream_batches` WHERE stream LIKE %s",
            (f"%/{pipeline}.incoming",),
        )


def people_pipeline(name: str, subject: str) -> dict[str, Any]:
    return streaming(
        name,
        {
            "connection": "bus",
            "stream": subject,
            "types": {"id": "BIGINT", "name": "VARCHAR", "score": "DOUBLE"},
        },
        load={"input": "incoming", "connection": "maria", "table": "people", "mode": "append"},
        trigger={"max_rows": 100, "max_wait_s": 0.5},
    )


def people(count: int) -> Rows:
    names = ["Ann", "Åsa ünïcode", "O'Brien", 'say "hi"', None]
    return [{"id": i, "name": names[i % 5], "score": None if i % 7 == 0 else i * 0.5} for i in range(count)]


def test_nats_into_mariadb_creates_the_table_with_the_first_batch(build: Callable[..., Workspace]) -> None:
    with mysql_database() as url, nats_subject() as subject:
        database = url.rsplit("/", 1)[1]
        # staging_schema: the staging and stream tables live in the test's database, dropped with it.
        maria = {"url": url, "writable": True, "staging_schema": database}
        ws = build({"bus": {"url": NATS_URL}, "maria": maria}, people_pipeline("people", subject))
        published = people(250)
        nats_publish(subject, encode(published))

        def sink() -> list[tuple[Any, ...]]:
            return sorted(mysql_rows(database, "SELECT id, name, score FROM people"))

        assert not mysql_has(database, "people")
        _, status = stream(ws, "people", 1)
        assert (status.batches, status.rows) == (1, 100)
        assert mysql_has(database, "people")
        assert sink() == [(r["id"], r["name"], r["score"]) for r in published[:100]]

        _, rest = stream(ws, "people", 2)
        assert (rest.batches, rest.rows, rest.last_batch, rest.position) == (2, 150, 3, "250")
        assert sink() == [(r["id"], r["name"], r["score"]) for r in published]
        assert mysql_batches(database, f"{database}/people.incoming") == [(1, "100"), (2, "200"), (3, "250")]


def test_mariadb_stream_positions_belong_to_their_database(tmp_path: Path) -> None:
    name = f"shared_{secrets.token_hex(4)}"
    with mysql_database() as url1, mysql_database() as url2, nats_subject() as subj1, nats_subject() as subj2:
        outcomes = []
        try:
            for folder, url, subject in (("one", url1, subj1), ("two", url2, subj2)):
                root = tmp_path / folder
                Workspace.init(root, bare=True).close()
                config = {
                    "name": folder,
                    "connections": {"bus": {"url": NATS_URL}, "maria": {"url": url, "writable": True}},
                }
                (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
                write_pipeline(root, people_pipeline(name, subject))
                nats_publish(subject, encode(people(30)))
                with Workspace(root) as ws:
                    outcomes.append(stream(ws, name, 1, timeout=8)[1])
        finally:
            forget_mysql_stream(name)
        # Each workspace's first start reads its own 30 messages into its own database.
        assert [(s.batches, s.rows, s.last_batch) for s in outcomes] == [(1, 30, 1), (1, 30, 1)]
        for url in (url1, url2):
            database = url.rsplit("/", 1)[1]
            assert mysql_rows(database, "SELECT count(*), count(DISTINCT id) FROM people") == [(30, 30)]


# ---------------------------------------------------------------- 4. file-drop folder -> SQLite
def drop_file(root: Path, name: str, rows: Rows, mtime: int) -> None:
    """Write elsewhere, then rename into the folder (as the docs ask), with a chosen mtime."""
    staging = root / "outside"
    staging.mkdir(exist_ok=True)
    path = staging / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, (mtime, mtime))
    os.replace(path, root / "inbox" / name)


def test_file_drop_folder_into_sqlite_moves_files_to_done(build: Callable[..., Workspace]) -> None:
    pipeline = streaming(
        "drops",
        {"path": "inbox/*.json", "types": {"id": "BIGINT", "shop": "VARCHAR", "amount": "DOUBLE"}},
        load={"input": "incoming", "connection": "lite", "table": "sales", "mode": "append"},
        trigger={"max_rows": 2, "max_wait_s": 0.2},  # a batch takes up to 2 files
    )
    ws = build({"lite": {"url": "sqlite:data/sink.sqlite", "writable": True}}, pipeline)
    inbox = ws.root / "inbox"
    inbox.mkdir()
    files: dict[str, Rows] = {}
    for n, name in enumerate(["a.json", "b.json", "c.json"]):
        files[name] = [{"id": n * 100 + i, "shop": f"shop{n}", "amount": n + i / 4} for i in range(4 + n)]
        drop_file(ws.root, name, files[name], mtime=1_700_000_000 + n)
    (inbox / "notes.txt").write_text("not matched by the pattern\n")

    def sink() -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(ws.root / "data" / "sink.sqlite")) as con:
            return sorted(con.execute("SELECT id, shop, amount FROM sales").fetchall())

    def expected(names: list[str]) -> list[tuple[Any, ...]]:
        return sorted((r["id"], r["shop"], r["amount"]) for n in names for r in files[n])

    _, status = stream(ws, "drops", 2)

    assert (status.batches, status.rows, status.published_rows) == (2, 3, len(expected(list(files))))
    assert sink() == expected(["a.json", "b.json", "c.json"])
    assert sorted(p.name for p in (inbox / ".done").iterdir()) == ["a.json", "b.json", "c.json"]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["notes.txt"]
    assert list((inbox / ".inflight").iterdir()) == []
    with closing(sqlite3.connect(ws.root / "data" / "sink.sqlite")) as con:
        marks = con.execute(
            "SELECT batch, position FROM _qf_staging___qf_stream_batches ORDER BY batch"
        ).fetchall()
    # Oldest first: the first batch named a.json and b.json, the second c.json.
    assert [(b, [f[0] for f in json.loads(p)]) for b, p in marks] == [
        (1, ["a.json", "b.json"]),
        (2, ["c.json"]),
    ]

    files["d.json"] = [{"id": 900, "shop": "late", "amount": 1.5}, {"id": 901, "shop": "late", "amount": 2.5}]
    drop_file(ws.root, "d.json", files["d.json"], mtime=1_700_000_100)
    _, later = stream(ws, "drops", 1)

    assert (later.batches, later.rows, later.last_batch) == (1, 1, 3)
    assert sink() == expected(["a.json", "b.json", "c.json", "d.json"])
    assert sorted(p.name for p in (inbox / ".done").iterdir()) == ["a.json", "b.json", "c.json", "d.json"]


# ---------------------------------------------------------------- 5. checks per batch
CHECKED_TYPES = {"id": "BIGINT", "grp": "VARCHAR"}


def checked(on_check_failure: str) -> dict[str, Any]:
    return streaming(
        "checked",
        {"connection": "cache", "stream": "KEY", "types": CHECKED_TYPES},
        {"id": "ok", "check": {"input": "incoming", "rules": [{"unique": ["id"]}, {"not_null": ["id"]}]}},
        load={"input": "incoming", "connection": "warehouse", "table": "events", "mode": "append"},
        trigger={"max_rows": 10, "max_wait_s": 0.2},
        on_check_failure=on_check_failure,
    )


def three_batches() -> tuple[Rows, Rows, Rows]:
    """Batches of 10 messages; the second holds id 15 twice."""
    clean = [{"id": i, "grp": f"g{i % 3}"} for i in range(10)]
    dup = [{"id": i, "grp": "dup"} for i in [10, 11, 12, 13, 14, 15, 15, 16, 17, 18]]
    after = [{"id": i, "grp": f"g{i % 3}"} for i in range(20, 30)]
    return clean, dup, after


def with_key(pipeline: dict[str, Any], key: str) -> dict[str, Any]:
    pipeline["steps"][0]["extract"]["stream"] = key
    return pipeline


def test_failing_check_stops_the_stream_before_the_batch(build: Callable[..., Workspace]) -> None:
    with redis_stream_key() as key:
        ws = build({"cache": {"url": REDIS_URL}}, with_key(checked("stop"), key))
        clean, dup, after = three_batches()
        redis_publish(key, encode(clean + dup + after))
        ids = redis_ids(key)

        for attempt in range(2):  # a restart meets the same batch and fails the same way
            with pytest.raises(ChecksFailed) as failed:
                stream(ws, "checked", 5)
            assert "Batch 2 of stream 'checked.incoming'" in failed.value.message
            assert "unique" in failed.value.message
            assert "nothing of it was published" in failed.value.message
            assert sorted(duck(ws, "SELECT id, grp FROM events")) == [(r["id"], r["grp"]) for r in clean]
            assert duck_batches(ws, "checked.incoming") == [(1, ids[9])]
            runs = ws.list_runs(pipeline="checked")
            assert len(runs) == attempt + 1
            assert runs[0].status == "failed"
            assert "unique" in (runs[0].error_message or "")
        assert "main.events__quarantine" not in duck_tables(ws)


def test_quarantine_sets_the_failing_batch_aside_and_goes_on(build: Callable[..., Workspace]) -> None:
    with redis_stream_key() as key:
        ws = build({"cache": {"url": REDIS_URL}}, with_key(checked("quarantine"), key))
        clean, dup, after = three_batches()
        redis_publish(key, encode(clean + dup + after))
        ids = redis_ids(key)
        notable: list[str] = []

        def progress(status: StreamStatus, is_notable: bool) -> None:
            if is_notable:
                notable.append(status.last_error or "")

        run_id, status = stream(ws, "checked", 3, on_progress=progress)

        assert (status.batches, status.rows, status.quarantined_batches) == (3, 30, 1)
        assert status.last_error is not None and "batch 2 quarantined" in status.last_error
        assert notable and "batch 2" in notable[0]
        assert sorted(duck(ws, "SELECT id, grp FROM events")) == sorted(
            (r["id"], r["grp"]) for r in clean + after
        )
        assert sorted(duck(ws, "SELECT id, grp FROM events__quarantine")) == sorted(
            (r["id"], r["grp"]) for r in dup
        )
        assert duck_batches(ws, "checked.incoming") == [(1, ids[9]), (2, ids[19]), (3, ids[29])]
        result = ws.get_run(run_id).result or {}
        assert result["quarantined_batches"] == 1
        assert "batch 2 quarantined" in (result["last_error"] or "")


# ---------------------------------------------------------------- 6. refusals
def test_queryforge_run_refuses_a_streaming_pipeline(
    build: Callable[..., Workspace], qf: Callable[..., CliResult]
) -> None:
    pipeline = streaming(
        "live",
        {"connection": "bus", "stream": "qf.never.read", "types": {"id": "BIGINT"}},
        load={"input": "incoming", "connection": "warehouse", "table": "t", "mode": "append"},
    )
    ws = build({"bus": {"url": NATS_URL}}, pipeline)
    ws.validate("live")  # a valid streaming pipeline...
    with pytest.raises(UserError) as refused:  # ...that `run` does not run
        ws.run("live")
    assert "streaming pipeline" in refused.value.message
    assert "queryforge stream live" in (refused.value.hint or "")

    result = qf("run", "live", cwd=ws.root)
    assert result.code != 0
    assert "queryforge stream live" in result.stdout + result.stderr
    assert ws.list_runs() == []


REFUSED = {
    "batch pipeline reads a stream connection": (
        {"name": "p", "steps": [{"id": "incoming", "extract": {"connection": "bus", "table": "x"}}]},
        "reads stream connection 'bus', which only a streaming pipeline can read",
    ),
    "batch pipeline names a stream": (
        {"name": "p", "steps": [{"id": "incoming", "extract": {"connection": "cache", "stream": "qf:x"}}]},
        "reads stream connection 'cache', which only a streaming pipeline can read",
    ),
    "batch pipeline reads a stream with types": (
        {
            "name": "p",
            "steps": [
                {
                    "id": "incoming",
                    "extract": {"connection": "bus", "stream": "qf.x", "types": {"id": "BIGINT"}},
                }
            ],
        },
        "streaming pipeline",
    ),
    "stream extract without types": (
        streaming(
            "p",
            {"connection": "bus", "stream": "qf.x"},
            load={"input": "incoming", "connection": "warehouse", "table": "t", "mode": "append"},
        ),
        "declare the column types of its messages",
    ),
    "bad type name": (
        streaming(
            "p",
            {"connection": "cache", "stream": "qf:x", "types": {"id": "BIGINT", "n": "BIGNUMBER"}},
            load={"input": "incoming", "connection": "warehouse", "table": "t", "mode": "append"},
        ),
        "'BIGNUMBER' (column n) is not a type",
    ),
    "file-drop folder without a stream mode has types": (
        {
            "name": "p",
            "steps": [{"id": "incoming", "extract": {"path": "in/*.json", "types": {"id": "INT"}}}],
        },
        "declares 'types', which only a streaming pipeline's stream",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_validation_refuses_what_cannot_stream(build: Callable[..., Workspace], case: str) -> None:
    pipeline, phrase = REFUSED[case]
    if pipeline["steps"][-1]["id"] != "sink":
        pipeline = {
            **pipeline,
            "steps": [
                *pipeline["steps"],
                {"id": "sink", "load": {"input": "incoming", "table": "t", "mode": "append"}},
            ],
        }
    ws = build({"bus": {"url": NATS_URL}, "cache": {"url": REDIS_URL}}, pipeline)
    with pytest.raises(SpecError) as refused:
        ws.validate("p")
    assert phrase in refused.value.message


def replacing() -> dict[str, Any]:
    return streaming(
        "replacing",
        {"connection": "bus", "stream": "qf.never.read", "types": {"id": "BIGINT"}},
        load={"input": "incoming", "connection": "warehouse", "table": "t", "mode": "replace"},
    )


def test_stream_refuses_a_replacing_load(build: Callable[..., Workspace]) -> None:
    ws = build({"bus": {"url": NATS_URL}}, replacing())
    with pytest.raises(SpecError) as refused:
        stream(ws, "replacing", 1)
    assert "replaces its table, which a stream would do every batch" in refused.value.message
    assert "main.t" not in duck_tables(ws)


def test_validation_refuses_a_replacing_load(build: Callable[..., Workspace]) -> None:
    ws = build({"bus": {"url": NATS_URL}}, replacing())
    with pytest.raises(SpecError, match="replaces its table"):
        ws.validate("replacing")


# ---------------------------------------------------------------- 7. the CLI
def test_cli_stream_json_and_runs_show(build: Callable[..., Workspace], qf: Callable[..., CliResult]) -> None:
    with redis_stream_key() as key:
        pipeline = streaming(
            "cli_events",
            {"connection": "cache", "stream": key, "types": {"id": "BIGINT", "amount": "DOUBLE"}},
            load={"input": "incoming", "connection": "warehouse", "table": "cli_events", "mode": "append"},
            trigger={"max_rows": 50, "max_wait_s": 0.2},
        )
        ws = build({"cache": {"url": REDIS_URL}}, pipeline)
        published = [{"id": i, "amount": i * 1.25} for i in range(120)]
        redis_publish(key, encode(published))

        result = qf("stream", "cli_events", "--max-batches", "3", "--json", cwd=ws.root, timeout=60)
        assert result.code == 0, result.stderr
        out = result.json()
        assert isinstance(out, dict)
        assert out["status"] == "succeeded"
        assert (out["batches"], out["rows"], out["last_batch"]) == (3, 120, 3)
        assert out["position"] == redis_ids(key)[-1]

        shown = qf("runs", "show", out["run_id"], "--json", cwd=ws.root)
        assert shown.code == 0, shown.stderr
        run = shown.json()["run"]
        assert (run["id"], run["trigger"], run["status"]) == (out["run_id"], "stream", "succeeded")
        assert (run["result"]["batches"], run["result"]["rows"]) == (3, 120)
        assert run["result"]["published_rows"] == 120

        total = duck(ws, "SELECT count(DISTINCT id), count(*), sum(amount) FROM cli_events")[0]
        assert total == (120, 120, pytest.approx(sum(r["amount"] for r in published)))


# ---------------------------------------------------------------- 8. one stream at a time
def test_second_start_of_a_running_stream_is_refused(build: Callable[..., Workspace]) -> None:
    with redis_stream_key() as key:
        pipeline = streaming(
            "single",
            {"connection": "cache", "stream": key, "types": {"id": "BIGINT"}},
            load={"input": "incoming", "connection": "warehouse", "table": "single", "mode": "append"},
            trigger={"max_rows": 100, "max_wait_s": 0.1},
        )
        ws = build({"cache": {"url": REDIS_URL}}, pipeline)
        redis_publish(key, encode([{"id": i} for i in range(50)]))

        stop, up = threading.Event(), threading.Event()
        outcome: dict[str, Any] = {}

        def first() -> None:
            try:
                with Workspace(ws.root) as own:
                    outcome["result"] = own.stream("single", stop=stop, on_progress=lambda *_: up.set())
            except BaseException as exc:  # reported by the assertions below
                outcome["error"] = exc
                up.set()

        thread = threading.Thread(target=first)
        thread.start()
        try:
            assert up.wait(20), "the first stream never reported progress"
            assert "error" not in outcome, outcome.get("error")
            with pytest.raises(UserError) as refused:
                stream(ws, "single", 1)
            assert "Stream 'single' is already running" in refused.value.message
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome.get("error")
        first_run, first_status = outcome["result"]
        assert first_status.rows == 50
        # The refused start made no run and did not close the running one.
        assert [(r.id, r.status) for r in ws.list_runs(pipeline="single")] == [(first_run, "succeeded")]

        redis_publish(key, encode([{"id": i} for i in range(50, 60)]))
        _, status = stream(ws, "single", 1)
        assert (status.rows, status.last_batch) == (10, first_status.last_batch + 1)
        summary = duck(ws, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM single")
        assert summary == [(60, 60, 0, 59)]
