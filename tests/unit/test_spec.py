"""The pipeline spec as a user writes it: YAML/JSON parsing, errors with file:line, hashing, JSON Schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from queryforge.config import load_config
from queryforge.errors import ConfigError, NotFoundError, SpecError
from queryforge.spec import models as m
from queryforge.spec.loader import MAX_YAML_DEPTH, MAX_YAML_NODES, load_file, load_yaml_text, parse_text
from queryforge.spec.models import STEP_KINDS, json_schema

BASE = """\
name: orders_daily
description: a small pipeline
steps:
  - id: orders
    extract: {path: data/orders.csv}
  - id: customers
    extract: {path: data/customers.csv}
  - id: enriched
    join:
      left: orders
      right: customers
      on: [customer_id]
      how: left
  - id: ok
    check:
      input: enriched
      rules:
        - accepted_values: {column: country, values: [NO, SE, yes, on, off]}
  - id: publish
    load: {input: enriched, table: daily, mode: merge, keys: [order_id]}
"""


def line_of(text: str, needle: str) -> int:
    """1-based number of the only line of text containing needle (an independent count)."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} occurs on lines {hits}"
    return hits[0]


def spec_error(text: str, origin: str = "pipelines/p.yaml") -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_text(text, origin=origin).bind()
    return info.value


# ---------------------------------------------------------------- YAML 1.2 parsing


def test_yaml_12_keeps_on_yes_no_as_strings() -> None:
    source = parse_text(BASE)
    join = source.raw["steps"][2]["join"]
    assert "on" in join and True not in join
    assert join["on"] == ["customer_id"]
    values = source.raw["steps"][3]["check"]["rules"][0]["accepted_values"]["values"]
    assert values == ["NO", "SE", "yes", "on", "off"]  # the Norway problem does not happen

    bound = source.bind()
    step = bound.pipeline.step("enriched")
    assert isinstance(step, m.JoinStep)
    assert step.join.on == ["customer_id"]
    assert step.join.how == "left"


def test_yaml_true_false_are_still_booleans() -> None:
    text = BASE.replace(
        "  - id: ok\n", "  - id: both\n    union: {inputs: [orders, orders], distinct: true}\n  - id: ok\n"
    )
    source = parse_text(text)
    assert source.raw["steps"][3]["union"]["distinct"] is True
    step = source.bind().pipeline.step("both")
    assert isinstance(step, m.UnionStep)
    assert step.union.distinct is True


def test_a_valid_pipeline_binds_into_typed_steps() -> None:
    bound = parse_text(BASE).bind()
    assert bound.pipeline.name == "orders_daily"
    assert [s.id for s in bound.pipeline.steps] == ["orders", "customers", "enriched", "ok", "publish"]
    assert [s.kind for s in bound.pipeline.steps] == ["extract", "extract", "join", "check", "load"]
    load = bound.pipeline.step("publish")
    assert isinstance(load, m.LoadStep)
    assert (load.load.mode, load.load.keys, load.load.table) == ("merge", ["order_id"], "daily")
    assert bound.pipeline.step("enriched").inputs == ["orders", "customers"]


# ---------------------------------------------------------------- errors with line numbers


def test_unknown_field_names_line_and_suggests_the_right_one() -> None:
    text = BASE.replace("      how: left", "      hwo: left")
    err = spec_error(text)
    assert "hwo" in err.message
    assert err.where == f"pipelines/p.yaml:{line_of(text, 'hwo: left')}"
    assert err.hint is not None and "'how'" in err.hint


def test_unknown_top_level_field_suggests_steps() -> None:
    text = "name: p\nstpes: 1\nsteps:\n  - id: a\n    extract: {path: a.csv}\n"
    err = spec_error(text)
    assert "stpes" in err.message
    assert err.where == "pipelines/p.yaml:2"
    assert err.hint is not None and "'steps'" in err.hint


