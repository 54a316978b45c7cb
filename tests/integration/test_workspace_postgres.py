"""The whole run lifecycle with the metadata store in PostgreSQL instead of SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from queryforge.config import Settings
from queryforge.workspace import Workspace
from tests.conftest import CliResult
from tests.services import postgres_database

pytestmark = pytest.mark.postgres


def test_sandbox_commit_and_history_with_postgres_metadata(demo: Path) -> None:
    with postgres_database() as url:
        settings = Settings(database_url=url)
        with Workspace(demo, settings) as ws:
            audited = ws.run("daily_sales", sandbox=True)
            assert audited.status == "audited"
            assert not (demo / ".queryforge" / "metadata.db").exists()
            committed = ws.commit(audited.run_id)
            assert committed.status == "succeeded"
            detail = ws.run_detail(audited.run_id)
            assert [s["phase"] for s in detail["snapshots"]] == ["before", "after"]
            assert {c["rule_name"] for c in detail["checks"]} >= {"unique(country, day)", "row_count"}
            assert [r.id for r in ws.list_runs(limit=5)] == [audited.run_id]
        con = duckdb.connect(str(demo / ".queryforge" / "warehouse.duckdb"), read_only=True)
        try:
            rows = con.execute("SELECT count(*) FROM analytics.daily_sales").fetchone()
        finally:
            con.close()
        assert rows is not None and rows[0] == detail["snapshots"][1]["rows"] > 0


def test_cli_uses_queryforge_database_url(demo: Path, qf: Callable[..., CliResult]) -> None:
    with postgres_database() as url:
        result = qf("run", "customers_clean", "--json", cwd=demo, env={"QUERYFORGE_DATABASE_URL": url})
        assert result.code == 0, result.stderr
        listed = qf("runs", "list", "--json", cwd=demo, env={"QUERYFORGE_DATABASE_URL": url})
        assert [r["status"] for r in listed.json()] == ["succeeded"]
        # The local SQLite store knows nothing of this run: the URL really chose the store.
        local = qf("runs", "list", "--json", cwd=demo)
        assert local.json() == []
