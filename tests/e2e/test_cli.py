"""End-to-end: drive the real `queryforge` CLI on fresh workspaces, the way a user does.

Every data assertion compares what QueryForge published with an independent computation in plain
DuckDB SQL over the same CSV files in the workspace's data/ folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import yaml

QF_ALIAS = str(Path(sys.executable).with_name("qf"))
EXAMPLES = ("customers_clean", "daily_sales", "product_report")
SAMPLE_FILES = {"orders.csv", "customers.csv", "products.csv", "products.parquet", "orders_late.csv"}


# ---------------------------------------------------------------- helpers


def warehouse(ws: Path) -> Path:
    return ws / ".queryforge" / "warehouse.duckdb"


def production_tables(ws: Path) -> set[str]:
    """Qualified names of the tables in the local warehouse, leaving out run staging."""
    if not warehouse(ws).exists():
        return set()
    with closing(duckdb.connect(str(warehouse(ws)), read_only=True)) as con:
        rows = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema <> '_qf_staging'"
        ).fetchall()
    return {name if schema == "main" else f"{schema}.{name}" for schema, name in rows}


def norm(rows: Iterable[Iterable[Any]]) -> list[tuple[Any, ...]]:
    """Rows as sorted tuples with floats rounded to 2 places (order-insensitive comparison)."""
    out = [tuple(round(v, 2) if isinstance(v, float) else v for v in row) for row in rows]
    return sorted(out, key=repr)


def table_rows(ws: Path, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with closing(duckdb.connect(str(warehouse(ws)), read_only=True)) as con:
        rel = con.sql(f"SELECT * FROM {table}")
        return list(rel.columns), norm(rel.fetchall())


def independent(ws: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run plain DuckDB SQL; `{data}` is replaced by the workspace's data folder."""
    with closing(duckdb.connect()) as con:
        rel = con.sql(sql.replace("{data}", str(ws / "data")))
        return list(rel.columns), norm(rel.fetchall())


def expected_daily_sales(ws: Path, since: str = "2026-01-01") -> list[tuple[Any, ...]]:
    _, rows = independent(
        ws,
        f"""
        WITH customers AS (
            SELECT * FROM read_csv('{{data}}/customers.csv')
            QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC) = 1
        ),
        shipped AS (
            SELECT * FROM read_csv('{{data}}/orders.csv')
            WHERE status = 'shipped' AND order_date >= DATE '{since}'
        )
        SELECT coalesce(c.country, 'unknown') AS country, s.order_date AS day,
               count(*) AS orders, sum(s.amount) AS revenue
        FROM shipped s LEFT JOIN customers c ON s.customer_id = c.customer_id
        GROUP BY 1, 2
        """,
    )
    return rows