def test_unknown_step_kind_names_its_line_and_suggests_a_kind() -> None:
    text = BASE.replace("    join:\n", "    jion:\n")
    err = spec_error(text)
    assert "jion" in err.message
    assert err.where == f"pipelines/p.yaml:{line_of(text, 'jion:')}"
    assert err.hint is not None and "'join'" in err.hint


def test_two_kinds_in_one_step_is_refused_at_that_step() -> None:
    text = BASE.replace(
        "    extract: {path: data/customers.csv}\n",
        "    extract: {path: data/customers.csv}\n    filter: {input: orders, where: 'x > 1'}\n",
    )
    err = spec_error(text)
    assert "more than one kind" in err.message
    assert "extract" in err.message and "filter" in err.message
    assert err.where == f"pipelines/p.yaml:{line_of(text, '- id: customers')}"
    assert err.hint is not None and "one kind" in err.hint


def test_step_without_a_kind_lists_the_kinds() -> None:
    err = spec_error("name: p\nsteps:\n  - id: lonely\n")
    assert "no kind" in err.message
    assert err.where == "pipelines/p.yaml:3"
    assert err.hint is not None and all(k in err.hint for k in ("extract", "filter", "load"))


def test_missing_field_in_a_step_body_is_named_with_its_line() -> None:
    text = BASE.replace("      right: customers\n", "")
    err = spec_error(text)
    assert "Missing required field" in err.message
    assert "join.right" in err.message
    assert err.where == f"pipelines/p.yaml:{line_of(text, '    join:')}"


def test_missing_name_is_reported() -> None:
    err = spec_error("steps:\n  - id: a\n    extract: {path: a.csv}\n")
    assert err.message.startswith("Missing required field 'name'")


def test_bad_pipeline_name_pattern() -> None:
    err = spec_error("name: 9lives\nsteps:\n  - id: a\n    extract: {path: a.csv}\n")
    assert "'9lives'" in err.message
    assert err.where == "pipelines/p.yaml:1"
    assert err.hint is not None and "letters, digits and underscores" in err.hint


@pytest.mark.parametrize("bad_id", ["1abc", "a-b", "with space"])
def test_bad_step_id_pattern_is_refused(bad_id: str) -> None:
    text = BASE.replace("- id: customers", f"- id: '{bad_id}'")
    err = spec_error(text)
    assert repr(bad_id) in err.message
    assert err.hint is not None and "letters, digits and underscores" in err.hint


def test_bad_step_id_points_at_the_id_line_and_field() -> None:
    text = BASE.replace("- id: customers", "- id: 1customers")
    err = spec_error(text)
    assert "'steps[1].id'" in err.message
    assert err.where == f"pipelines/p.yaml:{line_of(text, '1customers')}"


def test_unknown_step_level_field_suggests_step_fields() -> None:
    text = BASE.replace(
        "    extract: {path: data/customers.csv}\n",
        "    extract: {path: data/customers.csv}\n    descripton: the customers\n",
    )
    err = spec_error(text)
    assert "'steps[1].descripton'" in err.message
    assert err.where == f"pipelines/p.yaml:{line_of(text, 'descripton')}"
    assert err.hint is not None and "'description'" in err.hint


def test_bad_enum_value_lists_the_choices_with_line() -> None:
    text = BASE.replace("mode: merge", "mode: upsert")
    err = spec_error(text)
    assert "load.mode" in err.message
    assert all(word in err.message for word in ("append", "replace", "merge"))
    assert err.where == f"pipelines/p.yaml:{line_of(text, 'mode: upsert')}"


def test_malformed_yaml_names_the_line() -> None:
    text = "name: p\nsteps:\n  - id: a\n   extract: [\n"
    with pytest.raises(SpecError) as info:
        parse_text(text, origin="p.yaml")
    assert info.value.message.startswith("Malformed YAML")
    assert info.value.where == "p.yaml:4"


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just a string\n", "42\n"])
def test_a_document_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_text(text, origin="p.yaml")
    assert "mapping" in info.value.message
    assert info.value.hint is not None and "steps" in info.value.hint


