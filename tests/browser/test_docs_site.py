"""The docs site of the jaffle_shop example in a real headless Chromium (Debian's, driven by Playwright).

Built the way a user builds it (`queryforge init --example jaffle`, `run --select`, `docs build`),
opened from disk: the search filters the list, the lineage graph renders with one box per pipeline
and one arrow per reference and highlights a pipeline's lineage, pages link up, the column types
shown are those DuckDB reports for the published tables, and axe-core finds no violation on any
kind of page. Screenshots are kept in test-artifacts/docs/ to be looked at.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import duckdb
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright

QF = str(Path(sys.executable).with_name("queryforge"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "docs"
pytestmark = pytest.mark.xdist_group("browser")


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:  # never skip: the browser is part of the project's install (make setup)
        raise AssertionError("Debian's chromium is not installed: run `make setup` (it installs it)")
    return found


def qf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([QF, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    return done


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs") / "shop"
    qf("init", str(root), "--example", "jaffle", cwd=root.parent)
    qf("run", "--select", "+customers", cwd=root)
    qf("run", "--select", "orders", cwd=root)
    built = json.loads(qf("docs", "build", "--json", cwd=root).stdout)
    assert built["out"] == str(root / "build" / "docs")
    return root


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def no_axe_violations(page: Page) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def test_search_filters_pipelines_tables_and_columns(site: Path, page: Page) -> None:
    page.goto((site / "build/docs/index.html").as_uri())
    results = page.locator("#results li")
    assert results.count() == 10  # 5 pipelines and the 5 tables they publish
    page.fill("#search", "PII")  # only column descriptions of the customers mart say it
    visible = [t.strip() for t in page.locator("#results li:visible a").all_inner_texts()]
    assert visible == ["warehouse.customers"]
    assert page.locator("#search-count").inner_text() == "1 of 10 match"
    page.fill("#search", "stg")
    visible = page.locator("#results li:visible a").all_inner_texts()
    staging = ["stg_customers", "stg_orders", "stg_payments"]
    assert sorted(visible) == sorted([*staging, *(f"warehouse.{s}" for s in staging)])
    page.fill("#search", "no such thing anywhere")
    assert page.locator("#results li:visible").count() == 0
    shoot(page, "search-empty")
    page.fill("#search", "marts")  # the tag
    assert sorted(page.locator("#results li:visible a").all_inner_texts()) == ["customers", "orders"]
    shoot(page, "index-search")


def test_lineage_graph_renders_and_highlights(site: Path, page: Page) -> None:
    page.goto((site / "build/docs/index.html").as_uri())
    graph = page.locator("section:has(#lineage) svg.lineage")
    nodes = graph.locator("a.node")
    assert sorted(nodes.evaluate_all("ns => ns.map(n => n.dataset.node)")) == [
        "customers", "orders", "stg_customers", "stg_orders", "stg_payments",
    ]  # fmt: skip
    edges = graph.locator("path.edge").evaluate_all("es => es.map(e => [e.dataset.from, e.dataset.to])")
    staging = ("stg_customers", "stg_orders", "stg_payments")
    expected = {(s, m) for s in staging for m in ("customers", "orders")}
    assert {tuple(e) for e in edges} == expected
    boxes = [nodes.nth(i).bounding_box() for i in range(nodes.count())]
    assert all(b is not None and b["width"] > 100 and b["height"] > 20 for b in boxes)
    for i, a in enumerate(boxes):  # drawn, and no two boxes overlap
        for b in boxes[i + 1 :]:
            assert a and b
            apart = a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
            assert apart or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"]
    # staging left of the marts: an arrow points from the upstream pipeline to its reader
    names = nodes.evaluate_all("ns => ns.map(n => n.dataset.node)")
    x = {n: box["x"] for n, box in zip(names, boxes, strict=True) if box is not None}
    assert max(x[s] for s in staging) < min(x["customers"], x["orders"])
    graph.locator('a.node[data-node="stg_orders"]').hover()
    lit = graph.locator("a.node.lit").evaluate_all("ns => ns.map(n => n.dataset.node)")
    assert sorted(lit) == ["customers", "orders", "stg_orders"]
    shoot(page, "index-lineage-highlight")
    graph.locator('a.node[data-node="customers"]').click()
    page.wait_for_url(re.compile(r".*/pipelines/customers\.html$"))
    assert page.locator("h1").inner_text().startswith("customers")


def test_pipeline_and_table_pages(site: Path, page: Page) -> None:
    page.goto((site / "build/docs/pipelines/customers.html").as_uri())
    facts = page.locator("dl.facts").inner_text()
    assert "pipelines/marts/customers.yaml" in facts
    assert "last published 20" in facts  # freshness from the run
    runs = page.locator("table:has(caption:text('Last runs')) tbody tr")
    assert runs.count() == 1 and "succeeded" in runs.first.inner_text()
    checks = page.locator("table:has(caption:text('Rules audited')) tbody").inner_text()
    assert "unique(customer_id)" in checks and "not_null(customer_id)" in checks
    assert checks.count("passed") == 2  # each rule's result in the last run
    # the focused graph holds the pipeline and its upstream only (nothing reads customers)
    focused = page.locator("svg.lineage a.node").evaluate_all("ns => ns.map(n => n.dataset.node)")
    assert sorted(focused) == ["customers", "stg_customers", "stg_orders", "stg_payments"]
    shoot(page, "pipeline-customers")
    no_axe_violations(page)

    page.click("dl.facts a:text('warehouse.customers')")
    page.wait_for_url(re.compile(r".*/tables/warehouse\.customers\.html$"))
    rows = page.locator("table:has(caption:text('Columns')) tbody tr")
    shown = {
        rows.nth(i).locator("td").nth(0).inner_text(): (
            rows.nth(i).locator("td").nth(1).inner_text(),
            rows.nth(i).locator("td").nth(2).inner_text(),
        )
        for i in range(rows.count())
    }
    with closing(duckdb.connect(str(site / ".queryforge/warehouse.duckdb"), read_only=True)) as con:
        published = con.execute("DESCRIBE customers").fetchall()
    assert {c: t for c, (t, _) in shown.items()} == {r[0]: r[1] for r in published}
    assert shown["customer_lifetime_value"][1] == "Total value (AUD) of a customer's orders"
    shoot(page, "table-customers")
    no_axe_violations(page)


def test_index_has_no_axe_violations(site: Path, page: Page) -> None:
    page.goto((site / "build/docs/index.html").as_uri())
    shoot(page, "index")
    no_axe_violations(page)
    page.goto((site / "build/docs/pipelines/stg_orders.html").as_uri())
    no_axe_violations(page)


def test_docs_serve_serves_the_site(site: Path) -> None:
    proc = subprocess.Popen(
        [QF, "docs", "serve", "--port", "0", "--no-build"], cwd=site, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/pipelines/orders.html") as resp:
                    body = resp.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "docs serve did not answer"
                time.sleep(0.2)
        assert "One row per order with what was paid" in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
