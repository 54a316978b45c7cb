"""Load pipeline YAML/JSON with line numbers, and turn pydantic errors into one clear sentence."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from ..errors import NotFoundError, SpecError, UserError, did_you_mean
from .models import STEP_KINDS, Pipeline, step_kind_of
from .params import resolve_params, substitute

Loc = tuple[str | int, ...]


# YAML limits: a pipeline is a few kilobytes and a few levels deep; these only stop abuse.
MAX_YAML_BYTES = 5 * 1024 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000  # a 200-step pipeline has ~3,000; parsing 100,000 takes about a second
_TOO_DEEP_HINT = "flatten the document; no pipeline needs that many levels"


class _Refused(Exception):
    """A document the guarded loader will not build, with the mark of the offending token."""

    def __init__(self, message: str, mark: Any, hint: str) -> None:
        super().__init__(message)
        self.message, self.mark, self.hint = message, mark, hint


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _Base(Composer, CParser, SafeConstructor, Resolver):
        """libyaml scans and parses (~8x faster on large documents); composing stays in Python so
        the guards below see every node."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)

else:  # pragma: no cover -- PyYAML built without libyaml

    class _Base(yaml.SafeLoader):  # type: ignore[no-redef]
        """The pure-Python safe loader."""


class _Guarded(_Base):
    """A safe loader that refuses anchors and aliases, duplicate keys, deep nesting and huge documents.

    Aliases are refused outright rather than budgeted: a 500-byte "billion laughs" expands to
    gigabytes, and no pipeline needs them. Duplicate keys are refused because YAML keeps only the
    last one, silently dropping what the author wrote first.
    """

    def __init__(self, stream: str, what: str = "pipelines") -> None:
        super().__init__(stream)
        self.what = what
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        mark = getattr(event, "start_mark", None)
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                f"YAML anchors and aliases are not allowed in {self.what}",
                mark,
                "write the repeated part out in full (anchors '&name' and aliases '*name' are refused)",
            )
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            raise _Refused(
                f"YAML document has more than {MAX_YAML_NODES:,} values",
                mark,
                "split it, or move data into files under data/",
            )
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise _Refused(f"YAML nested more than {MAX_YAML_DEPTH} levels deep", mark, _TOO_DEEP_HINT)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                raise _Refused(
                    f"Duplicate key '{key}' (first written on line {first.start_mark.line + 1})",
                    key_node.start_mark,
                    "remove or rename one of them; YAML would silently keep only the last",
                )
        return super().construct_mapping(node, deep=deep)


class _LineLoader(_Guarded):
    """The guarded loader with YAML 1.2 booleans: `on`, `yes`, `no` stay strings (`join: {on: [...]}`)."""


_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _ConfigLoader(_Guarded):
    """The guarded loader with YAML 1.1 booleans, as `queryforge.yaml` has always been read."""


def _parse(
    text: str, origin: str, *, what: str = "pipelines", loader_class: type[_Guarded] = _LineLoader
) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of one YAML document, or a SpecError."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_YAML_BYTES:
        raise SpecError(
            f"YAML document too large: {size / 1e6:.1f} MB (the limit is {MAX_YAML_BYTES // 2**20} MB)",
            where=origin,
            hint="split it, or move data into files under data/",
        )
    try:
        loader = loader_class(text, what)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _Refused as exc:
        line = f":{exc.mark.line + 1}" if exc.mark else ""
        raise SpecError(exc.message, where=f"{origin}{line}", hint=exc.hint) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "malformed YAML"
        if "nesting depth" in problem:  # libyaml's own limit, met while it scans ahead of us
            raise SpecError(
                f"YAML nested more than {MAX_YAML_DEPTH} levels deep",
                where=f"{origin}{line}",
                hint=_TOO_DEEP_HINT,
            ) from None
        raise SpecError(
            f"Malformed YAML: {problem}",
            where=f"{origin}{line}",
            hint="check indentation and quoting around that line",
        ) from None
    except yaml.reader.ReaderError as exc:
        at = text[: exc.position].count("\n") + 1
        raise SpecError(
            f"Malformed YAML: character {chr(exc.character)!r} is not allowed",
            where=f"{origin}:{at}",
            hint="remove control characters from the file",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"Malformed YAML: {exc}", where=origin) from None
    return node, data