def test_more_problems_are_counted_in_the_message() -> None:
    text = "name: p\nsteps:\n  - id: a\n    extract: {path: a.csv, pth: 1, fromat: csv}\n"
    err = spec_error(text)
    assert "and 1 more problem" in err.message


# ---------------------------------------------------------------- YAML guards

# The classic "billion laughs": 9 aliases of 9 aliases ... -- about 500 bytes, 10^9 strings expanded.
BILLION_LAUGHS = (
    "name: lol\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
    + "steps: [{id: x, extract: {path: '*i'}}]\n"
)


def test_billion_laughs_is_refused_at_once_with_tiny_memory() -> None:
    """In a child process capped at 2 GB and 60 s: before the guard this needed gigabytes."""
    assert len(BILLION_LAUGHS.encode()) < 700
    child = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from queryforge.errors import SpecError
        from queryforge.spec.loader import parse_text
        text = sys.stdin.read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            parse_text(text, origin="bomb.yaml")
        except SpecError as exc:
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            print(f"{grown} {exc.render()}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], input=BILLION_LAUGHS, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown_kb, message = done.stdout.split(" ", 1)
    assert int(grown_kb) < 20_000  # kilobytes of peak memory the parse added
    assert "YAML anchors and aliases are not allowed in pipelines (bomb.yaml:2)" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: p\nbase: &b {path: a.csv}\nsteps: [{id: a, extract: *b}]\n", 2),
        ("name: p\nsteps:\n  - id: a\n    extract: {path: a.csv}\n  - &again\n    id: b\n", 5),
        ("name: p\nsteps:\n  - id: a\n    extract: *nowhere\n", 4),
    ],
    ids=["alias", "anchor-alone", "undefined-alias"],
)
def test_anchors_and_aliases_are_refused_with_their_line(text: str, line: int) -> None:
    with pytest.raises(SpecError) as info:
        parse_text(text, origin="p.yaml")
    assert info.value.message == "YAML anchors and aliases are not allowed in pipelines"
    assert info.value.where == f"p.yaml:{line}"
    assert info.value.hint is not None and "in full" in info.value.hint


@pytest.mark.parametrize(
    ("text", "key", "first", "second"),
    [
        (BASE + "name: again\n", "name", 1, BASE.count("\n") + 1),
        (BASE.replace("      how: left", "      how: left\n      left: customers"), "left", 10, 14),
        ('{"name": "p", "steps": [],\n "name": "q"}', "name", 1, 2),
    ],
    ids=["top-level", "nested", "json"],
)
def test_duplicate_keys_are_refused_naming_key_and_both_lines(
    text: str, key: str, first: int, second: int
) -> None:
    with pytest.raises(SpecError) as info:
        parse_text(text, origin="p.yaml")
    assert info.value.message == f"Duplicate key '{key}' (first written on line {first})"
    assert info.value.where == f"p.yaml:{second}"


def test_deep_nesting_is_a_clear_error_not_a_recursion_error() -> None:
    for text in (
        "name: p\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",  # flow style, as the issue reported
        "name: p\nsteps: " + "{a: " * 3000 + "}" * 3000 + "\n",
        "".join(" " * i + "- \n" for i in range(500)),  # block style
    ):
        with pytest.raises(SpecError) as info:
            parse_text(text, origin="p.yaml")
        assert info.value.message == f"YAML nested more than {MAX_YAML_DEPTH} levels deep"
        assert info.value.where is not None and info.value.where.startswith("p.yaml:")
    nested = "name: p\nsteps: [{id: a, extract: {path: a.csv, options: " + "[" * 50 + "]" * 50 + "}}]\n"
    assert parse_text(nested).raw["name"] == "p"  # deep but within the limit


