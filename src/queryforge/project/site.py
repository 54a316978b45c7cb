"""The static documentation site of a project: plain HTML files, no server and no network needed.

`index.html` holds the searchable list and the lineage graph; every pipeline and every published
table gets a page. The search index is inlined as JSON (a page opened from disk may not fetch), the
graph is laid out here (layers by dependency depth) and drawn as SVG whose nodes are links, so it
reads without JavaScript; the script only filters the list and highlights a node's lineage.
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path
from typing import Any

from .docs import PipelineEntry, ProjectDocs, TableEntry

ASSETS = Path(__file__).with_name("site_assets")
NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 34, 60, 16, 12


def page_name(key: str) -> str:
    """A file name for a pipeline or table key: safe on every file system, stable across builds."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".html"


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


# ---------------------------------------------------------------- lineage layout


def layout(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """(x, y) of each node: its column is its depth (longest path from a source), rows ordered by
    the mean row of what feeds it, so edges cross less. `nodes` must be upstream first."""
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in parents and b in parents:
            parents[b].append(a)
    depth: dict[str, int] = {}
    for n in nodes:
        depth[n] = 1 + max((depth[p] for p in parents[n]), default=-1)
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(depth[n], []).append(n)
    row: dict[str, float] = {}
    for d in sorted(columns):
        members = columns[d]
        if d > 0:
            members.sort(key=lambda n: (sum(row[p] for p in parents[n]) / max(len(parents[n]), 1), n))
        for i, n in enumerate(members):
            row[n] = i
    return {n: (PAD + depth[n] * (NODE_W + GAP_X), PAD + int(row[n]) * (NODE_H + GAP_Y)) for n in nodes}


def lineage_svg(
    nodes: list[str],
    edges: list[tuple[str, str]],
    href: str,
    focus: str | None = None,
    labels: dict[str, str] | None = None,
    ephemeral: frozenset[str] = frozenset(),
) -> str:
    """The graph as an SVG figure: each node a link to its page (`href` is the folder prefix)."""
    if not nodes:
        return '<p class="muted">No pipelines.</p>'
    pos = layout(nodes, edges)
    width = max(x for x, _ in pos.values()) + NODE_W + PAD
    height = max(y for _, y in pos.values()) + NODE_H + PAD
    parts = [
        f'<svg class="lineage" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="group" aria-label="Lineage: {len(nodes)} pipelines, {len(edges)} references">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#57606a"/></marker></defs>',
    ]
    for a, b in edges:
        if a not in pos or b not in pos:
            continue
        (x1, y1), (x2, y2) = pos[a], pos[b]
        sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
        mid = (sx + ex) // 2
        parts.append(
            f'<path class="edge" data-from="{_e(a)}" data-to="{_e(b)}" '
            f'd="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" marker-end="url(#arrow)"/>'
        )
    for n in nodes:
        x, y = pos[n]
        label = (labels or {}).get(n, n)
        shown_label = label if len(label) <= 22 else label[:21] + "…"
        cls = "node" + (" focus" if n == focus else "") + (" ephemeral" if n in ephemeral else "")
        kind = "ephemeral pipeline" if n in ephemeral else "pipeline"
        parts.append(
            f'<a class="{cls}" data-node="{_e(n)}" href="{_e(href + page_name(n))}" '
            f'aria-label="{kind} {_e(label)}"><rect x="{x}" y="{y}" width="{NODE_W}" '
            f'height="{NODE_H}" rx="6"/><text x="{x + NODE_W // 2}" y="{y + NODE_H // 2 + 5}" '
            f'text-anchor="middle">{_e(shown_label)}</text></a>'
        )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- pages


def _page(title: str, body: str, depth: int, docs: ProjectDocs) -> str:
    up = "../" * depth
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · QueryForge docs</title>"
        f'<link rel="stylesheet" href="{up}assets/site.css"></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><nav aria-label="Site"><a class="brand" href="{up}index.html">QueryForge docs</a>'
        f'<a href="{up}index.html#pipelines">Pipelines</a><a href="{up}index.html#tables">Tables</a>'
        f'<a href="{up}index.html#lineage">Lineage</a></nav></header>'
        f'<main id="main">{body}</main>'
        f"<footer><p>Built {_e(docs.generated_at)} by <code>queryforge docs build</code>.</p></footer>"
        f'<script src="{up}assets/site.js"></script></body></html>\n'
    )


