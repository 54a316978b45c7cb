"""Data-quality rules: violation counts and samples against an independent count, and severities.

Every rule runs against a dataset it accepts and one it rejects. The expected offending rows
are computed in plain Python over the same CSV rows (read once with DuckDB), never with the
rule's own SQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.errors import ChecksFailed, FailureClass, SpecError
from queryforge.runs.executor import RunOutcome
from queryforge.workspace import Workspace

NOW = datetime.now().replace(microsecond=0)
FRESH = (NOW - timedelta(hours=1)).isoformat(sep=" ")
STALE = (NOW - timedelta(days=3)).isoformat(sep=" ")
OLD = (NOW - timedelta(days=9)).isoformat(sep=" ")

GOOD = f"""\
id,name,country,amount,email,parent_id,ts
1,Ann,NO,10,ann@example.com,100,{OLD}
2,Bob,SE,0,bob@example.com,101,{FRESH}
3,Cid,DK,100,cid@example.com,,{STALE}
4,Dan,NO,55.5,,100,
"""
# Seven rows break not_null(name), so the sample cap of five shows.
BAD = f"""\
id,name,country,amount,email,parent_id,ts
1,Ann,NO,10,ann@example.com,100,{STALE}
2,,SE,-1,bob@example,101,{OLD}
2,   ,XX,100.5,CID@example.com,999,
3,,no,,dan@example.com,,{STALE}
4,,SE,200,eve@@example.com,998,{OLD}
5,,NO,50,fay@example.com,100,
6,,,49.5,gus@example.com,101,{OLD}
7,,DK,0,,100,
7,,DK,0,,100,
8,,NO,30,hal@example.com,100,{OLD}
"""
PARENTS = "id,label\n100,a\n101,b\n102,c\n"

Row = dict[str, Any]


def rows_of(path: Path) -> list[Row]:
    """The CSV rows with the types DuckDB reads them as (the same reader the pipeline uses)."""
    with duckdb.connect() as con:
        rel = con.sql(f"SELECT * FROM read_csv('{path}')")
        return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]


# ---------------------------------------------------------------- rules and independent counts


def _where(predicate: Callable[[Row], bool]) -> Callable[[list[Row], list[Row]], list[Row]]:
    return lambda rows, parents: [r for r in rows if predicate(r)]


def _unique(rows: list[Row], parents: list[Row]) -> list[Row]:
    counts: dict[Any, int] = {}
    for r in rows:
        counts[r["id"]] = counts.get(r["id"], 0) + 1
    return [{"id": k, "occurrences": n} for k, n in counts.items() if n > 1]


def _row_count(rows: list[Row], parents: list[Row]) -> list[Row]:
    return [{"row_count": len(rows)}] if not 3 <= len(rows) <= 6 else []


def _fresh(rows: list[Row], parents: list[Row]) -> list[Row]:
    newest = max((r["ts"] for r in rows if r["ts"] is not None), default=None)
    return [{"newest": newest}] if newest is None or newest < NOW - timedelta(hours=24) else []


def _relationships(rows: list[Row], parents: list[Row]) -> list[Row]:
    known = {p["id"] for p in parents}
    return [r for r in rows if r["parent_id"] is not None and r["parent_id"] not in known]


EMAIL = r"[a-z]+@[a-z]+\.[a-z]+"
Offending = Callable[[list[Row], list[Row]], list[Row]]

# rule id -> (rule item as written in YAML, the offending rows/groups computed independently)
RULES: dict[str, tuple[dict[str, Any], Offending]] = {
    "not_null": ({"not_null": ["name"]}, _where(lambda r: r["name"] is None)),
    "not_null_amount": (
        {"not_null": ["amount"]},
        _where(lambda r: r["amount"] is None),
    ),
    "not_empty": (
        {"not_empty": "name"},
        _where(lambda r: r["name"] is None or r["name"].strip() == ""),
    ),
    "unique": ({"unique": ["id"]}, _unique),
    "accepted_values": (
        {"accepted_values": {"column": "country", "values": ["NO", "SE", "DK"]}},
        _where(lambda r: r["country"] is not None and r["country"] not in ("NO", "SE", "DK")),
    ),
    "range": (
        {"range": {"column": "amount", "min": 0, "max": 100}},
        _where(lambda r: r["amount"] is not None and not 0 <= r["amount"] <= 100),
    ),
    "range_min_only": (
        {"range": {"column": "amount", "min": 0}},
        _where(lambda r: r["amount"] is not None and r["amount"] < 0),
    ),
    "regex": (
        {"regex": {"column": "email", "pattern": EMAIL}},
        _where(lambda r: r["email"] is not None and re.fullmatch(EMAIL, r["email"]) is None),
    ),
    "row_count": ({"row_count": {"min": 3, "max": 6}}, _row_count),
    "relationships": (
        {"relationships": {"column": "parent_id", "to": "parents", "field": "id"}},
        _relationships,
    ),
    "expression": (
        {"expression": "amount * 2 <= 200 AND id > 0"},
        _where(lambda r: not (r["amount"] is not None and r["amount"] * 2 <= 200 and r["id"] > 0)),
    ),
    "freshness": ({"freshness": {"column": "ts", "max_age": "24h"}}, _fresh),
}
DATASETS = ("good", "bad")


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, RunOutcome]]:
    """One run with every rule on both datasets (severity warn, so every rule is evaluated)."""
    ws = Workspace.init(tmp_path_factory.mktemp("checks") / "ws", bare=True)
    (ws.root / "data" / "good.csv").write_text(GOOD)
    (ws.root / "data" / "bad.csv").write_text(BAD)
    (ws.root / "data" / "parents.csv").write_text(PARENTS)
    steps: list[dict[str, Any]] = [
        {"id": name, "extract": {"path": f"data/{name}.csv"}} for name in ("good", "bad", "parents")
    ]
    for data in DATASETS:
        for rule_id, (item, _) in RULES.items():
            steps.append(
                {"id": f"{data}__{rule_id}", "check": {"input": data, "rules": [item], "severity": "warn"}}
            )
    steps.append({"id": "publish", "load": {"input": "bad", "table": "bad_rows"}})
    (ws.root / "pipelines" / "checks.yaml").write_text(json.dumps({"name": "checks", "steps": steps}))
    outcome = ws.run("checks")
    yield ws, outcome
    ws.close()


def result_for(outcome: RunOutcome, step_id: str) -> dict[str, Any]:
    found = [c for c in outcome.checks if c["step_id"] == step_id]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("rule_id", list(RULES))
def test_rule_counts_and_samples_the_offending_rows(
    checked: tuple[Workspace, RunOutcome], rule_id: str, data: str
) -> None:
    ws, outcome = checked
    assert outcome.status == "succeeded", outcome.error
    rows = rows_of(ws.root / "data" / f"{data}.csv")
    offending = RULES[rule_id][1](rows, rows_of(ws.root / "data" / "parents.csv"))
    if data == "bad":
        assert offending, "the bad dataset must break every rule"
    else:
        assert not offending, "the good dataset must pass every rule"
    result = result_for(outcome, f"{data}__{rule_id}")
    assert result["rule"] == next(iter(RULES[rule_id][0]))
    assert result["severity"] == "warn"
    assert result["violations"] == len(offending)
    assert result["passed"] is (not offending)
    samples = result["samples"]
    assert len(samples) == min(5, len(offending))
    for sample in samples:
        assert sample in offending


def test_results_are_recorded_on_the_run(checked: tuple[Workspace, RunOutcome]) -> None:
    ws, outcome = checked
    recorded = ws.repo.list_check_results(outcome.run_id)
    assert len(recorded) == len(outcome.checks) == 2 * len(RULES)
    failing = sorted(r["step_id"] for r in outcome.checks if not r["passed"])
    assert failing == sorted(f"bad__{rule_id}" for rule_id in RULES)
    by_step = {r["step_id"]: r for r in recorded}
    for result in outcome.checks:
        assert by_step[result["step_id"]]["violations"] == result["violations"]
        assert by_step[result["step_id"]]["passed"] == result["passed"]


def test_run_detail_of_a_published_run_shows_its_checks(checked: tuple[Workspace, RunOutcome]) -> None:
    ws, outcome = checked
    detail = ws.run_detail(outcome.run_id)
    assert len(detail["checks"]) == 2 * len(RULES)
    assert detail["staged"] == []


# ---------------------------------------------------------------- schema rule (decided statically)


SCHEMA_CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "lenient_names_pass": ({"columns": ["id", "name"]}, []),
    "lenient_types_pass": ({"columns": {"id": "BIGINT", "amount": "double", "name": None}}, []),
    "lenient_missing_fails": ({"columns": ["id", "nmae"]}, ["missing column nmae"]),
    "lenient_wrong_type_fails": ({"columns": {"id": "VARCHAR"}}, ["column id is BIGINT, expected VARCHAR"]),
    "strict_all_columns_pass": (
        {
            "columns": {
                "id": "BIGINT",
                "name": "VARCHAR",
                "country": "VARCHAR",
                "amount": "DOUBLE",
                "email": "VARCHAR",
                "parent_id": "BIGINT",
                "ts": "TIMESTAMP",
            },
            "strict": True,
        },
        [],
    ),
    "strict_extra_columns_fail": (
        {"columns": ["id", "name", "country", "amount", "email"], "strict": True},
        ["unexpected column parent_id", "unexpected column ts"],
    ),
}


@pytest.fixture(scope="module")
def schema_checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunOutcome]:
    ws = Workspace.init(tmp_path_factory.mktemp("schema") / "ws", bare=True)
    (ws.root / "data" / "good.csv").write_text(GOOD)
    steps: list[dict[str, Any]] = [{"id": "good", "extract": {"path": "data/good.csv"}}]
    for case, (arg, _) in SCHEMA_CASES.items():
        steps.append({"id": case, "check": {"input": "good", "rules": [{"schema": arg}], "severity": "warn"}})
    (ws.root / "pipelines" / "schema.yaml").write_text(json.dumps({"name": "schema", "steps": steps}))
    yield ws.run("schema")
    ws.close()


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_schema_rule(schema_checked: RunOutcome, case: str) -> None:
    assert schema_checked.status == "succeeded", schema_checked.error
    problems = SCHEMA_CASES[case][1]
    result = result_for(schema_checked, case)
    assert result["passed"] is (not problems)
    assert result["violations"] == (1 if problems else 0)
    if problems:
        assert len(result["samples"]) == 1
        text = result["samples"][0]["problem"]
        for problem in problems:
            assert problem in text
        assert text.count(";") == len(problems) - 1
    else:
        assert result["samples"] == []


# ---------------------------------------------------------------- severity: warn publishes, error does not


def write_check_pipeline(ws: Workspace, rules: list[dict[str, Any]], severity: str | None = None) -> str:
    check: dict[str, Any] = {"input": "src", "rules": rules}
    if severity:
        check["severity"] = severity
    doc = {
        "name": "guarded",
        "steps": [
            {"id": "src", "extract": {"path": "data/bad.csv"}},
            {"id": "guard", "check": check},
            {"id": "publish", "load": {"input": "src", "table": "guarded"}},
        ],
    }
    path = ws.root / "pipelines" / "guarded.yaml"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def bad_ws(make_workspace: Callable[..., Workspace]) -> Workspace:
    ws = make_workspace(bare=True)
    (ws.root / "data" / "bad.csv").write_text(BAD)
    return ws


def warehouse_tables(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    """Every table in the warehouse (all schemas, staging included) with its rows."""
    if not (ws.root / ".queryforge" / "warehouse.duckdb").exists():
        return {}  # never opened for writing: nothing was ever staged or published
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        names = con.execute("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY 1, 2").fetchall()
        return {f"{s}.{t}": con.execute(f'SELECT * FROM "{s}"."{t}"').fetchall() for s, t in names}


@pytest.mark.parametrize("where", ["step", "rule"])
def test_warn_severity_does_not_fail_the_run(bad_ws: Workspace, where: str) -> None:
    rules: list[dict[str, Any]] = [{"not_null": ["name"]}, {"unique": "id"}]
    if where == "rule":
        rules = [{**r, "severity": "warn"} for r in rules]
    outcome = bad_ws.run(write_check_pipeline(bad_ws, rules, "warn" if where == "step" else None))
    assert outcome.error is None
    assert outcome.status == "succeeded"
    assert [c["passed"] for c in outcome.checks] == [False, False]
    assert {c["severity"] for c in outcome.checks} == {"warn"}
    names, rows = bad_ws.read_table("guarded")
    want = rows_of(bad_ws.root / "data" / "bad.csv")
    assert sorted(map(repr, rows)) == sorted(repr(tuple(r.values())) for r in want)
    assert names == list(want[0])
    step = {s.step_id: s for s in bad_ws.repo.list_steps(outcome.run_id)}["guard"]
    assert step.status == "warn"


def test_error_severity_fails_the_run_and_publishes_nothing(bad_ws: Workspace) -> None:
    rules = [{"not_null": ["name"]}, {"range": {"column": "amount", "min": 0}, "severity": "warn"}]
    outcome = bad_ws.run(write_check_pipeline(bad_ws, rules))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, ChecksFailed)
    assert outcome.error.failure_class is FailureClass.CHECK_FAILED
    assert outcome.error.exit_code == 1
    nulls = sum(r["name"] is None for r in rows_of(bad_ws.root / "data" / "bad.csv"))
    assert f"guard.not_null(name) ({nulls} violations)" in outcome.error.message
    assert [c["rule_name"] for c in outcome.failed_checks] == ["not_null(name)"]
    assert outcome.published == []
    run = bad_ws.get_run(outcome.run_id)
    assert (run.status, run.error_class) == ("failed", "CHECK_FAILED")
    assert run.staged == []
    # nothing in production, and nothing left in staging
    assert "main.guarded" not in warehouse_tables(bad_ws)
    assert not [t for t in warehouse_tables(bad_ws) if t.startswith("_qf_staging.")]
    steps = {s.step_id: s for s in bad_ws.repo.list_steps(outcome.run_id)}
    assert steps["guard"].status == "failed"
    assert "publish:warehouse" not in steps


def test_error_severity_keeps_an_existing_table_unchanged(bad_ws: Workspace) -> None:
    ok = bad_ws.run(write_check_pipeline(bad_ws, [{"row_count": {"min": 1}}]))
    assert ok.status == "succeeded"
    before = warehouse_tables(bad_ws)
    (bad_ws.root / "data" / "bad.csv").write_text(BAD.replace("1,Ann,NO,10", "1,Zed,NO,10"))
    failed = bad_ws.run(
        write_check_pipeline(bad_ws, [{"accepted_values": {"column": "name", "values": ["Ann"]}}])
    )
    assert failed.status == "failed"
    assert isinstance(failed.error, ChecksFailed)
    assert warehouse_tables(bad_ws) == before


def test_cli_exits_1_when_an_error_check_fails(bad_ws: Workspace, qf: Callable[..., Any]) -> None:
    path = write_check_pipeline(bad_ws, [{"unique": ["id"]}])
    result = qf("run", path, "--json", cwd=bad_ws.root)
    assert result.code == 1, result.stderr
    data = result.json()
    assert data["status"] == "failed"
    assert data["error"]["class"] == "CHECK_FAILED"
    assert data["published"] == []
    assert [c["violations"] for c in data["checks"]] == [2]  # ids 2 and 7 are duplicated


# ---------------------------------------------------------------- spec errors in rules


@pytest.mark.parametrize(
    ("rule", "fragment", "hint"),
    [
        ({"not_nul": ["name"]}, "Unknown check rule 'not_nul'", "did you mean 'not_null'?"),
        ({"uniqe": "id"}, "Unknown check rule 'uniqe'", "did you mean 'unique'?"),
        ({"accepted_value": {"column": "country", "values": ["NO"]}}, "accepted_value", "'accepted_values'"),
        ({"not_null": ["nmae"]}, "unknown column 'nmae'", "did you mean 'name'?"),
        ({"range": {"column": "amout", "min": 0}}, "unknown column 'amout'", "did you mean 'amount'?"),
        ({"not_null": ["name"], "severity": "fatal"}, "Invalid severity 'fatal'", "use error or warn"),
        ({"not_null": ["name"], "unique": ["id"]}, "exactly one rule name", "not_null"),
        ({"freshness": {"column": "ts", "max_age": "1 day"}}, "max_age", "30m, 24h, 7d"),
    ],
)
def test_bad_rules_are_spec_errors_with_hints(
    bad_ws: Workspace, rule: dict[str, Any], fragment: str, hint: str
) -> None:
    path = write_check_pipeline(bad_ws, [rule])
    with pytest.raises(SpecError) as info:
        bad_ws.validate(path)
    assert fragment in info.value.message
    assert info.value.hint is not None and hint in info.value.hint
    assert info.value.where is not None and "step 'guard'" in info.value.where
    assert bad_ws.list_runs() == []


def test_relationships_to_an_unknown_step_is_a_spec_error(bad_ws: Workspace) -> None:
    path = write_check_pipeline(bad_ws, [{"relationships": {"column": "parent_id", "to": "sorc"}}])
    with pytest.raises(SpecError) as info:
        bad_ws.validate(path)
    assert "sorc" in info.value.message
    assert info.value.hint == "did you mean 'src'?"


def test_unique_ignores_nulls(bad_ws: Workspace) -> None:
    (bad_ws.root / "data" / "bad.csv").write_text("id,name\n1,a\n,b\n,c\n2,d\n")
    outcome = bad_ws.run(write_check_pipeline(bad_ws, [{"unique": "id"}]))
    assert outcome.status == "succeeded", outcome.error
    assert outcome.checks[0]["violations"] == 0
