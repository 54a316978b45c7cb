"""The path fence through the real CLI: `queryforge validate` on files a person wrote, and
`queryforge ask` on drafts an LLM (the scripted fake server) replies with.

The field x trick matrix and the in-process checks are in tests/unit/test_path_fence.py; here each
refusal must reach the user as one clear paragraph with exit code 2, and each refused draft must
be on the audit log with nothing written outside the workspace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from queryforge.workspace import Workspace
from tests.conftest import CliResult
from tests.fakes.openai_server import FakeLLMServer, chat
from tests.unit.test_path_fence import CASES, Case, Site, make_site, pipeline_of, reached_text

REFUSED = [c for c in CASES if c.human == "refused"]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_cli_validate_refuses(site: Site, case: Case, qf: Callable[..., CliResult]) -> None:
    path = site.root / "pipelines" / "suspicious.yaml"
    path.write_text(yaml.safe_dump(pipeline_of(case, site), sort_keys=False))
    result = qf("validate", "pipelines/suspicious.yaml", cwd=site.root)
    assert result.code == 2, result.stdout + result.stderr
    text = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr and "Internal error" not in result.stderr
    assert "Blocked:" in text and case.field in text
    assert reached_text(case, site) in text
    assert "suspicious.yaml:" in text  # file:line of the step


# The three leaks reproduced in issue 10 (defect 5), as an LLM would draft them.
LEAKS = [c for c in CASES if c.id in ("files-table-dotdot", "conn-dotdot", "extract-metadata-db")]


@pytest.mark.slow
@pytest.mark.parametrize("case", LEAKS, ids=lambda c: c.id)
def test_cli_ask_refuses_and_audits(site: Site, case: Case, qf: Callable[..., CliResult]) -> None:
    before = site.snapshot()
    draft = pipeline_of(case, site)
    with FakeLLMServer() as server:
        server.script(*[chat(json.dumps(draft))] * 3)  # a draft, then the same as every "repair"
        result = qf(
            "ask",
            "copy the data",
            "--workspace",
            str(site.root),
            "--commit",
            "--yes",
            "--json",
            cwd=site.root,
            env=server.openai_env(),
        )
    assert result.code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert site.snapshot() == before
    assert not [p for p in site.outside.iterdir() if p.name.startswith(".")], "temp file outside"
    ws = Workspace(site.root)
    try:
        blocks = [e for e in ws.repo.list_audit(action="path_policy") if e["decision"] == "block"]
        assert not ws.repo.list_runs(), "a refused draft must not be rehearsed"
    finally:
        ws.close()
    assert blocks and all(b["details"]["field"] == case.field for b in blocks)
    assert os.path.basename(reached_text(case, site)) in blocks[0]["reason"]
