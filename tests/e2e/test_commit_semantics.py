"""`queryforge commit` with no id (defect 12 of issue 10).

It takes the newest sandbox run and commits it only if it is audited, naming the run and its age;
when the newest sandbox run failed it refuses and lists the audited runs, instead of quietly
publishing an older audited run's stale data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from tests.conftest import CliResult

Qf = Callable[..., CliResult]
AGE = r"audited \d+ (second|minute)s? ago"


def sandbox(qf: Qf, ws: Path, *params: str) -> dict[str, Any]:
    r = qf("run", "daily_sales", "--sandbox", "--json", *params, cwd=ws)
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def daily_sales_exists(ws: Path) -> bool:
    with duckdb.connect(str(ws / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        return bool(
            con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'analytics' "
                "AND table_name = 'daily_sales'"
            ).fetchall()[0][0]
        )


def test_commit_refuses_when_the_newest_sandbox_run_failed_and_lists_the_audited_ones(
    qf: Qf, demo: Path
) -> None:
    audited = sandbox(qf, demo)
    assert audited["status"] == "audited"
    failed = sandbox(qf, demo, "--param", "since=2999-01-01")  # no rows: the row_count check fails
    assert failed["status"] == "failed"

    r = qf("commit", cwd=demo)

    assert r.code == 2, r
    assert failed["run_id"] in r.stderr and "not audited" in r.stderr
    assert re.search(rf"{audited['run_id']} \(daily_sales, {AGE}\)", r.stderr), r.stderr
    assert f"queryforge commit {audited['run_id']}" in r.stderr
    assert not daily_sales_exists(demo)  # nothing was published
    as_json = qf("commit", "--json", cwd=demo)
    assert as_json.code == 2
    assert audited["run_id"] in as_json.json()["error"]["message"]


def test_commit_publishes_the_newest_run_when_it_is_audited_and_names_it(qf: Qf, demo: Path) -> None:
    sandbox(qf, demo, "--param", "since=2999-01-01")  # an older failed run does not matter
    newest = sandbox(qf, demo)["run_id"]

    r = qf("commit", cwd=demo)

    assert r.code == 0, r
    assert re.search(rf"Committing run {newest} \(daily_sales, {AGE}\)", r.stdout), r.stdout
    assert daily_sales_exists(demo)
    again = qf("commit", cwd=demo)  # the newest sandbox run is committed now: nothing left to guess
    assert again.code == 2 and f"{newest} (daily_sales, succeeded" in again.stderr


def test_commit_json_names_the_run(qf: Qf, demo: Path) -> None:
    newest = sandbox(qf, demo)["run_id"]
    r = qf("commit", "--json", cwd=demo)
    assert r.code == 0, r
    assert r.json()["run_id"] == newest
    assert re.fullmatch(rf"Committing run {newest} \(daily_sales, {AGE}\)", r.json()["note"])


def test_an_explicit_id_still_commits_an_older_audited_run(qf: Qf, demo: Path) -> None:
    audited = sandbox(qf, demo)["run_id"]
    sandbox(qf, demo, "--param", "since=2999-01-01")

    r = qf("commit", audited, "--json", cwd=demo)

    assert r.code == 0, r
    assert r.json()["status"] == "succeeded" and r.json()["run_id"] == audited
    assert daily_sales_exists(demo)


def test_commit_without_any_sandbox_run_says_so(qf: Qf, demo: Path) -> None:
    r = qf("commit", cwd=demo)
    assert r.code == 2
    assert "no sandbox run" in r.stderr
