"""The path fence: every pipeline field naming a file is judged by the real path it reaches.

Issue 10, defect 5: the `ask` gate checked only `path:`. A files-connection `table` wrote outside
the workspace during a rehearsal, an `@file` connection read a database outside it, and
`extract: {path: .queryforge/metadata.db, table: runs}` read the metadata of every org.

Each case is one field x one trick. A human-written pipeline goes through `Workspace.validate`
(the CLI's `queryforge validate` is exercised in tests/e2e/test_path_fence.py); a drafted one
through the whole `ask` loop with a scripted provider. Outside reads stay allowed for people;
`.queryforge/` and writes that leave their connection's folder are refused for everyone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

import queryforge.workspace as workspace_module
from queryforge.connectors.paths import PathFence, PathRefused, glob_base, real_path
from queryforge.errors import NotFoundError, QueryForgeError
from queryforge.spec.loader import PipelineSource
from queryforge.workspace import Workspace

ORDERS = "order_id,amount\n1,10.5\n2,20.0\n"


@dataclass
class Site:
    """A workspace next to an `outside` folder it must not leak into, with every trick prepared."""

    root: Path
    outside: Path

    def snapshot(self) -> dict[str, bytes]:
        """Every file under `outside` (symlinks not followed), to prove nothing was written there."""
        return {
            str(p.relative_to(self.outside)): p.read_bytes()
            for p in sorted(self.outside.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }


def make_site(base: Path) -> Site:
    root, outside = base / "ws", base / "outside"
    Workspace.init(root, bare=True).close()
    outside.mkdir()
    (outside / "secret.csv").write_text("secret\nhunter2\n")
    with closing(sqlite3.connect(outside / "db.sqlite")) as con:
        con.execute("CREATE TABLE t (secret TEXT)")
        con.execute("INSERT INTO t VALUES ('hunter2')")
        con.commit()
    (root / "data" / "orders.csv").write_text(ORDERS)
    with closing(sqlite3.connect(root / "data" / "local.sqlite")) as con:
        con.execute("CREATE TABLE t (id INTEGER)")
        con.execute("INSERT INTO t VALUES (1)")
        con.commit()
    state = root / ".queryforge"
    with closing(duckdb.connect(str(state / "warehouse.duckdb"))) as dcon:
        dcon.execute("CREATE TABLE t AS SELECT 42 AS answer")
    (state / "runs" / "r1").mkdir(parents=True)
    (state / "runs" / "r1" / "part.csv").write_text("token\nrun-secret\n")
    (root / "links").mkdir()
    (root / "links" / "link.csv").symlink_to(outside / "secret.csv")
    (root / "links" / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "links" / "meta.db").symlink_to(state / "metadata.db")
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"]["exports"] = {"url": "file:out", "writable": True}
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    return Site(root=root, outside=outside)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "extract" or "load": which step carries the field under test
    body: dict[str, Any]  # the step body; {outside} is replaced by the outside folder
    field: str
    human: str  # "refused", "allowed" or "not_found"
    reached: str = "state"  # what the refusal names: "state" (.queryforge) or "outside" or "url"


def ext(id: str, human: str, reached: str = "state", **body: Any) -> Case:
    """An extract case; the field under test is its connection if it names one, else its path."""
    return Case(
        id, "extract", body, "extract.connection" if "connection" in body else "extract.path", human, reached
    )


def out(id: str, reached: str = "state", **body: Any) -> Case:
    """A load case (refused for everyone): its path, its @file connection or its files table."""
    conn = str(body.get("connection", ""))
    name = "load.path" if "path" in body else "load.connection" if conn.startswith("@") else "load.table"
    return Case(id, "load", body, name, "refused", reached)


OUT, OK = "outside", "allowed"
CASES = [
    # extract.path: files and globs
    ext("extract-dotdot", OK, OUT, path="../outside/secret.csv"),
    ext("extract-absolute", OK, OUT, path="{outside}/secret.csv"),
    ext("extract-symlink-out", OK, OUT, path="links/link.csv"),
    ext("extract-glob-symlink-dir", OK, OUT, path="links/linkdir/*.csv"),
    ext("extract-runs", "refused", path=".queryforge/runs/r1/part.csv"),
    ext("extract-respelled", "refused", path="./.queryforge/../.queryforge/runs/r1/part.csv"),
    ext("extract-data-dotdot", "refused", path="data/../.queryforge/runs/r1/part.csv"),
    ext("extract-glob-hidden", "refused", path=".q*/runs/*/*.csv"),
    ext("extract-glob-state", "refused", path=".queryforge/*", format="csv"),
    ext("extract-url", "not_found", "url", path="https://example.com/x.csv"),
    # extract.path naming a database file (with table:)
    ext("extract-metadata-db", "refused", path=".queryforge/metadata.db", table="runs"),
    ext("extract-warehouse", "refused", path=".queryforge/warehouse.duckdb", table="t"),
    ext("extract-db-symlink-in", "refused", path="links/meta.db", table="runs"),
    # extract.connection: @file databases
    ext("conn-dotdot", OK, OUT, connection="@../outside/db.sqlite", table="t"),
    ext("conn-absolute", OK, OUT, connection="@{outside}/db.sqlite", table="t"),
    ext("conn-metadata", "refused", connection="@.queryforge/metadata.db", table="runs"),
    ext("conn-warehouse", "refused", connection="@.queryforge/warehouse.duckdb", table="t"),
    ext("conn-symlink-in", "refused", connection="@links/meta.db", table="runs"),
    # load.path: file targets in the workspace folder
    out("load-dotdot", OUT, path="../outside/x.csv"),
    out("load-absolute", OUT, path="{outside}/x.csv"),
    out("load-symlink-dir", OUT, path="links/linkdir/x.csv"),
    out("load-runs", path=".queryforge/runs/r1/x.csv"),
    out("load-dotdot-late", OUT, path="out/../../outside/x.csv"),
    # load.table of a files connection: the implicit `files`, and `exports` (file:out)
    out("files-table-dotdot", OUT, connection="files", table="../outside/x.csv"),
    out("files-table-state", connection="files", table=".queryforge/x.csv"),
    out("folder-table-dotdot", OUT, connection="exports", table="../../outside/x.csv"),
    out("folder-table-sibling", "folder", connection="exports", table="../data/x.csv"),
    # load.connection: an @file database
    out("load-conn-metadata", connection="@.queryforge/metadata.db", table="runs"),
]


def pipeline_of(case: Case, site: Site) -> dict[str, Any]:
    """A two-step pipeline whose one suspicious field is the case's."""
    body = {
        k: v.replace("{outside}", str(site.outside)) if isinstance(v, str) else v
        for k, v in case.body.items()
    }
    if case.kind == "extract":
        steps = [
            {"id": "src", "extract": body},
            {"id": "sink", "load": {"input": "src", "path": "out/r.parquet"}},
        ]
    else:
        steps = [
            {"id": "src", "extract": {"path": "data/orders.csv"}},
            {"id": "sink", "load": {"input": "src", **body}},
        ]
    return {"name": f"fence_{case.id.replace('-', '_')}", "steps": steps}