def write_pipeline(ws: Path, name: str, text: str) -> Path:
    path = ws / "pipelines" / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def yaml12(text: str) -> Any:
    """YAML with 1.2 booleans, as pipeline files are read (`on:` stays a string key)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return yaml.load(text, Loader=Loader)


def schema_errors(schema: dict[str, Any], docs: list[Any]) -> list[int] | None:
    """Number of JSON-Schema errors per document, or None when no jsonschema package can be found.

    Uses jsonschema in this interpreter if it is installed, else the base interpreter of the venv.
    """
    try:
        import jsonschema
    except ImportError:
        base = Path(sys.base_prefix) / "bin" / "python3"
        script = (
            "import json, sys, jsonschema\n"
            "schema, docs = json.load(sys.stdin)\n"
            "v = jsonschema.Draft202012Validator(schema)\n"
            "print(json.dumps([len(list(v.iter_errors(d))) for d in docs]))\n"
        )
        if not base.exists():
            return None
        p = subprocess.run(
            [str(base), "-c", script],
            input=json.dumps([schema, docs]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if p.returncode != 0:
            return None
        return list(json.loads(p.stdout))
    validator = jsonschema.Draft202012Validator(schema)
    return [len(list(validator.iter_errors(d))) for d in docs]


Qf = Callable[..., Any]


def run_json(qf: Qf, ws: Path, *args: str, code: int = 0) -> dict[str, Any]:
    r = qf(*args, "--json", cwd=ws)
    assert r.code == code, (r.code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    data = r.json()
    assert isinstance(data, dict)
    return data


# ---------------------------------------------------------------- init


def test_init_creates_a_complete_demo_workspace(qf: Qf, tmp_path: Path) -> None:
    r = qf("init", "proj", cwd=tmp_path)
    assert r.code == 0, r.stderr
    ws = tmp_path / "proj"
    assert (ws / "queryforge.yaml").is_file()
    assert (ws / ".queryforge").is_dir()
    assert {p.stem for p in (ws / "pipelines").glob("*.yaml")} == set(EXAMPLES)
    assert {p.name for p in (ws / "data").iterdir()} == SAMPLE_FILES
    config = yaml.safe_load((ws / "queryforge.yaml").read_text())
    assert config["connections"]["warehouse"]["writable"] is True
    # The examples of a fresh workspace are valid as they come.
    for name in EXAMPLES:
        v = qf("validate", name, cwd=ws)
        assert v.code == 0, (name, v.stderr)


def test_init_bare_creates_no_pipelines_or_data(qf: Qf, tmp_path: Path) -> None:
    r = qf("init", "bare", "--bare", cwd=tmp_path)
    assert r.code == 0, r.stderr
    ws = tmp_path / "bare"
    assert (ws / "queryforge.yaml").is_file()
    assert (ws / ".queryforge").is_dir()
    assert list((ws / "pipelines").glob("*")) == []
    assert list((ws / "data").glob("*")) == []


def test_init_twice_refuses_and_keeps_the_workspace(qf: Qf, tmp_path: Path) -> None:
    assert qf("init", "proj", "--bare", cwd=tmp_path).code == 0
    config = (tmp_path / "proj" / "queryforge.yaml").read_text()
    r = qf("init", "proj", cwd=tmp_path)
    assert r.code == 2
    assert r.stderr.startswith("Error:")
    assert "Traceback" not in r.stderr
    assert "already" in r.stderr
    assert (tmp_path / "proj" / "queryforge.yaml").read_text() == config
    assert list((tmp_path / "proj" / "data").glob("*")) == []


# ---------------------------------------------------------------- validate


def test_validate_example(qf: Qf, demo: Path) -> None:
    r = qf("validate", "pipelines/daily_sales.yaml", cwd=demo)
    assert r.code == 0, r.stderr
    assert "analytics.daily_sales" in r.stdout
    data = run_json(qf, demo, "validate", "pipelines/daily_sales.yaml")
    assert data["valid"] is True
    assert data["pipeline"] == "daily_sales"
    assert data["steps"] == 8
    schemas = data["schemas"]
    assert [c for c, _ in schemas["daily"]] == ["country", "day", "orders", "revenue"]
    assert dict(schemas["orders"])["amount"] in ("DOUBLE", "DECIMAL(12,2)")
    assert dict(schemas["daily"])["day"] == "DATE"
    # Validation is static: nothing is written to production.
    assert production_tables(demo) == set()


# ---------------------------------------------------------------- sandbox, show, commit


def test_sandbox_then_show_then_commit_publishes_exactly_the_audited_data(qf: Qf, demo: Path) -> None:
    expected = expected_daily_sales(demo)
    sandbox = run_json(qf, demo, "run", "pipelines/daily_sales.yaml", "--sandbox")
    assert sandbox["status"] == "audited"
    assert sandbox["mode"] == "sandbox"
    assert sandbox["published"] == []
    (staged,) = sandbox["staged"]
    assert (staged["connection"], staged["table"], staged["mode"]) == (
        "warehouse",
        "analytics.daily_sales",
        "merge",
    )
    assert staged["rows"] == len(expected)
    assert staged["diff"] == {"added": len(expected), "removed": 0, "changed": 0}
    assert all(c["passed"] for c in sandbox["checks"])
    assert "analytics.daily_sales" not in production_tables(demo)

    run_id = sandbox["run_id"]
    detail = run_json(qf, demo, "runs", "show", run_id)
    assert detail["run"]["status"] == "audited"
    steps = {s["step_id"]: s for s in detail["steps"]}
    assert set(steps) >= {"orders", "customers", "shipped", "daily", "daily_ok", "publish"}
    assert all(s["status"] == "succeeded" for s in steps.values())
    assert steps["daily_ok"]["rows_in"] == len(expected)
    assert steps["publish"]["rows_out"] == len(expected)
    assert {c["rule_name"] for c in detail["checks"]} == {
        "not_null(country)",
        "not_null(day)",
        "unique(country, day)",
        "range(revenue)",
        "row_count",
    }
    assert all(c["passed"] is True and c["violations"] == 0 for c in detail["checks"])
    (preview,) = detail["staged"]
    assert preview["target"] == {"connection": "warehouse", "table": "analytics.daily_sales"}
    assert preview["columns"] == ["country", "day", "orders", "revenue"]
    assert 1 <= len(preview["preview"]) <= 5
    for row in preview["preview"]:
        as_tuple = (row["country"], date.fromisoformat(row["day"]), row["orders"], row["revenue"])
        assert norm([as_tuple])[0] in expected
    # Looking at the run still does not publish it.
    assert "analytics.daily_sales" not in production_tables(demo)

    committed = run_json(qf, demo, "commit", run_id)
    assert committed["status"] == "succeeded"
    assert committed["published"] == [{"connection": "warehouse", "table": "analytics.daily_sales"}]
    columns, rows = table_rows(demo, "analytics.daily_sales")
    assert columns == ["country", "day", "orders", "revenue"]
    assert rows == expected
    assert qf("runs", "show", run_id, cwd=demo).code == 0


def test_commit_twice_is_refused(qf: Qf, demo: Path) -> None:
    run_id = run_json(qf, demo, "run", "daily_sales", "--sandbox")["run_id"]
    assert qf("commit", run_id, cwd=demo).code == 0
    before = table_rows(demo, "analytics.daily_sales")
    r = qf("commit", run_id, cwd=demo)
    assert r.code == 2
    assert r.stderr.startswith("Error:")
    assert "audited" in r.stderr
    assert "Traceback" not in r.stderr
    assert table_rows(demo, "analytics.daily_sales") == before


def test_commit_accepts_a_unique_run_id_prefix(qf: Qf, demo: Path) -> None:
    run_id = run_json(qf, demo, "run", "daily_sales", "--sandbox")["run_id"]
    prefix = run_id[:-4]
    assert run_json(qf, demo, "commit", prefix)["status"] == "succeeded"
    assert table_rows(demo, "analytics.daily_sales")[1] == expected_daily_sales(demo)


def _sandbox_then_change_production(qf: Qf, ws: Path) -> tuple[str, list[tuple[Any, ...]]]:
    """Publish daily_sales, stage it again, then change production behind the run's back."""
    assert qf("run", "daily_sales", cwd=ws).code == 0
    sandbox = run_json(qf, ws, "run", "daily_sales", "--sandbox")
    # Same data as production: no keys are added. ("changed" is not asserted: DOUBLE sums of the
    # example can differ in the last bit between runs, which the diff counts as changed.)
    assert sandbox["staged"][0]["diff"]["added"] == 0
    with closing(duckdb.connect(str(warehouse(ws)))) as con:
        con.execute("UPDATE analytics.daily_sales SET revenue = revenue + 1000 WHERE country = 'DE'")
    return sandbox["run_id"], table_rows(ws, "analytics.daily_sales")[1]


