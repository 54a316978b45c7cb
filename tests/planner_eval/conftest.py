"""Fixtures shared by the planner evaluation test modules (test_planner_eval.py, test_planner_holdout.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.planner_eval.harness import Harness

PROVIDER = os.environ.get("PLANNER_EVAL_PROVIDER", "rules")


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("planner-eval"), provider=PROVIDER)
    yield h
    h.close()


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this run sees (the base temp's parent under xdist)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / "planner-eval-families"
    folder.mkdir(exist_ok=True)
    return folder
