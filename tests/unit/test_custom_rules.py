"""Check rules declared in queryforge.yaml (`rules:`): a parameterised SQL predicate, no Python.

Violation counts are compared with the offending rows computed in plain Python over the same CSV
rows (read once with DuckDB), never with the rule's own SQL. Errors are asserted with their place
(queryforge.yaml or the pipeline, with the line) and their hint.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.config import load_config
from queryforge.errors import ConfigError, FailureClass, SpecError
from queryforge.runs.executor import RunOutcome
from queryforge.workspace import Workspace

ORDERS = """\
order_id,status,amount,pct,code
1,placed,10,5,AB-1
2,shipped,-1,150,AB-2
3,bogus,0,,XY-3
4,shipped,,50,
5,placed,20.5,100,AB-5
6,returned,-3,-0.5,ab-6
"""
GOOD_ORDERS = "order_id,status,amount,pct,code\n1,placed,10,5,AB-1\n2,shipped,7.5,50,AB-2\n"

RULES = """\
rules:
  positive:
    description: the value is above zero
    args: {column: column}
    holds: ":column > 0"
  between_pct:
    args: {column: column, low: value, high: value}
    holds: ":column BETWEEN :low AND :high"
  starts_with_text:
    args: {col: column, prefix: value}
    holds: "starts_with(:col, :prefix)"
  equals:
    args: {column: column, expected: value}
    holds: ":column = :expected"
  shipped_has_amount:
    description: no args, a fixed predicate over named columns
    holds: "status <> 'shipped' OR amount IS NOT NULL"
