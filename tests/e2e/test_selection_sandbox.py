"""Rehearsing a slice of a project (`run --select X --sandbox`, then `commit`) and `--atomic`.

In a rehearsal each pipeline reads what its upstream *staged* in the same selection, so the slice is
audited on the data it will publish; `commit` publishes the whole slice, on each connection in one
transaction; `--atomic` does both and publishes nothing if any pipeline fails. Numbers are checked
against a computation in plain Python over the CSV.
"""

from __future__ import annotations

import csv
import json
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import duckdb

from tests.e2e.test_project_refs import TOTALS, expected_totals, project, qf, tables

__all__ = ["project"]  # the fixture, imported for pytest


def published_totals(root: Path) -> dict[int, tuple[int, Decimal]]:
    with closing(duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return {
            r[0]: (r[1], Decimal(str(r[2])).quantize(Decimal("0.01")))
            for r in con.execute("SELECT customer_id, orders, revenue FROM customer_totals").fetchall()
        }


def rounded(totals: dict[int, tuple[int, Decimal]]) -> dict[int, tuple[int, Decimal]]:
    return {k: (n, v.quantize(Decimal("0.01"))) for k, (n, v) in totals.items()}


def drop_orders_of(root: Path, customer: str) -> None:
    """Change the source: every order of one customer disappears from the CSV."""
    path = root / "data" / "orders.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert any(r["customer_id"] == customer for r in rows)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["customer_id"] != customer)


def test_a_rehearsed_slice_reads_upstreams_staged_data_and_commit_publishes_it_all(project: Path) -> None:
    assert qf(project, "run", "--select", "+customer_totals").returncode == 0
    before = published_totals(project)
    drop_orders_of(project, next(iter(str(k) for k in before)))
    done = qf(project, "run", "--select", "+big_customers", "--sandbox", "--json")
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert [r["pipeline"] for r in runs] == ["stg_orders", "customer_totals", "big_customers"]
    assert {r["status"] for r in runs} == {"audited"}
    # production is untouched: the old totals, and big_customers was never published
    assert published_totals(project) == before and "big_customers" not in tables(project)
    # customer_totals was staged from the *staged* stg_orders (the new CSV), not production's
    staged = {r["pipeline"]: r for r in runs}["customer_totals"]["staged"][0]["rows"]
    assert staged == len(expected_totals(project)) == len(before) - 1

    done = qf(project, "commit", "--json")
    assert done.returncode == 0, done.stderr
    committed = json.loads(done.stdout)["runs"]
    assert [(r["pipeline"], r["status"]) for r in committed] == [
        ("stg_orders", "succeeded"),
        ("customer_totals", "succeeded"),
        ("big_customers", "succeeded"),
    ]
    want = expected_totals(project)
    assert published_totals(project) == rounded(want)
    with closing(duckdb.connect(str(project / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        big = {r[0] for r in con.execute("SELECT customer_id FROM big_customers").fetchall()}
    assert big == {k for k, (_, v) in want.items() if v > 1000}
    again = qf(project, "commit")  # the slice is published: nothing audited is left to commit
    assert again.returncode != 0


def test_commit_of_a_slice_refuses_when_production_moved_and_publishes_nothing(project: Path) -> None:
    assert qf(project, "run", "--select", "+customer_totals").returncode == 0
    before = published_totals(project)
    drop_orders_of(project, next(iter(str(k) for k in before)))
    assert qf(project, "run", "--select", "+customer_totals", "--sandbox").returncode == 0
    assert qf(project, "run", "stg_orders").returncode == 0  # someone publishes upstream meanwhile
    done = qf(project, "commit")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "changed after run" in done.stderr
    assert published_totals(project) == before  # customer_totals kept its old rows


def test_atomic_publishes_everything_or_nothing(project: Path) -> None:
    assert qf(project, "run", "--select", "+customer_totals").returncode == 0
    before = published_totals(project)
    drop_orders_of(project, next(iter(str(k) for k in before)))
    (project / "pipelines" / "marts" / "big_customers.yaml").write_text(
        (project / "pipelines" / "marts" / "big_customers.yaml")
        .read_text()
        .replace(
            "  - id: out\n",
            "  - id: ok\n    check: {input: big, rules: [{row_count: {max: 0}}]}\n  - id: out\n",
        )
    )
    with closing(duckdb.connect(str(project / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        stg_before = con.execute("SELECT count(*) FROM stg_orders").fetchone()
    failed = qf(project, "run", "--select", "+big_customers", "--atomic")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Nothing of this selection was published" in failed.stderr
    # upstream pipelines passed their audits, yet nothing of theirs was published either
    assert published_totals(project) == before and "big_customers" not in tables(project)
    with closing(duckdb.connect(str(project / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        assert con.execute("SELECT count(*) FROM stg_orders").fetchone() == stg_before

    (project / "pipelines" / "marts" / "big_customers.yaml").write_text(
        (project / "pipelines" / "marts" / "big_customers.yaml").read_text().replace("max: 0", "max: 100000")
    )
    done = qf(project, "run", "--select", "+big_customers", "--atomic", "--json")
    assert done.returncode == 0, done.stderr
    assert {r["status"] for r in json.loads(done.stdout)["runs"]} == {"succeeded"}
    assert published_totals(project) == rounded(expected_totals(project))


def test_flags_that_do_not_go_together_are_refused(project: Path) -> None:
    for args, words in [
        (["run", "--select", "stg_orders", "--sandbox", "--atomic"], "exclude each other"),
        (["run", "stg_orders", "--atomic"], "--atomic goes with --select"),
        (["run", "--select", "stg_orders", "--param", "a=1"], "--param is not supported"),
    ]:
        done = qf(project, *args)
        assert done.returncode == 2 and words in done.stderr, done.stderr
    assert tables(project) == set()


def test_a_view_in_a_rehearsed_slice_cannot_feed_downstream(project: Path) -> None:
    (project / "pipelines" / "marts" / "customer_totals.yaml").write_text(
        TOTALS.replace(
            "load: {input: totals, table: customer_totals}",
            "load: {input: totals, table: customer_totals, mode: view}",
        )
    )
    assert qf(project, "run", "--select", "stg_orders").returncode == 0
    done = qf(project, "run", "--select", "+big_customers", "--sandbox")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "holds no rows until it is published" in done.stderr


PAID = """
name: paid_orders
ephemeral: true
steps:
  - id: orders
    extract: {ref: stg_orders}
  - id: paid
    filter: {input: orders, where: "status <> 'cancelled'"}
  - id: out
    load: {input: paid, table: paid_orders}
"""

PAID_COUNT = """
name: paid_count
steps:
  - id: paid
    extract: {ref: paid_orders}
  - id: n
    sql: SELECT count(*) AS n FROM paid
  - id: out
    load: {input: n, table: paid_count}
"""


def test_a_rehearsal_reads_staged_data_through_an_ephemeral_pipeline_too(project: Path) -> None:
    (project / "pipelines" / "marts" / "paid_orders.yaml").write_text(PAID)
    (project / "pipelines" / "marts" / "paid_count.yaml").write_text(PAID_COUNT)
    assert qf(project, "run", "--select", "+paid_count").returncode == 0
    drop_orders_of(project, next(iter(str(k) for k in published_totals_or_csv(project))))
    done = qf(project, "run", "--select", "+paid_count", "--sandbox", "--json")
    assert done.returncode == 0, done.stderr
    assert qf(project, "commit").returncode == 0
    with closing(duckdb.connect(str(project / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        (n,) = con.execute("SELECT n FROM paid_count").fetchone()  # type: ignore[misc]
    with (project / "data" / "orders.csv").open(newline="") as fh:
        want = sum(1 for r in csv.DictReader(fh) if r["status"] != "cancelled")
    assert n == want  # computed from the new CSV, staged upstream, not from production's old rows


def published_totals_or_csv(root: Path) -> set[str]:
    with (root / "data" / "orders.csv").open(newline="") as fh:
        return {r["customer_id"] for r in csv.DictReader(fh)}


def test_a_rehearsal_refuses_to_feed_downstream_from_an_append(project: Path) -> None:
    stg = project / "pipelines" / "staging" / "stg_orders.yaml"
    stg.write_text(stg.read_text().replace("table: stg_orders}", "table: stg_orders, mode: append}"))
    assert qf(project, "run", "--select", "stg_orders").returncode == 0
    done = qf(project, "run", "--select", "+customer_totals", "--sandbox")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "append load of the same rehearsed selection" in done.stderr


def test_committing_one_run_of_a_slice_commits_the_slice_and_rerun_is_refused(project: Path) -> None:
    done = qf(project, "run", "--select", "+customer_totals", "--sandbox", "--json")
    first = json.loads(done.stdout)["runs"][0]["run_id"]
    refused = qf(project, "commit", first, "--rerun")
    assert refused.returncode == 2 and "belongs to a rehearsed selection" in refused.stderr
    assert tables(project) == set()
    done = qf(project, "commit", first, "--json")
    assert done.returncode == 0, done.stderr
    assert [r["pipeline"] for r in json.loads(done.stdout)["runs"]] == ["stg_orders", "customer_totals"]
    assert published_totals(project) == rounded(expected_totals(project))
    resumed = qf(project, "runs", "resume", first)
    assert resumed.returncode == 2 and "rehearsed selection" in resumed.stderr
