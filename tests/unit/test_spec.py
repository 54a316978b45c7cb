"""The pipeline spec as a user writes it: YAML/JSON parsing, errors with file:line, hashing, JSON Schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from queryforge.errors import NotFoundError, SpecError
from queryforge.spec import models as m
from queryforge.spec.loader import load_file, parse_text
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