def test_size_and_node_count_are_limited() -> None:
    with pytest.raises(SpecError, match=r"YAML document too large: 6\.3 MB \(the limit is 5 MB\)"):
        parse_text("name: '" + "x" * (6 << 20) + "'\n", origin="p.yaml")
    with pytest.raises(SpecError, match=f"more than {MAX_YAML_NODES:,} values"):
        parse_text("steps: [" + ",".join(["1"] * (MAX_YAML_NODES + 1)) + "]\n", origin="p.yaml")


def test_load_yaml_text_keeps_the_boolean_rules_of_each_caller() -> None:
    assert load_yaml_text("a: yes\nb: on\nc: true", "p.yaml") == {"a": "yes", "b": "on", "c": True}
    assert load_yaml_text("a: yes\nb: on", "c.yaml", yaml11_booleans=True) == {"a": True, "b": True}
    with pytest.raises(SpecError, match="not allowed in planner replies"):
        load_yaml_text("a: &x 1\nb: *x\n", "reply", what="planner replies")


def test_a_pipeline_file_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: p\ndescription: café\nsteps: []\n".encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_file(path, display="pipelines/latin.yaml")
    assert info.value.message == "File is not valid UTF-8 (byte 0xe9 on line 2)"
    assert info.value.where == "pipelines/latin.yaml:2"
    assert info.value.hint == "save the file as UTF-8"


def test_queryforge_yaml_goes_through_the_same_guards(tmp_path: Path) -> None:
    config = tmp_path / "queryforge.yaml"
    cases = {
        b"name: w\nconnections:\n  a: &c {url: 'duckdb:a.duckdb'}\n  b: *c\n": (
            "YAML anchors and aliases are not allowed in queryforge.yaml",
            3,
        ),
        b"name: w\nengine: duckdb\nname: v\n": ("Duplicate key 'name' (first written on line 1)", 3),
        "name: w\n# caf\u00e9\n".encode("latin-1"): ("File is not valid UTF-8 (byte 0xe9 on line 2)", 2),
        b"name: w\nconnections: " + b"[" * 200 + b"\n": (
            f"YAML nested more than {MAX_YAML_DEPTH} levels deep",
            2,
        ),
    }
    for raw, (message, line) in cases.items():
        config.write_bytes(raw)
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path)
        assert (info.value.message, info.value.where) == (message, f"{config}:{line}")
    config.write_bytes(b"name: w\nconnections:\n  src: {url: 'duckdb:s.duckdb', writable: yes}\n")
    assert load_config(tmp_path).connections["src"].writable is True  # YAML 1.1 booleans, as before


# ---------------------------------------------------------------- JSON input, files


def test_json_input_is_accepted_and_equals_the_yaml() -> None:
    yaml_source = parse_text(BASE)
    as_json = json.dumps(yaml_source.raw, indent=1)
    json_source = parse_text(as_json, origin="p.json")
    assert json_source.raw == yaml_source.raw
    assert json_source.bind().pipeline == yaml_source.bind().pipeline


def test_json_input_errors_carry_line_numbers() -> None:
    text = (
        '{"name": "p",\n "steps": [\n  {"id": "a", "extract": {"path": "x.csv"}},\n'
        '  {"id": "b", "fitler": {"input": "a", "where": "1 = 1"}}\n ]\n}\n'
    )
    err = spec_error(text, origin="p.json")
    assert "fitler" in err.message
    assert err.where == "p.json:4"
    assert err.hint is not None and "'filter'" in err.hint


