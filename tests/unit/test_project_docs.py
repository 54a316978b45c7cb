"""Descriptions in the catalog and the planner's context, the docs model and the lineage layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from queryforge.planner.catalog import build_context
from queryforge.project.site import NODE_H, NODE_W, layout, lineage_svg, page_name
from queryforge.workspace import Workspace

STAGING = """
name: stg_orders
description: Orders as exported
steps:
  - id: raw
    extract: {path: data/orders.csv}
  - id: out
    description: Orders, one row each
    load:
      input: raw
      table: stg_orders
      columns:
        order_id: {description: "The order's id,\\n  unique"}
        amount: {description: Amount in euros}
"""

MART = """
name: totals
steps:
  - id: orders
    extract: {ref: stg_orders}
  - id: t
    sql: SELECT count(*) AS n, sum(amount) AS total FROM orders
  - id: ok
    check: {input: t, rules: [{row_count: {min: 1}}, {row_count: {max: 0}, severity: warn}]}
  - id: out
    load: {input: t, table: totals}
"""

BROKEN = """
name: broken
steps:
  - id: orders
    extract: {ref: stg_orders}
  - id: t
    select: {input: orders, columns: [order_idd]}
  - id: out
    load: {input: t, table: broken}
"""


def project(make_workspace: Callable[..., Workspace]) -> Workspace:
    ws = make_workspace(bare=True)
    (ws.root / "data" / "orders.csv").write_text("order_id,amount\n1,10.5\n2,4\n3,1.25\n")
    (ws.root / "pipelines" / "staging").mkdir(parents=True, exist_ok=True)
    (ws.root / "pipelines" / "staging" / "stg_orders.yaml").write_text(STAGING)
    (ws.root / "pipelines" / "totals.yaml").write_text(MART)
    return ws


def test_catalog_shows_the_descriptions_of_published_tables(make_workspace: Callable[..., Workspace]) -> None:
    ws = project(make_workspace)
    ws.run_selection("stg_orders")
    (entry,) = [e for e in ws.catalog() if e.connection == "warehouse"]
    (table,) = [t for t in entry.tables if t.name == "stg_orders"]
    assert table.description == "Orders, one row each"  # the load step's, before the pipeline's
    described = {c.name: c.description for c in table.columns}
    assert described == {"order_id": "The order's id, unique", "amount": "Amount in euros"}
    # the cache keeps what the database said, not the YAML: a changed description shows at once
    (ws.root / "pipelines" / "staging" / "stg_orders.yaml").write_text(
        STAGING.replace("Amount in euros", "Amount in cents")
    )
    (entry,) = [e for e in ws.catalog() if e.connection == "warehouse"]
    assert entry.cache_hit
    (table,) = [t for t in entry.tables if t.name == "stg_orders"]
    assert {c.name: c.description for c in table.columns}["amount"] == "Amount in cents"


def test_planner_context_carries_descriptions_cleaned(make_workspace: Callable[..., Workspace]) -> None:
    ws = project(make_workspace)
    ws.run_selection("stg_orders")
    docs = ws.table_docs("warehouse")
    with ws._connections() as conns:
        ctx = build_context(
            conns, ws.root, descriptions={k: (d.description, d.columns) for k, d in docs.items()}
        )
    (entry,) = [e for e in ctx.for_prompt() if e["source"] == "stg_orders"]
    assert entry["description"] == "Orders, one row each"
    assert entry["column_descriptions"] == {"order_id": "The order's id, unique", "amount": "Amount in euros"}
    files = [e for e in ctx.for_prompt() if e["kind"] == "file"]
    assert files and all("description" not in e for e in files)


EPHEMERAL = """
name: big_orders
ephemeral: true
steps:
  - id: orders
    extract: {ref: stg_orders}
  - id: big
    filter: {input: orders, where: amount > 5}
  - id: out
    load: {input: big, table: big_orders}