def test_commit_refuses_when_production_changed_since_the_sandbox(qf: Qf, demo: Path) -> None:
    run_id, changed = _sandbox_then_change_production(qf, demo)
    assert changed != expected_daily_sales(demo)
    r = qf("commit", run_id, cwd=demo)
    assert r.code == 2
    assert r.stderr.startswith("Error:")
    assert "changed" in r.stderr
    assert "analytics.daily_sales" in r.stderr
    assert "Traceback" not in r.stderr
    # The change nobody audited is kept, not overwritten.
    assert table_rows(demo, "analytics.daily_sales")[1] == changed
    assert run_json(qf, demo, "runs", "show", run_id)["run"]["status"] == "audited"


def test_commit_rerun_suggested_by_the_refusal_works(qf: Qf, demo: Path) -> None:
    run_id, _ = _sandbox_then_change_production(qf, demo)
    refused = qf("commit", run_id, cwd=demo)
    assert refused.code == 2
    assert "--rerun" in refused.stderr
    r = qf("commit", run_id, "--rerun", cwd=demo)
    assert r.code == 0, r.stderr
    assert table_rows(demo, "analytics.daily_sales")[1] == expected_daily_sales(demo)


def test_runs_show_of_a_published_run(qf: Qf, demo: Path) -> None:
    run_id = run_json(qf, demo, "run", "customers_clean")["run_id"]
    r = qf("runs", "show", run_id, "--json", cwd=demo)
    assert r.code == 0, r.stdout + r.stderr
    detail = r.json()
    assert detail["run"]["status"] == "succeeded"
    assert {s["step_id"] for s in detail["steps"]} >= {"raw", "final_ok", "load"}
    assert all(s["status"] in ("succeeded", "warn") for s in detail["steps"])
    # Schema snapshots before and after the publish: the table did not exist, then it did.
    _, rows = table_rows(demo, "customers")
    snaps = {(x["table"], x["phase"]): x for x in detail["snapshots"]}
    assert snaps[("customers", "before")]["exists"] is False
    after = snaps[("customers", "after")]
    assert after["exists"] is True
    assert after["rows"] == len(rows)
    assert [c for c, _ in after["columns"]][:2] == ["customer_id", "name"]
    assert qf("runs", "show", run_id, cwd=demo).code == 0