def test_load_file_reads_yaml_and_reports_origin(tmp_path: Path) -> None:
    path = tmp_path / "daily.yaml"
    path.write_text(BASE.replace("how: left", "how: sideways"), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_file(path, display="pipelines/daily.yaml").bind()
    assert info.value.where == f"pipelines/daily.yaml:{line_of(path.read_text(), 'sideways')}"
    good = tmp_path / "good.yml"
    good.write_text(BASE, encoding="utf-8")
    assert load_file(good).bind().pipeline.name == "orders_daily"


def test_load_file_missing_suggests_a_near_name(tmp_path: Path) -> None:
    (tmp_path / "daily_sales.yaml").write_text(BASE)
    with pytest.raises(NotFoundError) as info:
        load_file(tmp_path / "daily_sale.yaml")
    assert info.value.hint is not None and "daily_sales.yaml" in info.value.hint


# ---------------------------------------------------------------- content hash


def _reorder(value: Any) -> Any:
    """The same document with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    return value


def test_content_hash_is_stable_across_key_order_and_format() -> None:
    source = parse_text(BASE)
    shuffled = json.dumps(_reorder(source.raw))
    assert list(json.loads(shuffled)) != list(source.raw)  # really reordered
    other = parse_text(shuffled)
    assert other.content_hash() == source.content_hash()
    assert other.bind().pipeline.content_hash() == source.bind().pipeline.content_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", source.content_hash())
    # comments and formatting are not content
    assert parse_text("# a comment\n" + BASE).content_hash() == source.content_hash()


def test_the_order_of_derived_columns_is_content() -> None:
    text = (
        "name: p\nsteps:\n  - id: a\n    extract: {path: data/orders.csv}\n"
        "  - id: b\n    derive: {input: a, columns: {x: '1', y: '2'}}\n"
    )
    swapped = parse_text(text.replace("{x: '1', y: '2'}", "{y: '2', x: '1'}"))
    assert swapped.content_hash() != parse_text(text).content_hash()
    assert json.loads(swapped.canonical_text())["steps"][1]["derive"]["columns"] == {"y": "2", "x": "1"}


def test_content_hash_changes_with_content() -> None:
    source = parse_text(BASE)
    changed = parse_text(BASE.replace("how: left", "how: inner"))
    assert changed.content_hash() != source.content_hash()
    assert changed.bind().pipeline.content_hash() != source.bind().pipeline.content_hash()


# ---------------------------------------------------------------- JSON Schema

# Keywords of JSON Schema draft 2020-12 (core, applicator, validation, meta-data, format, unevaluated).
KEYWORDS = {
    "$schema", "$id", "$ref", "$defs", "$comment", "$anchor", "$dynamicRef", "$dynamicAnchor",
    "$vocabulary", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas",
    "prefixItems", "items", "contains", "properties", "patternProperties", "additionalProperties",
    "propertyNames", "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties", "required",
    "dependentRequired", "title", "description", "default", "deprecated", "readOnly", "writeOnly",
    "examples", "format", "unevaluatedItems", "unevaluatedProperties", "contentEncoding",
    "contentMediaType", "contentSchema", "discriminator",
}  # fmt: skip
TYPES = {"null", "boolean", "object", "array", "number", "integer", "string"}
SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}
SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
SCHEMA_VALUES = {"not", "if", "then", "else", "items", "contains", "additionalProperties", "propertyNames"}


def _meta_check(node: Any, root: dict[str, Any], path: str) -> None:
    """A structural check of a schema against the 2020-12 meta-schema's rules for the keywords used."""
    if isinstance(node, bool):
        return
    assert isinstance(node, dict), f"{path}: a schema must be an object or a boolean"
    for key, value in node.items():
        assert key in KEYWORDS, f"{path}: unknown keyword {key!r}"
        where = f"{path}/{key}"
        if key in SCHEMA_MAPS:
            assert isinstance(value, dict), where
            for name, sub in value.items():
                _meta_check(sub, root, f"{where}/{name}")
        elif key in SCHEMA_LISTS:
            assert isinstance(value, list) and value, where
            for i, sub in enumerate(value):
                _meta_check(sub, root, f"{where}/{i}")
        elif key in SCHEMA_VALUES:
            _meta_check(value, root, where)
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            assert types and set(types) <= TYPES, where
        elif key == "required":
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), where
            assert len(set(value)) == len(value), where
        elif key == "enum":
            assert isinstance(value, list) and value, where
        elif key == "pattern":
            re.compile(value)
        elif key in {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}:
            assert isinstance(value, int) and value >= 0, where
        elif key in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
            assert isinstance(value, int | float) and not isinstance(value, bool), where
        elif key == "$ref":
            assert value.startswith("#/$defs/"), where
            assert value.removeprefix("#/$defs/") in root["$defs"], f"{where}: dangling {value}"


