"""Load pipeline YAML/JSON with line numbers, and turn pydantic errors into one clear sentence."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import NotFoundError, SpecError, did_you_mean
from .models import STEP_KINDS, Pipeline, step_kind_of
from .params import resolve_params, substitute

Loc = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 booleans: `on`, `yes`, `no` stay strings (`join: {on: [...]}`)."""


_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _compose_lines(node: yaml.Node, path: Loc, out: dict[Loc, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            out[child] = key.start_mark.line + 1
            _compose_lines(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _compose_lines(item, (*path, i), out)


@dataclass(frozen=True)
class PipelineSource:
    """The raw document of a pipeline file, before parameters are bound."""

    raw: dict[str, Any]
    origin: str = "<pipeline>"
    lines: Mapping[Loc, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.raw.get("name", Path(self.origin).stem))

    def where(self, loc: Loc) -> str:
        """`file:line` of the deepest known location of loc."""
        for cut in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:cut]))
            if line is not None:
                return f"{self.origin}:{line}"
        return self.origin

    def step_where(self, step_id: str, *sub: str | int) -> str:
        for i, step in enumerate(self.raw.get("steps") or []):
            if isinstance(step, dict) and step.get("id") == step_id:
                return f"{self.where(('steps', i, *sub))}, step '{step_id}'"
        return self.origin

    def content_hash(self) -> str:
        """Identity of a version: formatting, comments and key order do not count, except where
        order is output (the columns a `derive` adds come out in the order written)."""
        text = json.dumps(_structural_order(self.raw), separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def canonical_text(self) -> str:
        """The stored text of a version: workers run exactly this, so it keeps the written order."""
        return json.dumps(self.raw, indent=2, default=str)

    def bind(self, params: Mapping[str, Any] | None = None, now: datetime | None = None) -> BoundPipeline:
        declared = self.raw.get("params") or {}
        if not isinstance(declared, dict):
            raise SpecError("'params' must be a mapping of name -> default", where=self.where(("params",)))
        values = resolve_params(declared, dict(params or {}), now=now, where=self.where(("params",)))
        body = {k: v for k, v in self.raw.items() if k != "params"}
        body = substitute(body, values, where=self.origin)
        body["params"] = dict(declared)
        pipeline = validate_model(body, self)
        shown = {k: v for k, v in values.items() if k in declared}
        return BoundPipeline(pipeline=pipeline, source=self, params=shown)


# Mappings whose order is output order: the columns a derive adds, the measures of an aggregate.
_ORDERED = {("derive", "columns"), ("aggregate", "measures")}


def _structural_order(value: Any, parent: str = "") -> Any:
    """Keys sorted, except inside the mappings of _ORDERED, which keep the order written."""
    if isinstance(value, dict):
        return {
            k: value[k] if (parent, k) in _ORDERED else _structural_order(value[k], k) for k in sorted(value)
        }
    if isinstance(value, list):
        return [_structural_order(v, parent) for v in value]
    return value


@dataclass(frozen=True)
class BoundPipeline:
    """A validated pipeline with concrete parameter values: what a run executes."""

    pipeline: Pipeline
    source: PipelineSource
    params: dict[str, Any]


def parse_text(text: str, origin: str = "<pipeline>") -> PipelineSource:
    """Parse YAML (JSON is YAML) into a PipelineSource, with a clear error for malformed text."""
    lines: dict[Loc, int] = {}
    try:
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "malformed YAML"
        raise SpecError(
            f"Malformed YAML: {problem}",
            where=f"{origin}{line}",
            hint="check indentation and quoting around that line",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"Malformed YAML: {exc}", where=origin) from None
    if node is not None:
        _compose_lines(node, (), lines)
    if not isinstance(data, dict):
        raise SpecError(
            "A pipeline must be a mapping with 'name' and 'steps'",
            where=f"{origin}:1",
            hint="start the file with 'name: my_pipeline' and a 'steps:' list",
        )
    return PipelineSource(raw=data, origin=origin, lines=lines)


def load_file(path: str | Path, display: str | None = None) -> PipelineSource:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(
            f"Pipeline file '{path}' does not exist",
            hint=did_you_mean(p.name, [f.name for f in p.parent.glob("*.y*ml")])
            if p.parent.is_dir()
            else None,
        )
    return parse_text(p.read_text(encoding="utf-8"), origin=display or str(path))


TAG = "\0tag"


def at_tagged(loc: list[str | int]) -> bool:
    return TAG in loc


def _describe_error(err: Mapping[str, Any], raw: Mapping[str, Any]) -> tuple[Loc, str, str | None]:
    """One pydantic error as (location, message, hint), with tags stripped from the location."""
    loc: list[str | int] = []
    container: Any = raw
    for part in err["loc"]:
        at_step = len(loc) == 2 and loc[0] == "steps" and isinstance(loc[1], int)
        if (
            isinstance(part, str)
            and part in STEP_KINDS
            and isinstance(container, dict)
            and (
                part not in container or (at_step and part == step_kind_of(container) and not at_tagged(loc))
            )
        ):
            loc.append(TAG)  # pydantic's discriminator tag comes first; it is not a real key
            continue
        loc.append(part)
        try:
            container = container[part]
        except (KeyError, IndexError, TypeError):
            container = None
    loc = [p for p in loc if p != TAG]
    kind = err["type"]
    name = ".".join(str(x) if isinstance(x, str) else f"[{x}]" for x in loc).replace(".[", "[")
    if kind == "union_tag_not_found" or kind == "union_tag_invalid":
        present = (
            [k for k in container if k not in ("id", "description", "timeout_s", "retry", "materialize")]
            if isinstance(container, dict)
            else []
        )
        if isinstance(container, dict) and sum(k in STEP_KINDS for k in container) > 1:
            kinds = [k for k in container if k in STEP_KINDS]
            return (
                tuple(loc),
                f"Step '{name}' has more than one kind ({', '.join(kinds)})",
                "a step has exactly one kind key; split it into two steps",
            )
        unknown = present[0] if present else None
        if unknown:
            return (
                (*loc, unknown),
                f"Unknown step kind '{unknown}' in '{name}'",
                did_you_mean(unknown, STEP_KINDS),
            )
        return tuple(loc), f"Step '{name}' has no kind", f"add one of: {', '.join(STEP_KINDS)}"
    if kind == "extra_forbidden":
        parent = list(loc[:-1])
        options: list[str] = []
        node: Any = raw
        for part in parent:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int):
                node = node[part]
        if isinstance(node, dict):
            model = _model_for(parent, raw)
            options = list(model.model_fields) if model else []
        return tuple(loc), f"Unknown field '{name}'", did_you_mean(str(loc[-1]), options) if options else None
    if kind == "missing":
        return tuple(loc), f"Missing required field '{name}'", None
    if kind in ("literal_error", "enum"):
        return tuple(loc), f"Invalid value for '{name}': {err['msg'].lower()}", None
    if kind == "string_pattern_mismatch":
        return (
            tuple(loc),
            f"Invalid name {err.get('input')!r} for '{name}'",
            "use letters, digits and underscores, not starting with a digit",
        )
    return tuple(loc), f"Invalid field '{name}': {err['msg']}", None


def _model_for(loc: list[str | int], raw: Mapping[str, Any]) -> Any:
    """The pydantic model that validates the mapping at loc (for listing valid field names)."""
    from . import models

    if not loc:
        return models.Pipeline
    if loc[0] == "steps" and len(loc) >= 2 and isinstance(loc[1], int):
        step = raw["steps"][loc[1]]
        kind = step_kind_of(step)
        if kind is None:
            return None
        if len(loc) == 2:
            return getattr(models, f"{kind.capitalize()}Step")
        if len(loc) == 3 and loc[2] == kind:
            return getattr(models, kind.capitalize())
        if len(loc) == 3 and loc[2] == "retry":
            return models.RetryPolicy
    return None


def validate_model(body: dict[str, Any], source: PipelineSource) -> Pipeline:
    try:
        return Pipeline.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        loc, message, hint = _describe_error(errors[0], body)
        more = (
            f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
            if len(errors) > 1
            else ""
        )
        raise SpecError(message + more, where=source.where(loc), hint=hint) from None