# ---------------------------------------------------------------- the other examples


def test_run_by_name_customers_clean(qf: Qf, demo: Path) -> None:
    r = qf("run", "customers_clean", cwd=demo)
    assert r.code == 0, r.stderr
    assert "succeeded" in r.stdout
    expected = independent(
        demo,
        """
        SELECT CAST(customer_id AS BIGINT) AS customer_id, trim(name) AS name, email,
               country AS country_code, CAST(signup_date AS DATE) AS signup_date,
               lower(split_part(email, '@', 2)) AS email_domain
        FROM read_csv('{data}/customers.csv')
        QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC) = 1
        """,
    )
    assert table_rows(demo, "customers") == expected
    _, rows = expected
    # The source has duplicate rows; the published table has one row per customer.
    _, raw = independent(demo, "SELECT count(*), count(DISTINCT customer_id) FROM '{data}/customers.csv'")
    assert raw[0][0] > raw[0][1] == len(rows)


def test_run_by_name_product_report(qf: Qf, demo: Path) -> None:
    r = qf("run", "product_report", cwd=demo)
    assert r.code == 0, r.stderr
    expected = independent(
        demo,
        """
        WITH lines AS (
            SELECT o.*, p.category FROM read_csv('{data}/orders.csv') o
            JOIN read_csv('{data}/products.csv') p USING (product_id)
        )
        SELECT category,
               round(sum(amount) FILTER (WHERE status = 'shipped'), 2) AS shipped,
               round(sum(amount) FILTER (WHERE status = 'pending'), 2) AS pending,
               round(sum(amount) FILTER (WHERE status = 'cancelled'), 2) AS cancelled,
               round(sum(amount) FILTER (WHERE status = 'returned'), 2) AS returned
        FROM lines GROUP BY category
        """,
    )
    assert table_rows(demo, "category_status_revenue") == expected
    top_cols, top = independent(
        demo,
        """
        SELECT o.product_id, p.name, sum(o.amount) AS revenue
        FROM read_csv('{data}/orders.csv') o JOIN read_csv('{data}/products.csv') p USING (product_id)
        GROUP BY ALL ORDER BY revenue DESC, product_id LIMIT 10
        """,
    )
    out = demo / "out" / "top_products.parquet"
    assert out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    written = pq.read_table(out)
    assert written.num_rows == 10
    assert written.schema.names == top_cols
    rows = [tuple(r.values()) for r in written.to_pylist()]
    # Rows in order: the file is the top ten by revenue, best first.
    assert [(a, b, round(c, 2)) for a, b, c in rows] == [
        (a, b, c) for a, b, c in sorted(top, key=lambda t: (-t[2], t[0]))
    ]


# ---------------------------------------------------------------- merge semantics


def test_merge_twice_keeps_one_row_per_key_and_adds_only_new_keys(qf: Qf, demo: Path) -> None:
    assert qf("run", "daily_sales", cwd=demo).code == 0
    _, first = table_rows(demo, "analytics.daily_sales")
    again = run_json(qf, demo, "run", "daily_sales")
    assert again["status"] == "succeeded"
    assert again["staged"][0]["diff"]["added"] == 0
    assert again["staged"][0]["diff"]["removed"] == 0
    _, second = table_rows(demo, "analytics.daily_sales")
    assert second == first == expected_daily_sales(demo)

    # A late shipped order for a day nobody has seen yet.
    _, cust = independent(
        demo,
        "SELECT country FROM read_csv('{data}/customers.csv') WHERE customer_id = 1 "
        "ORDER BY updated_at DESC LIMIT 1",
    )
    orders = demo / "data" / "orders.csv"
    text = orders.read_text()
    assert text.endswith("\n")
    orders.write_text(text + "999999,1,1,2026-12-25,shipped,2,123.45,2026-12-25 10:00:00\n")

    third_run = run_json(qf, demo, "run", "daily_sales")
    assert third_run["staged"][0]["diff"]["added"] == 1
    _, third = table_rows(demo, "analytics.daily_sales")
    new = set(third) - set(second)
    assert new == {(cust[0][0], date(2026, 12, 25), 1, 123.45)}
    assert set(second) <= set(third)
    assert len(third) == len(second) + 1
    assert third == expected_daily_sales(demo)