def _valid(instance: Any, schema: Any, root: dict[str, Any]) -> bool:
    """A minimal validator for the keywords the pipeline schema uses (enough to test it is usable)."""
    if schema is True:
        return True
    if schema is False:
        return False
    if "$ref" in schema:
        return _valid(instance, root["$defs"][schema["$ref"].removeprefix("#/$defs/")], root)
    checks: list[bool] = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        checks.append(any(_is_type(instance, k) for k in kinds))
    if "enum" in schema:
        checks.append(instance in schema["enum"])
    if "const" in schema:
        checks.append(instance == schema["const"])
    if "anyOf" in schema:
        checks.append(any(_valid(instance, s, root) for s in schema["anyOf"]))
    if "oneOf" in schema:
        checks.append(sum(_valid(instance, s, root) for s in schema["oneOf"]) == 1)
    if isinstance(instance, str):
        if "pattern" in schema:
            checks.append(re.search(schema["pattern"], instance) is not None)
        if "minLength" in schema:
            checks.append(len(instance) >= schema["minLength"])
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema:
            checks.append(instance >= schema["minimum"])
        if "exclusiveMinimum" in schema:
            checks.append(instance > schema["exclusiveMinimum"])
        if "maximum" in schema:
            checks.append(instance <= schema["maximum"])
    if isinstance(instance, list):
        if "minItems" in schema:
            checks.append(len(instance) >= schema["minItems"])
        if "items" in schema:
            checks.append(all(_valid(v, schema["items"], root) for v in instance))
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        checks.append(all(k in instance for k in schema.get("required", [])))
        for k, v in instance.items():
            if k in props:
                checks.append(_valid(v, props[k], root))
            elif "additionalProperties" in schema:
                checks.append(_valid(v, schema["additionalProperties"], root))
    return all(checks)


def _is_type(value: Any, kind: str) -> bool:
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "string": isinstance(value, str),
    }[kind]


def test_json_schema_is_a_valid_2020_12_schema() -> None:
    schema = json_schema()
    schema = json.loads(json.dumps(schema))  # serialisable as plain JSON
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert {"name", "steps"} <= set(schema["required"])
    _meta_check(schema, schema, "#")


def test_json_schema_has_every_step_kind() -> None:
    schema = json_schema()
    branches = schema["properties"]["steps"]["items"]["oneOf"]
    kinds = set()
    for branch in branches:
        step = schema["$defs"][branch["$ref"].removeprefix("#/$defs/")]
        own = [k for k in step["required"] if k in STEP_KINDS]
        assert len(own) == 1, step["title"]
        assert step.get("additionalProperties") is False
        kinds.add(own[0])
    assert kinds == set(STEP_KINDS)


def test_json_schema_accepts_valid_and_rejects_invalid_pipelines() -> None:
    schema = json_schema()
    good = parse_text(BASE).raw
    assert _valid(good, schema, schema)
    for bad in (
        {**good, "stpes": []},
        {**good, "steps": [*good["steps"], {"id": "x", "jion": {}}]},
        {**good, "steps": [{"id": "a", "extract": {"path": "a"}, "filter": {"input": "a", "where": "1"}}]},
        {**good, "steps": [{"id": "9a", "extract": {"path": "a"}}]},
        {**good, "steps": []},
        {k: v for k, v in good.items() if k != "name"},
    ):
        assert not _valid(bad, schema, schema), bad
