"""Shared fixtures: fresh workspaces and a way to drive the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queryforge.workspace import Workspace

QF = str(Path(sys.executable).with_name("queryforge"))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def make_workspace(tmp_path: Path) -> Iterator[Callable[..., Workspace]]:
    """Builder: make_workspace(bare=False) -> an initialised Workspace in its own tmp folder."""
    opened: list[Workspace] = []

    def build(bare: bool = False, name: str = "ws") -> Workspace:
        ws = Workspace.init(tmp_path / name, bare=bare)
        opened.append(ws)
        return ws

    yield build
    for ws in opened:
        ws.close()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised demo workspace per session; copy it instead of regenerating the data."""
    root = tmp_path_factory.mktemp("template") / "demo"
    Workspace.init(root).close()
    shutil.rmtree(root / ".queryforge")
    (root / ".queryforge").mkdir()
    return root


@pytest.fixture
def demo(tmp_path: Path, demo_template: Path) -> Path:
    """A fresh copy of the demo workspace folder (sample data + example pipelines)."""
    target = tmp_path / "demo"
    shutil.copytree(demo_template, target)
    return target


@pytest.fixture
def qf() -> Callable[..., CliResult]:
    """Run the installed `queryforge` command: qf("run", "x.yaml", cwd=folder)."""

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
        full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
        p = subprocess.run(
            [QF, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
        )
        return CliResult(p.returncode, p.stdout, p.stderr)

    return run