# ---------------------------------------------------------------- failing checks


CONTACTS_GOOD = """
name: contacts
steps:
  - id: raw
    extract: {path: data/customers.csv}
  - id: reachable
    filter: {input: raw, where: "email IS NOT NULL AND trim(email) <> ''"}
  - id: contacts_ok
    check:
      input: reachable
      rules:
        - not_empty: email
  - id: load
    load: {input: reachable, table: contacts, mode: replace}
"""

CONTACTS_BAD = """
name: contacts
steps:
  - id: raw
    extract: {path: data/customers.csv}
  - id: contacts_ok
    check:
      input: raw
      rules:
        - not_empty: email
        - not_null: customer_id
  - id: load
    load: {input: raw, table: contacts, mode: replace}
"""


def test_failing_error_check_exits_1_and_publishes_nothing(qf: Qf, demo: Path) -> None:
    write_pipeline(demo, "contacts", CONTACTS_BAD)
    _, bad = independent(
        demo,
        "SELECT count(*) FROM read_csv('{data}/customers.csv') WHERE email IS NULL OR trim(email) = ''",
    )
    violations = bad[0][0]
    assert violations > 5

    r = qf("run", "contacts", cwd=demo)
    assert r.code == 1
    assert "Error:" in r.stderr
    assert "contacts_ok" in r.stderr
    assert "Traceback" not in r.stderr

    data = run_json(qf, demo, "run", "contacts", code=1)
    assert data["status"] == "failed"
    assert data["published"] == []
    assert data["error"]["class"] == "CHECK_FAILED"
    by_rule = {c["rule_name"]: c for c in data["checks"]}
    failing = by_rule["not_empty(email)"]
    assert failing["passed"] is False
    assert failing["severity"] == "error"
    assert failing["violations"] == violations
    assert 1 <= len(failing["samples"]) <= 5
    for sample in failing["samples"]:
        assert sample["email"] is None or sample["email"].strip() == ""
    assert by_rule["not_null(customer_id)"]["passed"] is True
    assert "contacts" not in production_tables(demo)

    failed = run_json(qf, demo, "runs", "show", data["run_id"])
    assert failed["run"]["status"] == "failed"
    assert failed["run"]["error_class"] == "CHECK_FAILED"
    assert failed["staged"] == []


def test_failing_check_leaves_the_previous_version_published(qf: Qf, demo: Path) -> None:
    write_pipeline(demo, "contacts", CONTACTS_GOOD)
    assert qf("run", "contacts", cwd=demo).code == 0
    expected = independent(
        demo,
        "SELECT * FROM read_csv('{data}/customers.csv') WHERE email IS NOT NULL AND trim(email) <> ''",
    )
    assert table_rows(demo, "contacts") == expected

    write_pipeline(demo, "contacts", CONTACTS_BAD)
    assert qf("run", "contacts", cwd=demo).code == 1
    assert table_rows(demo, "contacts") == expected
    assert production_tables(demo) == {"contacts"}


def test_warn_check_does_not_block_publishing(qf: Qf, demo: Path) -> None:
    write_pipeline(
        demo, "contacts", CONTACTS_BAD.replace("- not_empty: email", "- {not_empty: email, severity: warn}")
    )
    data = run_json(qf, demo, "run", "contacts")
    assert data["status"] == "succeeded"
    (warned,) = [c for c in data["checks"] if not c["passed"]]
    assert warned["severity"] == "warn"
    assert table_rows(demo, "contacts") == independent(demo, "SELECT * FROM read_csv('{data}/customers.csv')")


# ---------------------------------------------------------------- params


def test_param_changes_the_published_data(qf: Qf, demo: Path) -> None:
    data = run_json(qf, demo, "run", "daily_sales", "--param", "since=2026-06-01")
    assert data["status"] == "succeeded"
    _, rows = table_rows(demo, "analytics.daily_sales")
    expected = expected_daily_sales(demo, since="2026-06-01")
    assert rows == expected
    assert len(expected) < len(expected_daily_sales(demo))
    assert min(r[1] for r in rows) >= date(2026, 6, 1)
    listed = qf("runs", "list", "--json", cwd=demo).json()
    assert [(x["id"], x["params"]) for x in listed] == [(data["run_id"], {"since": "2026-06-01"})]