def reached_text(case: Case, site: Site) -> str:
    """What a refusal must name: the real folder the field reached."""
    return {
        "state": str(site.root.resolve() / ".queryforge"),
        "outside": str(site.outside.resolve()),
        "url": "URL",
        "folder": str(site.root.resolve() / "data" / "x.csv"),
    }[case.reached]


def open_ws(site: Site) -> Workspace:
    return Workspace(site.root)


# ---------------------------------------------------------------- human-written pipelines


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_validate_fences_human_pipeline(site: Site, case: Case) -> None:
    """`validate` refuses `.queryforge/` and escaping writes; an explicit outside read still works."""
    ws = open_ws(site)
    source = PipelineSource(raw=pipeline_of(case, site), origin=str(site.root / "pipelines" / "p.yaml"))
    before = site.snapshot()
    try:
        if case.human == "allowed":
            plan = ws.compile(source.bind())
            assert plan.stages
            return
        expected = PathRefused if case.human == "refused" else NotFoundError
        with pytest.raises(expected) as info:
            ws.compile(source.bind())
        if case.human == "refused":
            err = info.value
            assert isinstance(err, PathRefused)
            assert "step 'src'" in err.message or "step 'sink'" in err.message
            assert case.field in err.message
            assert reached_text(case, site) in err.message
            assert err.exit_code == 2
    finally:
        ws.close()
    assert site.snapshot() == before


