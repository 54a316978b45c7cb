"""The planner evaluation: the rules provider must get at least 90 % of the eval cases exactly right.

The cases, data and runner are a copy of ../shared/eval/planner in tests/fixtures/planner_eval (CI
has no ../shared). The runner's own functions score each case (fresh bare workspace, `queryforge
ask ... --commit --yes --json`, then the produced table against the expected DuckDB query); two
cases run at a time. A failing score prints every failed case with the runner's reason.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

EVAL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "planner_eval"
QF = str(Path(sys.executable).with_name("queryforge"))
GOAL = 0.90
WORKERS = 2


def load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qf_planner_run_eval", EVAL_DIR / "run_eval.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serialised(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`expected_rows` changes the process's working directory: one thread at a time."""
    lock = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return fn(*args, **kwargs)

    return wrapper


def test_the_fixture_copy_is_complete() -> None:
    cases = yaml.safe_load((EVAL_DIR / "cases.yaml").read_text())["cases"]
    assert len(cases) >= 30
    needed = {"orders.csv", "customers.csv", "products.csv", "products.parquet", "legacy.sqlite"}
    assert needed <= {p.name for p in (EVAL_DIR / "data").iterdir()}
    assert len({c["id"] for c in cases}) == len(cases)


@pytest.mark.slow
def test_rules_planner_scores_at_least_90_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = load_runner()
    runner.expected_rows = serialised(runner.expected_rows)
    # The offline rules provider is the one scored, whatever the environment says.
    monkeypatch.setenv("QUERYFORGE_LLM", "rules")
    cases = yaml.safe_load((EVAL_DIR / "cases.yaml").read_text())["cases"]
    data = str(EVAL_DIR / "data")
    cwd = os.getcwd()

    def score(case: dict[str, Any]) -> tuple[str, bool, str]:
        try:
            ok, why = runner.run_case(case, data, QF)
        except Exception as exc:  # a crash of the tool under test is a failed case, like run_eval
            ok, why = False, f"{type(exc).__name__}: {exc}"
        return case["id"], ok, why

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(score, cases))
    assert os.getcwd() == cwd

    passed = sum(ok for _, ok, _ in results)
    failures = "\n".join(f"  FAIL {cid}: {why}" for cid, ok, why in results if not ok)
    rate = passed / len(results)
    print(f"planner eval: {passed}/{len(results)} = {rate:.1%}")
    assert rate >= GOAL, (
        f"planner eval scored {passed}/{len(results)} = {rate:.1%} (< {GOAL:.0%}):\n{failures}"
    )
