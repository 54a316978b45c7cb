"""What a dbt user writes out of habit gets an answer in dbt's terms, not a parser error."""

from __future__ import annotations

import pytest

from queryforge.errors import SpecError
from queryforge.spec.loader import parse_text

HEAD = "name: p\nsteps:\n  - id: x\n    extract: {path: data/orders.csv}\n"
TAIL = "  - id: out\n    load: {input: x, table: t}\n"


def bind(middle: str) -> None:
    parse_text(HEAD + middle + TAIL, origin="p.yaml").bind()


@pytest.mark.parametrize(
    "middle",
    [
        "  - id: y\n    sql: \"SELECT * FROM {{ ref('stg_orders') }}\"\n",
        "  - id: y\n    sql: |\n      SELECT *\n      FROM x\n"
        "      {% if is_incremental() %} WHERE 1 = 1 {% endif %}\n",
        '  - id: y\n    filter: {input: x, where: "order_date > \'{{ var(\\"start\\") }}\'"}\n',
        "  - id: y\n    derive: {input: x, columns: {z: \"{{ dbt_utils.star('x') }}\"}}\n",
    ],
)
def test_jinja_anywhere_is_refused_with_the_queryforge_way(middle: str) -> None:
    with pytest.raises(SpecError) as err:
        bind(middle)
    text = err.value.render()
    assert "Jinja templating, which QueryForge does not have" in text
    assert "ref: NAME" in text and "p.yaml:" in text


def test_dollar_parameters_and_braces_in_sql_are_not_jinja() -> None:
    parse_text(
        "name: p\nparams: {n: 3}\nsteps:\n  - id: x\n    extract: {path: data/orders.csv}\n"
        "  - id: y\n    sql: \"SELECT {'a': 1} AS s, regexp_matches(status, '^[a-z]{2,}$') AS ok FROM x "
        'LIMIT ${n}"\n' + TAIL.replace("input: x", "input: y"),
        origin="p.yaml",
    ).bind()


def test_tests_instead_of_rules_names_the_rename() -> None:
    with pytest.raises(SpecError) as err:
        bind("  - id: c\n    check: {input: x, tests: [{unique: order_id}]}\n")
    text = err.value.render()
    assert "a check step lists 'rules'" in text and "rename 'tests:' to 'rules:'" in text


@pytest.mark.parametrize("rule", ["unique", "not_null"])
def test_a_bare_rule_name_shows_the_mapping_form(rule: str) -> None:
    with pytest.raises(SpecError) as err:
        bind(f"  - id: c\n    check: {{input: x, rules: [{rule}]}}\n")
    text = err.value.render()
    assert f"Check rule '{rule}'" in text and f"'- {rule}: order_id'" in text