# ---------------------------------------------------------------- drafted pipelines (ask)


class ScriptedProvider:
    """A planner provider that drafts the given pipeline and cannot repair."""

    name = "scripted"

    def __init__(self, pipeline: dict[str, Any]) -> None:
        self.pipeline = pipeline

    def draft(self, request: str, ctx: Any) -> Any:
        return type("Draft", (), {"pipeline": self.pipeline, "notes": []})()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Make `Workspace.ask` draft whatever the test puts under ["pipeline"]."""
    holder: dict[str, Any] = {}
    monkeypatch.setattr(
        workspace_module, "get_provider", lambda name=None, **_: ScriptedProvider(holder["pipeline"])
    )
    yield holder


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_ask_fences_drafted_pipeline(site: Site, case: Case, scripted: dict[str, Any]) -> None:
    """Every trick is refused before rehearsal, on the audit log, and nothing lands outside."""
    scripted["pipeline"] = pipeline_of(case, site)
    before = site.snapshot()
    ws = open_ws(site)
    try:
        outcome = ws.ask("copy the data", consent=lambda _o: True)
        assert outcome.status == "failed", outcome.status
        first = outcome.attempts[0]
        assert first.run_id is None, "a refused draft must not be rehearsed"
        assert first.error_class == "PERMISSION_DENIED" or first.error_class == "permission_denied"
        assert isinstance(outcome.error, QueryForgeError)
        blocks = [e for e in ws.repo.list_audit(action="path_policy") if e["decision"] == "block"]
        assert blocks, "the refusal must be on the audit log"
        details = blocks[0]["details"]
        assert details["step"] in ("src", "sink")
        assert details["field"] == case.field
        assert reached_text(case, site).split("/")[-1] in blocks[0]["reason"]
    finally:
        ws.close()
    assert site.snapshot() == before
    assert not list(site.outside.glob(".*.tmp")), "no temp file may be written outside"


def test_ask_gate_matches_compiler_for_drafts(site: Site) -> None:
    """A drafted pipeline that skipped the gate (e.g. resumed) is still refused when it compiles."""
    ws = open_ws(site)
    try:
        drafts = site.root / ".queryforge" / "asks" / "a1"
        drafts.mkdir(parents=True)
        raw = pipeline_of(CASES[0], site)  # reads ../outside/secret.csv: fine for a person, not a draft
        with pytest.raises(PathRefused, match="outside the workspace"):
            ws.compile(PipelineSource(raw=raw, origin=str(drafts / "attempt-1.yaml")).bind())
        ws.compile(PipelineSource(raw=raw, origin=str(site.root / "pipelines" / "p.yaml")).bind())
    finally:
        ws.close()


# ---------------------------------------------------------------- what still works


ORDINARY = [
    {"id": "a", "extract": {"path": "data/orders.csv"}},
    {"id": "b", "extract": {"path": "data/*.csv"}},
    {"id": "c", "extract": {"path": "data/local.sqlite", "table": "t"}},
    {"id": "d", "extract": {"connection": "@data/local.sqlite", "table": "t"}},
    {"id": "e", "sql": "SELECT a.order_id, a.amount, c.id FROM a JOIN b USING (order_id) CROSS JOIN c"},
    {"id": "f", "sql": "SELECT * FROM d"},
    {"id": "out1", "load": {"input": "e", "path": "out/x.parquet"}},
    {"id": "out2", "load": {"input": "f", "connection": "exports", "table": "sub/y.csv"}},
    {"id": "out3", "load": {"input": "a", "connection": "files", "table": "out/z.csv"}},
    {"id": "out4", "load": {"input": "a", "table": "orders_copy"}},
]


@pytest.mark.parametrize("drafted", [False, True], ids=["human", "drafted"])
def test_ordinary_paths_still_work(site: Site, drafted: bool) -> None:
    """Workspace files, globs, a workspace SQLite file and ordinary targets compile and run."""
    ws = open_ws(site)
    folder = site.root / ".queryforge" / "asks" / "a1" if drafted else site.root / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    source = PipelineSource(raw={"name": "ordinary", "steps": ORDINARY}, origin=str(folder / "p.yaml"))
    try:
        ws.compile(source.bind())
        outcome = ws.run_source(source)
        assert outcome.error is None, outcome.error
    finally:
        ws.close()
    assert (site.root / "out" / "x.parquet").is_file()
    assert (site.root / "out" / "sub" / "y.csv").is_file()
    assert (site.root / "out" / "z.csv").is_file()


def test_ask_publishes_an_ordinary_draft(site: Site, scripted: dict[str, Any]) -> None:
    """The gate lets a draft over workspace files through: rehearsed, audited, published."""
    scripted["pipeline"] = {
        "name": "copy_orders",
        "steps": [
            {"id": "src", "extract": {"path": "data/orders.csv"}},
            {"id": "sink", "load": {"input": "src", "connection": "files", "table": "out/orders.csv"}},
        ],
    }
    ws = open_ws(site)
    try:
        outcome = ws.ask("copy orders", consent=lambda _o: True)
        assert outcome.status == "succeeded", outcome.attempts[-1].error
        assert not ws.repo.list_audit(action="path_policy")
    finally:
        ws.close()
    assert (site.root / "out" / "orders.csv").read_text().count("\n") == 3


# ---------------------------------------------------------------- the resolver itself


def test_real_path_resolves_dotdot_and_symlinks(site: Site) -> None:
    root = site.root
    assert real_path("data/../.queryforge/x", root) == root.resolve() / ".queryforge" / "x"
    assert real_path("links/link.csv", root) == (site.outside / "secret.csv").resolve()
    assert real_path(str(site.outside), root) == site.outside.resolve()


@pytest.mark.parametrize(
    ("pattern", "base"),
    [
        ("data/*.csv", "data"),
        ("*.csv", "."),
        ("data/2024-??/x.csv", "data"),
        ("/abs/dir/[ab].csv", "/abs/dir"),
        ("data/orders.csv", "data/orders.csv"),
    ],
)
def test_glob_base(pattern: str, base: str) -> None:
    assert glob_base(pattern) == base


def test_state_folder_behind_a_symlink_is_still_state(tmp_path: Path) -> None:
    """If .queryforge itself is a symlink, its real folder is fenced too."""
    root, real_state = tmp_path / "ws", tmp_path / "elsewhere"
    root.mkdir()
    real_state.mkdir()
    (root / ".queryforge").symlink_to(real_state, target_is_directory=True)
    fence = PathFence.of(root)
    target = real_path(".queryforge/metadata.db", root)
    assert target == real_state.resolve() / "metadata.db"
    assert fence.refusal(".queryforge/metadata.db", target) is not None
    assert fence.refusal("data/x.csv", real_path("data/x.csv", root)) is None


def test_human_write_cannot_leave_folder_but_read_can(tmp_path: Path) -> None:
    fence = PathFence.of(tmp_path)
    outside = (tmp_path / ".." / "o.csv").resolve()
    assert fence.refusal("../o.csv", outside) is None
    assert fence.refusal("../o.csv", outside, write=True, base=fence.root) is not None
    drafted = PathFence.of(tmp_path, drafted=True)
    assert drafted.refusal("../o.csv", outside) is not None
    assert drafted.refusal("s3://bucket/x.csv", fence.root / "s3:" / "bucket" / "x.csv") is not None