"""


def test_docs_document_every_pipeline_even_a_broken_one(make_workspace: Callable[..., Workspace]) -> None:
    ws = project(make_workspace)
    (ws.root / "pipelines" / "broken.yaml").write_text(BROKEN)
    (ws.root / "pipelines" / "big_orders.yaml").write_text(EPHEMERAL)
    ws.run_selection("+totals")
    docs, folder, files = ws.docs_build()
    by_name = {p.name: p for p in docs.pipelines}
    assert list(by_name) == ["stg_orders", "big_orders", "broken", "totals"]  # upstream first, by name
    assert by_name["big_orders"].ephemeral and by_name["big_orders"].tables == []
    assert "warehouse.big_orders" not in {t.key for t in docs.tables}  # an ephemeral publishes nothing
    assert 'class="node ephemeral"' in (folder / "index.html").read_text()
    assert by_name["broken"].error and "order_idd" in by_name["broken"].error
    assert "did you mean" in by_name["broken"].error.lower()
    assert by_name["totals"].runs[0].status in ("succeeded", "warn") and by_name["totals"].runs[0].rows == 1
    # each rule with what the last run found
    assert [(c["rule"], c["severity"], c["last"]) for c in by_name["totals"].checks] == [
        ("row_count", "error", "passed"),
        ("row_count", "warn", "1 violations"),
    ]
    assert by_name["broken"].runs == [] and by_name["broken"].last_success is None
    assert [c["last"] for c in by_name["stg_orders"].checks] == []  # it declares no checks
    assert by_name["broken"].checks == []
    tables = {t.key: t for t in docs.tables}
    assert [(c.name, c.type) for c in tables["warehouse.totals"].columns] == [
        ("n", "BIGINT"),
        ("total", "DOUBLE"),
    ]
    assert tables["warehouse.stg_orders"].read_by == ["big_orders", "broken", "totals"]
    assert {(a, b) for a, b in docs.edges} == {
        ("stg_orders", "totals"),
        ("stg_orders", "broken"),
        ("stg_orders", "big_orders"),
    }
    written = {p.relative_to(folder).as_posix() for p in files}
    assert {"index.html", "pipelines/broken.html", "tables/warehouse.totals.html", "docs.json"} <= written
    assert "order_idd" in (folder / "pipelines" / "broken.html").read_text()
    assert json.loads((folder / "docs.json").read_text())["pipelines"][0]["name"] == "stg_orders"
    # a pipeline deleted since the last build leaves no stale page behind
    (ws.root / "pipelines" / "broken.yaml").unlink()
    _, _, files = ws.docs_build()
    assert not (folder / "pipelines" / "broken.html").exists()


def test_layout_puts_readers_right_of_what_they_read_and_never_overlaps() -> None:
    nodes = ["a", "b", "c", "d", "e", "f"]
    edges = [("a", "c"), ("b", "c"), ("c", "d"), ("a", "d"), ("d", "e"), ("b", "f")]
    pos = layout(nodes, edges)
    for up, down in edges:
        assert pos[up][0] < pos[down][0]
    boxes = list(pos.values())
    assert len(set(boxes)) == len(boxes)
    for i, (x1, y1) in enumerate(boxes):
        for x2, y2 in boxes[i + 1 :]:
            assert abs(x1 - x2) >= NODE_W or abs(y1 - y2) >= NODE_H
    svg = lineage_svg(nodes, edges, "pipelines/", focus="c")
    assert svg.count("<a ") == 6 and svg.count('class="edge"') == 6
    assert 'class="node focus" data-node="c"' in svg


def test_page_names_are_safe_file_names(tmp_path: Path) -> None:
    for key in ("warehouse.analytics.orders", "pg.weird name/x", "../../etc"):
        name = page_name(key)
        assert "/" not in name and " " not in name and name.endswith(".html")
        (tmp_path / name).write_text("ok")


def test_text_from_yaml_cannot_end_the_inline_search_index(make_workspace: Callable[..., Workspace]) -> None:
    ws = project(make_workspace)
    hostile = "x <!--<script> </script><script>alert(1)</script> & \" '"
    (ws.root / "pipelines" / "totals.yaml").write_text(
        MART.replace("name: totals\n", f"name: totals\ndescription: {json.dumps(hostile)}\n")
    )
    _, folder, _ = ws.docs_build()
    page = (folder / "index.html").read_text()
    start = page.index('<script id="search-index" type="application/json">') + len(
        '<script id="search-index" type="application/json">'
    )
    block = page[start : page.index("</script>", start)]
    assert "<" not in block  # the browser ends a script at "</script>" and is confused by "<!--"
    assert any(hostile.lower() in item["text"] for item in json.loads(block))
    assert "<script>alert(1)" not in page.replace(block, "")  # escaped everywhere it is shown


def test_a_committed_sandbox_run_counts_as_published(make_workspace: Callable[..., Workspace]) -> None:
    ws = project(make_workspace)
    staged = ws.run("stg_orders", sandbox=True)
    assert ws.docs().pipelines[0].last_success is None  # audited only
    ws.commit(staged.run_id)
    assert ws.docs().pipelines[0].last_success is not None