"""
INJECTED = "x' OR 'a'='a"

Row = dict[str, Any]


def rows_of(path: Path) -> list[Row]:
    """The CSV rows with the types DuckDB reads them as (the same reader the pipeline uses)."""
    with closing(duckdb.connect()) as con:
        rel = con.sql(f"SELECT * FROM read_csv('{path}')")
        return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]


def where(predicate: Callable[[Row], bool]) -> Callable[[list[Row]], list[Row]]:
    return lambda rows: [r for r in rows if predicate(r)]


# result name -> (rule item, the offending rows computed independently)
CASES: dict[str, tuple[dict[str, Any], Callable[[list[Row]], list[Row]]]] = {
    "positive(amount)": (
        {"positive": "amount"},
        where(lambda r: r["amount"] is not None and not r["amount"] > 0),
    ),
    "positive(pct)": (
        {"positive": ["pct"]},  # a list of columns: one result per column, as for not_null
        where(lambda r: r["pct"] is not None and not r["pct"] > 0),
    ),
    "between_pct(pct)": (
        {"between_pct": {"column": "pct", "low": 0, "high": 100}},
        where(lambda r: r["pct"] is not None and not 0 <= r["pct"] <= 100),
    ),
    "starts_with_text(code)": (
        {"starts_with_text": {"col": "code", "prefix": "AB"}},
        where(lambda r: r["code"] is not None and not r["code"].startswith("AB")),
    ),
    # A value is a literal node, never text spliced into SQL: every non-NULL status differs from it.
    "equals(status)": (
        {"equals": {"column": "status", "expected": INJECTED}},
        where(lambda r: r["status"] is not None and r["status"] != INJECTED),
    ),
    "shipped_has_amount": (
        {"shipped_has_amount": None},
        where(lambda r: r["status"] == "shipped" and r["amount"] is None),
    ),
    "named_positive": (
        {"positive": {"column": "amount"}, "name": "named_positive"},
        where(lambda r: r["amount"] is not None and not r["amount"] > 0),
    ),
}


def write_workspace(root: Path, rules: str, pipeline: dict[str, Any] | str, name: str = "p") -> None:
    config = root / "queryforge.yaml"
    base = config.read_text().split("rules:")[0]
    config.write_text(base + rules)
    text = pipeline if isinstance(pipeline, str) else json.dumps(pipeline)
    (root / "pipelines" / f"{name}.yaml").write_text(textwrap.dedent(text))


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, RunOutcome]]:
    """One run with every custom rule at severity warn (so every rule is evaluated)."""
    root = tmp_path_factory.mktemp("custom") / "ws"
    Workspace.init(root, bare=True).close()
    (root / "data" / "orders.csv").write_text(ORDERS)
    steps: list[dict[str, Any]] = [{"id": "orders", "extract": {"path": "data/orders.csv"}}]
    steps.append(
        {
            "id": "audit",
            "check": {"input": "orders", "severity": "warn", "rules": [i for i, _ in CASES.values()]},
        }
    )
    steps.append({"id": "publish", "load": {"input": "orders", "table": "orders"}})
    write_workspace(root, RULES, {"name": "p", "steps": steps})
    ws = Workspace(root)
    outcome = ws.run("p")
    yield ws, outcome
    ws.close()


@pytest.mark.parametrize("case", list(CASES))
def test_custom_rule_counts_and_samples_the_offending_rows(
    audited: tuple[Workspace, RunOutcome], case: str
) -> None:
    ws, outcome = audited
    assert outcome.status == "succeeded", outcome.error
    offending = CASES[case][1](rows_of(ws.root / "data" / "orders.csv"))
    assert offending, "the data must break every rule"
    (result,) = [c for c in outcome.checks if c["rule_name"] == case]
    assert result["step_id"] == "audit"
    assert result["rule"] == next(iter(CASES[case][0]))
    assert result["severity"] == "warn"
    assert result["passed"] is False
    assert result["violations"] == len(offending)
    assert len(result["samples"]) == min(5, len(offending))
    for sample in result["samples"]:
        assert sample in offending


def test_null_is_no_violation_of_a_custom_rule(audited: tuple[Workspace, RunOutcome]) -> None:
    ws, outcome = audited
    rows = rows_of(ws.root / "data" / "orders.csv")
    assert any(r["amount"] is None for r in rows)
    (result,) = [c for c in outcome.checks if c["rule_name"] == "positive(amount)"]
    assert all(s["amount"] is not None for s in result["samples"])
    assert result["violations"] == sum(1 for r in rows if r["amount"] is not None and r["amount"] <= 0)


def test_results_are_recorded_like_built_in_ones(audited: tuple[Workspace, RunOutcome]) -> None:
    ws, outcome = audited
    recorded = {r["rule_name"]: r for r in ws.repo.list_check_results(outcome.run_id)}
    assert set(recorded) == set(CASES)
    for result in outcome.checks:
        assert recorded[result["rule_name"]]["violations"] == result["violations"]
    assert {c["rule_name"] for c in ws.run_detail(outcome.run_id)["checks"]} == set(CASES)


# ---------------------------------------------------------------- severity, thresholds, publish


def guarded(severity: str, extra: str = "") -> str:
    return f"""\
    name: guarded
    steps:
      - id: orders
        extract: {{path: data/orders.csv}}
      - id: orders_ok
        check:
          input: orders
          rules:
            - {{positive: amount, severity: {severity}{extra}}}
      - id: publish
        load: {{input: orders, table: guarded}}
    """


def published(ws: Workspace) -> list[tuple[Any, ...]]:
    with closing(duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return sorted(con.execute("SELECT order_id, amount FROM guarded").fetchall())


def expected_rows(path: Path) -> list[tuple[Any, ...]]:
    return sorted((r["order_id"], r["amount"]) for r in rows_of(path))


def test_failing_error_custom_rule_blocks_the_publish_and_warn_publishes(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    data = root / "data" / "orders.csv"
    data.write_text(GOOD_ORDERS)
    write_workspace(root, RULES, guarded("error"), "guarded")
    with closing(Workspace(root)) as ws:
        first = ws.run("guarded")
        assert first.status == "succeeded", first.error
        before = published(ws)
        assert before == expected_rows(data)

        data.write_text(ORDERS)
        failed = ws.run("guarded")
        assert failed.status == "failed"
        assert failed.error is not None and failed.error.failure_class == FailureClass.CHECK_FAILED
        assert "orders_ok.positive(amount)" in failed.error.message
        (result,) = failed.checks
        bad = [r for r in rows_of(data) if r["amount"] is not None and r["amount"] <= 0]
        assert (result["severity"], result["passed"], result["violations"]) == ("error", False, len(bad))
        assert published(ws) == before  # production unchanged

        write_workspace(root, RULES, guarded("warn"), "guarded")
        warned = ws.run("guarded")
        assert warned.status == "succeeded", warned.error
        assert warned.checks[0]["severity"] == "warn" and warned.checks[0]["passed"] is False
        assert published(ws) == expected_rows(data)


@pytest.mark.parametrize(
    ("extra", "severity", "passed", "status"),
    [
        (", error_if: '>5', warn_if: '>1'", "warn", False, "succeeded"),  # 3 violations: a warning
        (", error_if: '>= 50%'", "error", False, "failed"),  # 3 of 6 rows
        (", error_if: '>3', warn_if: '>3'", "error", True, "succeeded"),
    ],
)
def test_thresholds_work_on_custom_rules(
    tmp_path: Path, extra: str, severity: str, passed: bool, status: str
) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    (root / "data" / "orders.csv").write_text(ORDERS)
    write_workspace(root, RULES, guarded("error", extra), "guarded")
    with closing(Workspace(root)) as ws:
        outcome = ws.run("guarded")
    assert outcome.status == status
    (result,) = outcome.checks
    assert result["violations"] == 3
    assert (result["severity"], result["passed"]) == (severity, passed)


# ---------------------------------------------------------------- every path that compiles checks


def test_custom_rules_reach_validate_and_project_validation(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    (root / "data" / "orders.csv").write_text(ORDERS)
    write_workspace(root, RULES, guarded("error"), "guarded")
    with closing(Workspace(root)) as ws:
        plan = ws.validate("guarded")
        (check,) = [s for s in plan.stages if s.step_id == "orders_ok"]
        assert [r.rule for r in check.rules] == ["positive"]
        project = ws.validate_project()  # the project path compiles with the same rules
        assert [name for name, _ in project.plans] == ["guarded"]
    # Without the declaration, the same pipeline is an unknown rule on both paths.
    write_workspace(root, "", guarded("error"), "guarded")
    with closing(Workspace(root)) as ws:
        for validate in (lambda: ws.validate("guarded"), ws.validate_project):
            with pytest.raises(SpecError, match="Unknown check rule 'positive'") as err:
                validate()
            assert err.value.hint is not None and "queryforge.yaml" in err.value.hint


def test_config_without_rules_writes_no_rules_section(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    assert "rules" not in (root / "queryforge.yaml").read_text()
    write_workspace(root, RULES, guarded("error"), "guarded")
    config = load_config(root)
    assert list(config.rules) == [
        "positive",
        "between_pct",
        "starts_with_text",
        "equals",
        "shipped_has_amount",
    ]
    assert config.rules["positive"].description == "the value is above zero"
    assert "holds: :column > 0" in config.to_yaml()


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("errors") / "ws"
    Workspace.init(root, bare=True).close()
    (root / "data" / "orders.csv").write_text(ORDERS)
    return root


def rule(holds: str, args: str = "{column: column}", name: str = "positive") -> str:
    return f'rules:\n  {name}:\n    args: {args}\n    holds: "{holds}"\n'


# rules section -> (message parts, the key whose line `where` names, hint part)
CONFIG_ERRORS: dict[str, tuple[str, list[str], str, str]] = {
    "unknown_kind": (
        rule(":column > 0", "{column: colum}"),
        ["Custom rule 'positive' in queryforge.yaml", "argument 'column' of unknown kind 'colum'"],
        "args:",
        "did you mean 'column'?",
    ),
    "undeclared_placeholder": (
        rule(":colum > 0"),
        ["Custom rule 'positive' in queryforge.yaml", "uses ':colum' in 'holds'", "not declared"],
        "holds:",
        "did you mean ':column'?",
    ),
    "unused_argument": (
        rule(":column > 0", "{column: column, low: value}"),
        ["declares argument 'low', which 'holds' does not use"],
        "args:",
        "write ':low' in 'holds'",
    ),
    "built_in_name": (
        rule(":column > 0", name="not_null"),
        ["Custom rule 'not_null' in queryforge.yaml", "built-in rule 'not_null'"],
        "not_null:",
        "rename it",
    ),
    "reserved_name": (
        rule(":column > 0", name="severity"),
        ["Custom rule 'severity'", "cannot be used as a rule"],
        "severity:",
        "letters, digits and _",
    ),
    "does_not_parse": (
        rule(":column >"),
        ["Custom rule 'positive' in queryforge.yaml", "'holds' that does not parse"],
        "holds:",
        "one SQL condition",
    ),
    "positional_placeholder": (
        rule(":column > ?"),
        ["positional placeholder"],
        "holds:",
        "name each argument",
    ),
    "subquery_reads_a_table": (
        rule(":column IN (SELECT order_id FROM orders)"),
        ["Custom rule 'positive' in queryforge.yaml", "predicate that is not allowed", "orders"],
        "holds:",
        "no subquery reading a table",
    ),
    "function_outside_the_allow_list": (
        rule("length(read_text(:column)) > 0"),
        ["predicate that is not allowed", "read_text"],
        "holds:",
        "only allow-listed functions",
    ),
    "statement_not_condition": (
        rule(":column > 0; DROP TABLE orders"),
        ["'holds' that does not parse"],
        "holds:",
        "one SQL condition",
    ),
    "missing_holds": (
        "rules:\n  positive:\n    args: {column: column}\n    hold: ':column > 0'\n",
        ["Invalid setting 'rules.positive", "in queryforge.yaml"],
        "positive:",
        "a custom rule is {description: TEXT, args:",
    ),
}


def line_of(root: Path, key: str) -> int:
    lines = (root / "queryforge.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rules:"))
    return next(i for i, line in enumerate(lines) if i > start and line.strip().startswith(key)) + 1


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_error_names_queryforge_yaml_the_rule_and_its_line(bare: Path, case: str) -> None:
    rules, parts, key, hint = CONFIG_ERRORS[case]
    write_workspace(bare, rules, guarded("error"), "guarded")
    with pytest.raises(ConfigError) as err, closing(Workspace(bare)) as ws:
        ws.validate("guarded")
    for part in parts:
        assert part in err.value.message
    assert err.value.where == f"{bare / 'queryforge.yaml'}:{line_of(bare, key)}"
    assert err.value.hint is not None and hint in err.value.hint


def pipeline_with(item: str) -> str:
    return f"""\
    name: uses
    steps:
      - id: orders
        extract: {{path: data/orders.csv}}
      - id: orders_ok
        check:
          input: orders
          rules:
            - {item}
    """


# rule item -> (message parts, hint part)
USE_ERRORS: dict[str, tuple[str, list[str], str]] = {
    "unknown_custom_rule": ("positiv: amount", ["Unknown check rule 'positiv'"], "did you mean 'positive'?"),
    "unknown_rule_near_a_built_in": (
        "not_nul: amount",
        ["Unknown check rule 'not_nul'"],
        "did you mean 'not_null'?",
    ),
    "unknown_column": (
        "positive: amout",
        ["'positive' names unknown column 'amout' of 'orders'"],
        "'amount'",
    ),
    "column_injection": (
        "positive: 'amount\" > 0 OR \"x'",
        ["'positive' names unknown column 'amount\" > 0 OR \"x'"],
        "",
    ),
    "missing_argument": (
        "between_pct: {column: pct, low: 0}",
        ["Custom rule 'between_pct' is missing argument 'high'"],
        "between_pct: {column: COLUMN, low: VALUE, high: VALUE}",
    ),
    "extra_argument": (
        "between_pct: {column: pct, low: 0, high: 100, hihg: 1}",
        ["Custom rule 'between_pct' has no argument 'hihg'"],
        "did you mean 'high'?",
    ),
    "shorthand_for_many_arguments": (
        "between_pct: pct",
        ["Custom rule 'between_pct' takes 3 arguments, given as a mapping"],
        "- between_pct: {column: COLUMN",
    ),
    "value_not_a_scalar": (
        "between_pct: {column: pct, low: [0], high: 100}",
        ["argument 'low' is a single value, not [0]"],
        "a number, a string",
    ),
    "column_not_a_name": (
        "between_pct: {column: 3, low: 0, high: 100}",
        ["argument 'column' is a column name, not 3"],
        "between_pct: {column: COLUMN",
    ),
    "severity_twice": (
        "{positive: {column: amount, severity: warn}, severity: error}",
        ["Rule 'positive' sets 'severity' twice"],
        "keep one",
    ),
}


@pytest.mark.parametrize("case", list(USE_ERRORS))
def test_use_error_names_the_pipeline_line_and_a_hint(bare: Path, case: str) -> None:
    item, parts, hint = USE_ERRORS[case]
    write_workspace(bare, RULES, pipeline_with(item), "uses")
    with closing(Workspace(bare)) as ws, pytest.raises(SpecError) as err:
        ws.validate("uses")
    for part in parts:
        assert part in err.value.message
    text = (bare / "pipelines" / "uses.yaml").read_text().splitlines()
    line = next(
        i for i, t in enumerate(text) if t.strip().startswith("- ") and "rules" not in t and "id:" not in t
    )
    assert err.value.where is not None and f"pipelines/uses.yaml:{line + 1}," in err.value.where
    assert "step 'orders_ok'" in err.value.where
    assert err.value.hint is not None and hint in err.value.hint


def test_reserved_keys_inside_the_rule_mapping_apply(bare: Path) -> None:
    """`{rule: {..., severity: warn, name: x}}` is `{rule: {...}, severity: warn, name: x}`."""
    write_workspace(
        bare, RULES, pipeline_with("positive: {column: amount, severity: warn, name: pos}"), "uses"
    )
    with closing(Workspace(bare)) as ws:
        plan = ws.validate("uses")
    (check,) = [s for s in plan.stages if s.step_id == "orders_ok"]
    (compiled,) = check.rules
    assert (compiled.name, compiled.severity, compiled.column) == ("pos", "warn", "amount")
