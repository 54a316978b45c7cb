"""Score the planner on the paraphrase families, the must-ask suite and the shared dev cases.

Usage (from the repository root):

    python -m tests.planner_eval.score                # everything, tables on stdout
    python -m tests.planner_eval.score -j 2           # two worker processes
    python -m tests.planner_eval.score -k dates       # cases whose id/family/shape/kind/category has "dates"
    python -m tests.planner_eval.score --suite must_ask --json
    python -m tests.planner_eval.score --suite holdout -j 2  # the held-out set (never part of `all`)
    python -m tests.planner_eval.score --suite holdout2 -j 2  # the second held-out set (never read)
    python -m tests.planner_eval.score --suite holdout3 -j 2  # the third held-out set (tuned on)

Workspaces live in a temporary folder that is removed afterwards; nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.util
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tests.planner_eval.harness import (
    HELD_OUT,
    Case,
    Harness,
    Result,
    load_dev_cases,
    load_family_cases,
    load_held_out_cases,
    load_must_ask,
)

SUITES = ("family", "must_ask", "dev")  # `all`; the held-out set runs only when asked for (--suite holdout)
FAMILY_SUITES = ("family", *HELD_OUT)
MUST_ASK_SUITES = ("must_ask", *(f"{h}_must_ask" for h in HELD_OUT))


def select(cases: Iterable[Case], k: str | None) -> list[Case]:
    if not k:
        return list(cases)
    k = k.lower()
    return [
        c for c in cases if any(k in field.lower() for field in (c.id, c.family, c.shape, c.kind, c.category))
    ]


def all_cases(suites: Sequence[str], k: str | None = None) -> list[Case]:
    loaders = {"family": load_family_cases, "must_ask": load_must_ask, "dev": load_dev_cases}
    return [c for s in suites for c in select(loaders[s]() if s in loaders else load_held_out_cases(s), k)]


# ---------------------------------------------------------------- running (optionally in processes)
_worker: Harness | None = None


def _init_worker(provider: str | None) -> None:
    global _worker
    _worker = Harness(provider=provider)
    # pool workers skip atexit handlers; a multiprocessing finalizer removes the temporary folder
    multiprocessing.util.Finalize(_worker, _worker.close, exitpriority=10)


def _run_one(case: Case) -> Result:
    assert _worker is not None
    return _worker.run(case)


def run_cases(cases: list[Case], *, jobs: int = 1, provider: str | None = "rules") -> list[Result]:
    if jobs <= 1 or len(cases) <= 1:
        with Harness(provider=provider) as h:
            return h.run_many(cases)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(provider,)) as pool:
        return list(pool.map(_run_one, cases, chunksize=1))


# ---------------------------------------------------------------- summaries
def _rate(passed: int, total: int) -> float:
    return passed / total if total else 0.0


def breakdown(results: Iterable[Result], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        groups[getattr(r.case, key) or "-"].append(r.ok)
    return {
        name: {"passed": sum(oks), "total": len(oks), "rate": round(_rate(sum(oks), len(oks)), 4)}
        for name, oks in sorted(groups.items())
    }


def text_breakdown(results: list[Result], *keys: str) -> str:
    """`by <key>:` tables for a test's assertion message, one line per value of each key."""
    out = []
    for key in keys:
        rows = breakdown(results, key)
        out.append(f"by {key}:")
        out += [
            f"  {k:<24} {v['passed']:>4}/{v['total']:<4} {100 * v['rate']:5.1f}%" for k, v in rows.items()
        ]
    return "\n".join(out)


def failure_lines(results: Iterable[Result]) -> str:
    return "\n".join(f"  FAIL {r.case.id}: {r.case.prompt!r}\n       {r.detail}" for r in results if not r.ok)


def assert_score(label: str, results: list[Result], threshold: float, *keys: str) -> None:
    """The suite tests' one verdict: the share of passing `results` is at least `threshold`; the
    breakdown by `keys` is printed, and listed with every failing request when it is not."""
    passed = sum(r.ok for r in results)
    rate = passed / len(results)
    report = text_breakdown(results, *keys)
    print(f"{label}: {passed}/{len(results)} = {rate:.1%}\n{report}")
    assert rate >= threshold, (
        f"{label} scored {passed}/{len(results)} = {rate:.1%} (< {threshold:.0%})\n"
        f"{report}\nfailing requests:\n{failure_lines(results)}"
    )