def test_unknown_param_is_a_user_error(qf: Qf, demo: Path) -> None:
    r = qf("run", "daily_sales", "--param", "sinse=2026-06-01", cwd=demo)
    assert r.code == 2
    assert r.stderr.startswith("Error:")
    assert "sinse" in r.stderr
    assert "since" in r.stderr
    assert "Traceback" not in r.stderr
    assert production_tables(demo) == set()
    listed = qf("runs", "list", "--json", cwd=demo)
    assert listed.code == 0
    assert listed.json() == []


# ---------------------------------------------------------------- runs list


def test_runs_list_newest_first_and_by_status(qf: Qf, demo: Path) -> None:
    write_pipeline(demo, "contacts", CONTACTS_BAD)
    created = [
        run_json(qf, demo, "run", "daily_sales", "--sandbox")["run_id"],
        run_json(qf, demo, "run", "contacts", code=1)["run_id"],
        run_json(qf, demo, "run", "customers_clean")["run_id"],
    ]
    r = qf("runs", "list", "--json", cwd=demo)
    assert r.code == 0, r.stderr
    runs = r.json()
    assert [x["id"] for x in runs] == created[::-1]
    assert [x["status"] for x in runs] == ["succeeded", "failed", "audited"]
    assert [x["pipeline_name"] for x in runs] == ["customers_clean", "contacts", "daily_sales"]

    failed = qf("runs", "list", "--status", "failed", "--json", cwd=demo)
    assert failed.code == 0
    assert [x["id"] for x in failed.json()] == [created[1]]

    by_pipeline = qf("runs", "list", "--pipeline", "daily_sales", "--json", cwd=demo).json()
    assert [x["id"] for x in by_pipeline] == [created[0]]

    table = qf("runs", "list", cwd=demo)
    assert table.code == 0
    for run_id in created:
        assert run_id[:12] in table.stdout


# ---------------------------------------------------------------- schema


def test_schema_validates_the_example_pipelines(qf: Qf, demo: Path) -> None:
    r = qf("schema", cwd=demo)
    assert r.code == 0, r.stderr
    schema = r.json()
    assert schema["type"] == "object"
    assert schema["properties"]["steps"]["type"] == "array"
    assert {"name", "steps"} <= set(schema["required"])
    for kind in ("Extract", "Sql", "Filter", "Join", "Aggregate", "Check", "Load"):
        assert f"{kind}Step" in schema["$defs"]

    docs = [yaml12((demo / "pipelines" / f"{n}.yaml").read_text()) for n in EXAMPLES]
    for doc in docs:
        assert set(doc) <= set(schema["properties"])
    bad = yaml12(
        textwrap.dedent(
            """
            name: bad
            steps:
              - id: orders
                extract: {path: data/orders.csv}
              - id: f
                filtr: {input: orders, where: "amount > 1"}
            """
        )
    )
    errors = schema_errors(schema, [*docs, bad])
    if errors is not None:  # with a jsonschema package at hand, validate for real
        assert errors[: len(docs)] == [0] * len(docs)
        assert errors[-1] > 0


# ---------------------------------------------------------------- exit codes and alias


def test_exit_codes_ok_checks_failed_user_error(qf: Qf, demo: Path) -> None:
    write_pipeline(demo, "contacts", CONTACTS_BAD)
    assert qf("validate", "daily_sales", cwd=demo).code == 0
    assert qf("run", "contacts", cwd=demo).code == 1
    assert qf("run", "no_such_pipeline", cwd=demo).code == 2
    assert qf("runs", "show", "r-does-not-exist", cwd=demo).code == 2
    outside = qf("runs", "list", cwd=demo.parent, env={"QUERYFORGE_WORKSPACE": ""})
    assert outside.code == 2
    assert "queryforge init" in outside.stderr


def test_qf_alias_is_the_same_command(qf: Qf, demo: Path) -> None:
    def alias(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [QF_ALIAS, *args], cwd=demo, capture_output=True, text=True, timeout=120, check=False
        )

    long = qf("validate", "daily_sales", "--json", cwd=demo)
    short = alias("validate", "daily_sales", "--json")
    assert short.returncode == long.code == 0
    assert json.loads(short.stdout) == long.json()

    ran = alias("run", "daily_sales", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"
    assert table_rows(demo, "analytics.daily_sales")[1] == expected_daily_sales(demo)
    assert alias("run", "nope").returncode == 2