def _status(status: str) -> str:
    cls = {"succeeded": "ok", "warn": "warn"}.get(status, "bad" if status == "failed" else "neutral")
    return f'<span class="badge {cls}">{_e(status)}</span>'


def _last(result: str | None) -> str:
    if result is None:
        return '<span class="muted">not run</span>'
    return f'<span class="badge {"ok" if result == "passed" else "bad"}">{_e(result)}</span>'


def _runs_table(p: PipelineEntry) -> str:
    if not p.runs:
        return '<p class="muted">No runs yet: <code>queryforge run --select ' + _e(p.name) + "</code></p>"
    rows = "".join(
        f"<tr><td><code>{_e(r.id)}</code></td><td>{_status(r.status)}</td><td>{_e(r.started_at)}</td>"
        f'<td class="num">{_e(r.duration_s)}</td><td class="num">{_e(r.rows)}</td>'
        f'<td class="num">{_e(r.checks_passed)}</td><td class="num">{_e(r.checks_failed)}</td>'
        f"<td>{_e(r.error)}</td></tr>"
        for r in p.runs
    )
    return (
        '<table><caption>Last runs, newest first</caption><thead><tr><th scope="col">Run</th>'
        '<th scope="col">Status</th><th scope="col">Started</th><th scope="col">Seconds</th>'
        '<th scope="col">Rows</th><th scope="col">Checks passed</th><th scope="col">Checks failed</th>'
        f'<th scope="col">Error</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _links(names: list[str], prefix: str) -> str:
    if not names:
        return '<span class="muted">none</span>'
    return ", ".join(f'<a href="{_e(prefix + page_name(n))}">{_e(n)}</a>' for n in names)


def _ephemeral(docs: ProjectDocs) -> frozenset[str]:
    return frozenset(p.name for p in docs.pipelines if p.ephemeral)


def _neighbourhood(docs: ProjectDocs, name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The pipeline with everything upstream and downstream of it, upstream first."""
    order = [p.name for p in docs.pipelines]
    keep = {name}
    for direction in (0, 1):
        todo = [name]
        while todo:
            n = todo.pop()
            for edge in docs.edges:
                if edge[1 - direction] == n and edge[direction] not in keep:
                    keep.add(edge[direction])
                    todo.append(edge[direction])
    return [n for n in order if n in keep], [e for e in docs.edges if e[0] in keep and e[1] in keep]


def pipeline_page(docs: ProjectDocs, p: PipelineEntry) -> str:
    fresh = f"last published {_e(p.last_success)}" if p.last_success else "never published"
    body = [
        f'<h1>{_e(p.name)} <span class="kind">pipeline</span></h1>',
        f'<p class="lead">{_e(p.description)}</p>' if p.description else "",
        '<dl class="facts">',
        f"<dt>File</dt><dd><code>{_e(p.path)}</code></dd>",
        f"<dt>Tags</dt><dd>{_e(', '.join(p.tags)) or '<span class=muted>none</span>'}</dd>",
        f"<dt>Reads</dt><dd>{_links(p.upstream, '')}</dd>",
        f"<dt>Read by</dt><dd>{_links(p.downstream, '')}</dd>",
        f"<dt>Publishes</dt><dd>{_links(p.tables, '../tables/')}</dd>",
        f"<dt>Freshness</dt><dd>{fresh}</dd>"
        if not p.ephemeral
        else "<dt>Ephemeral</dt><dd>publishes nothing: inlined into the pipelines that read it</dd>",
        "</dl>",
    ]
    if p.error:
        body.append(f'<div class="error" role="note"><h2>Does not compile</h2><pre>{_e(p.error)}</pre></div>')
    nodes, edges = _neighbourhood(docs, p.name)
    body += [
        '<h2 id="lineage">Lineage</h2><div class="graph">',
        lineage_svg(nodes, edges, "", focus=p.name, ephemeral=_ephemeral(docs)),
        "</div>",
    ]
    if p.steps:
        rows = "".join(
            f"<tr><td><code>{_e(s.id)}</code></td><td>{_e(s.kind)}</td>"
            f"<td>{_e(', '.join(s.inputs))}</td><td>{_e(s.description)}</td></tr>"
            for s in p.steps
        )
        body.append(
            '<h2 id="steps">Steps</h2><table><caption>Steps in file order</caption><thead><tr>'
            '<th scope="col">Step</th><th scope="col">Kind</th><th scope="col">Reads</th>'
            f'<th scope="col">Description</th></tr></thead><tbody>{rows}</tbody></table>'
        )
    if p.checks:
        rows = "".join(
            f"<tr><td><code>{_e(c['rule'])}</code></td><td><code>{_e(c['input'])}</code></td>"
            f"<td>{_e(c['severity'])}</td><td><code>{_e(c['step'])}</code></td>"
            f"<td>{_last(c.get('last'))}</td></tr>"
            for c in p.checks
        )
        body.append(
            '<h2 id="checks">Checks</h2><table><caption>Rules audited before every publish</caption>'
            '<thead><tr><th scope="col">Rule</th><th scope="col">On step</th><th scope="col">Severity</th>'
            '<th scope="col">Declared in</th><th scope="col">Last run</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    body += ['<h2 id="runs">Runs</h2>', _runs_table(p)]
    return _page(p.name, "".join(body), 1, docs)


def table_page(docs: ProjectDocs, t: TableEntry) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(c.name)}</code></td><td><code>{_e(c.type)}</code></td>"
        f"<td>{_e(c.description)}</td><td>{_e(', '.join(c.checks))}</td></tr>"
        for c in t.columns
    )
    body = (
        f'<h1>{_e(t.table)} <span class="kind">table</span></h1>'
        + (f'<p class="lead">{_e(t.description)}</p>' if t.description else "")
        + '<dl class="facts">'
        + f"<dt>Connection</dt><dd><code>{_e(t.connection)}</code></dd>"
        + f"<dt>Published by</dt><dd>{_links([t.pipeline], '../pipelines/')} "
        + f"(step <code>{_e(t.step)}</code>, mode {_e(t.mode)})</dd>"
        + f"<dt>Read by</dt><dd>{_links(t.read_by, '../pipelines/')}</dd></dl>"
        + '<h2 id="columns">Columns</h2><table><caption>Columns as the pipeline compiles them</caption>'
        + '<thead><tr><th scope="col">Column</th><th scope="col">Type</th><th scope="col">Description</th>'
        + f'<th scope="col">Checks</th></tr></thead><tbody>{rows}</tbody></table>'
    )
    return _page(t.table, body, 1, docs)


def search_index(docs: ProjectDocs) -> list[dict[str, str]]:
    """What the index page's search looks through: names, descriptions, tags and column names."""
    out = [
        {
            "kind": "pipeline",
            "name": p.name,
            "href": "pipelines/" + page_name(p.name),
            "about": p.description or "",
            "text": " ".join([p.name, p.description or "", *p.tags, *(s.id for s in p.steps)]).lower(),
        }
        for p in docs.pipelines
    ]
    out += [
        {
            "kind": "table",
            "name": t.key,
            "href": "tables/" + page_name(t.key),
            "about": t.description or "",
            "text": " ".join(
                [
                    t.key,
                    t.description or "",
                    *(c.name for c in t.columns),
                    *(c.description or "" for c in t.columns),
                ]
            ).lower(),
        }
        for t in docs.tables
    ]
    return out


def index_page(docs: ProjectDocs) -> str:
    items = search_index(docs)
    entries = "".join(
        f'<li data-i="{i}"><span class="kind">{_e(it["kind"])}</span> '
        f'<a href="{_e(it["href"])}">{_e(it["name"])}</a> <span class="muted">{_e(it["about"])}</span></li>'
        for i, it in enumerate(items)
    )
    failing = [p for p in docs.pipelines if p.runs and p.runs[0].status not in ("succeeded", "warn")]
    never = [p for p in docs.pipelines if not p.last_success]
    summary = (
        f"{len(docs.pipelines)} pipelines, {len(docs.tables)} tables; "
        f"{len(failing)} whose last run failed, {len(never)} never published."
    )
    # every "<" escaped: no "</script>" or "<!--" from a description can end the script block early
    index_json = json.dumps([{"text": it["text"]} for it in items]).replace("<", "\\u003c")
    body = (
        "<h1>Project documentation</h1>"
        f'<p class="lead">{_e(summary)}</p>'
        '<section aria-labelledby="search-h"><h2 id="search-h">Search</h2>'
        '<label for="search">Pipelines, tables and columns</label> '
        '<input id="search" type="search" autocomplete="off" placeholder="e.g. orders, amount, marts">'
        '<p id="search-count" class="muted" aria-live="polite"></p>'
        f'<ul id="results" class="results">{entries}</ul>'
        f'<script id="search-index" type="application/json">{index_json}</script></section>'
        '<section aria-labelledby="lineage"><h2 id="lineage">Lineage</h2>'
        '<p class="muted">Each box is a pipeline; an arrow points from a pipeline to one that reads its '
        "output. Hover or focus a box to highlight its lineage; select it to open its page.</p>"
        '<div class="graph">'
        + lineage_svg([p.name for p in docs.pipelines], docs.edges, "pipelines/", ephemeral=_ephemeral(docs))
        + "</div></section>"
        + '<section aria-labelledby="pipelines"><h2 id="pipelines">Pipelines</h2>'
        + _overview(docs)
        + "</section>"
        + '<section aria-labelledby="tables"><h2 id="tables">Tables</h2><ul>'
        + "".join(
            f'<li><a href="tables/{_e(page_name(t.key))}">{_e(t.key)}</a> '
            f'<span class="muted">{len(t.columns)} columns, from {_e(t.pipeline)}</span></li>'
            for t in docs.tables
        )
        + "</ul></section>"
    )
    return _page("Project", body, 0, docs)


def _overview(docs: ProjectDocs) -> str:
    rows = "".join(
        f'<tr><td><a href="pipelines/{_e(page_name(p.name))}">{_e(p.name)}</a></td>'
        f"<td>{_e(', '.join(p.tags))}</td>"
        f"<td>{_status(p.runs[0].status) if p.runs else '<span class=muted>no runs</span>'}</td>"
        f"<td>{_e(p.last_success) or '<span class=muted>never</span>'}</td>"
        f"<td>{len(p.checks)}</td></tr>"
        for p in docs.pipelines
    )
    return (
        "<table><caption>Every pipeline, upstream first, with its last run</caption><thead><tr>"
        '<th scope="col">Pipeline</th><th scope="col">Tags</th><th scope="col">Last run</th>'
        '<th scope="col">Last published</th><th scope="col">Checks</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def write_site(docs: ProjectDocs, out: Path) -> list[Path]:
    """Write the site under `out` (replacing an earlier build's pages); returns the files written."""
    written: list[Path] = []

    def put(rel: str, text: str) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    for folder in ("pipelines", "tables"):  # pages of pipelines since deleted must not linger
        for old in (out / folder).glob("*.html") if (out / folder).is_dir() else ():
            old.unlink()
    put("index.html", index_page(docs))
    for p in docs.pipelines:
        put("pipelines/" + page_name(p.name), pipeline_page(docs, p))
    for t in docs.tables:
        put("tables/" + page_name(t.key), table_page(docs, t))
    for asset in ("site.css", "site.js"):
        put("assets/" + asset, (ASSETS / asset).read_text(encoding="utf-8"))
    put("docs.json", json.dumps(docs.to_json(), indent=1))
    return written