def load_yaml_text(
    text: str, source_name: str, *, what: str = "pipelines", yaml11_booleans: bool = False
) -> Any:
    """Parse one YAML (or JSON) document with the guards every untrusted YAML text goes through.

    Args:
        text: the document.
        source_name: the file (or "reply") errors name, with the line.
        what: what the document is, for the message ("pipelines", "planner replies", ...).
        yaml11_booleans: read `yes`/`no`/`on`/`off` as booleans (queryforge.yaml); pipelines don't.

    Returns:
        The parsed data (None for an empty document).

    Raises:
        SpecError: malformed YAML, an anchor or alias, a duplicate key, nesting deeper than
            MAX_YAML_DEPTH or a document larger than MAX_YAML_BYTES -- naming file:line.

    Example:
        >>> load_yaml_text("a: [1, 2]", "x.yaml")
        {'a': [1, 2]}
    """
    loader_class = _ConfigLoader if yaml11_booleans else _LineLoader
    return _parse(text, source_name, what=what, loader_class=loader_class)[1]


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
        refuse_templating(self)
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
    node, data = _parse(text, origin)
    lines: dict[Loc, int] = {}
    if node is not None:
        _compose_lines(node, (), lines)
    if not isinstance(data, dict):
        raise SpecError(
            "A pipeline must be a mapping with 'name' and 'steps'",
            where=f"{origin}:1",
            hint="start the file with 'name: my_pipeline' and a 'steps:' list",
        )
    return PipelineSource(raw=data, origin=origin, lines=lines)


def read_text_file(path: Path, shown: str, *, error: type[UserError] = SpecError) -> str:
    """A YAML file's text: too large or not UTF-8 is the author's to fix, said with file:line."""
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise error(
            f"File too large: {size / 1e6:.1f} MB (the limit is {MAX_YAML_BYTES // 2**20} MB)",
            where=shown,
            hint="a pipeline or settings file is a few kilobytes; move data into files under data/",
        )
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(
            f"File is not valid UTF-8 (byte 0x{raw[exc.start]:02x} on line {line})",
            where=f"{shown}:{line}",
            hint="save the file as UTF-8",
        ) from None


def load_file(path: str | Path, display: str | None = None) -> PipelineSource:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(
            f"Pipeline file '{path}' does not exist",
            hint=did_you_mean(p.name, [f.name for f in p.parent.glob("*.y*ml")])
            if p.parent.is_dir()
            else None,
        )
    shown = display or str(path)
    return parse_text(read_text_file(p, shown), origin=shown)


TAG = "\0tag"


def at_tagged(loc: list[str | int]) -> bool:
    return TAG in loc


def container_of(raw: Any, loc: Iterable[str | int]) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


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
        parent = container_of(raw, loc[:-1])
        if loc[-1] == "rules" and isinstance(parent, dict) and "tests" in parent:
            return (
                (*loc[:-1], "tests"),
                f"'{name.removesuffix('rules')}tests' lists dbt tests; a check step lists 'rules'",
                "rename 'tests:' to 'rules:' (unique, not_null, accepted_values and relationships "
                "keep their dbt names)",
            )
        return tuple(loc), f"Missing required field '{name}'", None
    if kind in ("dict_type", "model_type") and "rules" in loc and isinstance(container, str):
        return (
            tuple(loc),
            f"Check rule '{container}' in '{name}' names no column",
            f"a rule is a mapping from its name to its settings, e.g. '- {container}: order_id' "
            f"or '- {container}: [a, b]' (docs/checks.md)",
        )
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


JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def _strings(obj: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    if isinstance(obj, str):
        yield loc, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, (*loc, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(v, (*loc, i))


def refuse_templating(source: PipelineSource) -> None:
    """Jinja (`{{ ref('x') }}`, `{% if %}`) copied from a dbt model gets one clear answer, not a
    SQL parse error: QueryForge has no templating."""
    for loc, text in _strings(source.raw):
        found = JINJA.search(text)
        if found:
            raise SpecError(
                f"'{found.group(0)}' is Jinja templating, which QueryForge does not have",
                where=source.where(loc),
                hint="read another pipeline's output with 'extract: {ref: NAME}' and name earlier steps "
                "directly in SQL; parameters are written ${name}",
            )


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