def summary(results: list[Result]) -> dict[str, Any]:
    fam = [r for r in results if r.case.suite in FAMILY_SUITES]
    must = [r for r in results if r.case.suite in MUST_ASK_SUITES]
    dev = [r for r in results if r.case.suite == "dev"]

    def total(rs: list[Result]) -> dict[str, Any]:
        p = sum(r.ok for r in rs)
        return {"passed": p, "total": len(rs), "rate": round(_rate(p, len(rs)), 4)}

    silent_publishes = [r for r in must if r.status == "succeeded"]
    families_all_pass: dict[str, bool] = {}
    for r in fam:
        families_all_pass[r.case.family] = families_all_pass.get(r.case.family, True) and r.ok
    return {
        "families": {
            **total(fam),
            "families_fully_passed": sum(families_all_pass.values()),
            "families": len(families_all_pass),
            "by_shape": breakdown(fam, "shape"),
            "by_kind": breakdown(fam, "kind"),
            # held-out families only: tasks families.yaml also has (seen) or not (novel)
            **({"by_task": breakdown(fam, "task")} if any(r.case.suite in HELD_OUT for r in fam) else {}),
        },
        "must_ask": {
            **total(must),
            "silent_publishes": len(silent_publishes),
            "by_category": breakdown(must, "category"),
            "by_status": _count(r.status or "crash" for r in must),
        },
        "dev": total(dev),
        "failures": [r.as_dict() for r in results if not r.ok],
        "results": [r.as_dict() for r in results],
    }


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for i in items:
        out[i] += 1
    return dict(sorted(out.items()))


def _table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    width = max(len(title), *(len(k) for k in rows))
    lines = [f"{title:<{width}}  passed  total      %"]
    for name, s in rows.items():
        lines.append(f"{name:<{width}}  {s['passed']:>6}  {s['total']:>5}  {100 * s['rate']:5.1f}")
    return [*lines, ""]


def render(s: dict[str, Any], seconds: float) -> str:
    out: list[str] = []
    f, m, d = s["families"], s["must_ask"], s["dev"]
    if f["total"]:
        out += _table("shape", f["by_shape"])
        out += _table("kind", f["by_kind"])
        out += _table("task", f.get("by_task", {}))
        out.append(
            f"families: {f['passed']}/{f['total']} requests = {100 * f['rate']:.1f}% exact tables; "
            f"{f['families_fully_passed']}/{f['families']} families pass every phrasing"
        )
    if m["total"]:
        out += ["", *_table("must-ask category", m["by_category"])]
        statuses = ", ".join(f"{k} {v}" for k, v in m["by_status"].items())
        out.append(
            f"must-ask: {m['passed']}/{m['total']} = {100 * m['rate']:.1f}%; "
            f"silent publishes: {m['silent_publishes']}; statuses: {statuses}"
        )
    if d["total"]:
        out.append(f"dev (smoke): {d['passed']}/{d['total']} = {100 * d['rate']:.1f}%")
    if s["failures"]:
        out += ["", f"failures ({len(s['failures'])}):"]
        for r in s["failures"]:
            out.append(f"  FAIL {r['id']:<40} {r['prompt']!r}\n       {r['detail']}")
    out.append(f"\n{len(s['results'])} cases in {seconds:.0f}s")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="print the summary and every result as JSON")
    ap.add_argument("-k", help="only cases whose id, family, shape, kind or category contains this")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument(
        "--suite",
        choices=[*SUITES, *HELD_OUT, "all"],
        default="all",
        help=f"all = family, must_ask and dev; {', '.join(HELD_OUT)} = the held-out sets (only on request)",
    )
    ap.add_argument("--provider", default="rules", help="planner provider to score (default: rules)")
    a = ap.parse_args(argv)
    suites = SUITES if a.suite == "all" else (a.suite,)
    cases = all_cases(suites, a.k)
    start = time.perf_counter()
    results = run_cases(cases, jobs=a.jobs, provider=a.provider)
    s = summary(results)
    if a.json:
        print(json.dumps(s, indent=2))
    else:
        print(render(s, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
