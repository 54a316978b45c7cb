"""Docs that cannot drift.

Every CLI command, step kind (with its fields), check rule, connector scheme and setting must be
documented under docs/, docs/cli.md must be exactly what docs/gen_cli.py generates now, the YAML
examples in the docs must be valid specs, and relative links must resolve.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
from pydantic import BaseModel, TypeAdapter

import queryforge.connectors  # noqa: F401 -- registers the built-in connectors
from queryforge.cli.app import app
from queryforge.config import Settings, WorkspaceConfig
from queryforge.connectors import Connector
from queryforge.quality.checks import RESERVED, Rule
from queryforge.spec import models
from queryforge.spec.loader import parse_text
from queryforge.spec.models import STEP_KINDS, Pipeline, Step

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CLI_MD = DOCS / "cli.md"
PAGES = sorted(DOCS.rglob("*.md"))


def load_gen_cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def all_docs() -> str:
    return "\n".join(text(p) for p in PAGES)


def handwritten_docs() -> str:
    """Everything under docs/ but the generated CLI reference."""
    return "\n".join(text(p) for p in PAGES if p != CLI_MD)


def headings(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if re.match(r"#{1,6} ", line)]


def section(markdown: str, title: str) -> str:
    """The text under the first heading containing `title`, up to the next heading of its level."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#{1,6}) ", line)
        if m and title in line:
            level = len(m.group(1))
            body = []
            for following in lines[i + 1 :]:
                n = re.match(r"(#{1,6}) ", following)
                if n and len(n.group(1)) <= level:
                    break
                body.append(following)
            return "\n".join(body)
    raise AssertionError(f"no heading containing {title!r}")


# ---------------------------------------------------------------- CLI


def typer_commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Every command of a Typer app, sub-apps included, as 'runs list' (walked independently of gen_cli)."""
    for info in typer_app.registered_commands:
        assert info.callback is not None
        name = info.name or typer.main.get_command_name(info.callback.__name__)
        yield " ".join((*prefix, name))
    for group in typer_app.registered_groups:
        assert isinstance(group.name, str), "sub-apps are added with an explicit name"
        yield " ".join((*prefix, group.name))
        yield from typer_commands(group.typer_instance, (*prefix, group.name))


COMMANDS = sorted(typer_commands(app))


def test_the_cli_has_the_commands_this_test_expects() -> None:
    assert {"init", "validate", "explain", "run", "commit", "schema", "runs list", "runs show"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_command_is_in_the_cli_reference(command: str) -> None:
    assert f"## `queryforge {command}`" in text(CLI_MD), (
        f"docs/cli.md has no section for 'queryforge {command}': run python docs/gen_cli.py"
    )


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "runs"])
def test_command_is_explained_in_a_guide(command: str) -> None:
    mention = re.compile(rf"queryforge {re.escape(command)}(?![\w-])")
    assert mention.search(handwritten_docs()), (
        f"no page under docs/ besides cli.md mentions 'queryforge {command}'"
    )


def test_cli_reference_is_up_to_date() -> None:
    generated = load_gen_cli().generate()
    assert text(CLI_MD) == generated, "docs/cli.md is out of date: run python docs/gen_cli.py"


def test_cli_reference_says_it_is_generated() -> None:
    assert "GENERATED" in text(CLI_MD).splitlines()[1]


def test_gen_cli_walks_the_same_commands() -> None:
    walked = {" ".join(path) for path in load_gen_cli().command_paths() if path}
    assert walked == set(COMMANDS)


# ---------------------------------------------------------------- pipelines


@pytest.mark.parametrize("kind", STEP_KINDS)
def test_step_kind_has_a_section(kind: str) -> None:
    assert any(f"`{kind}`" in h for h in headings(text(DOCS / "pipelines.md"))), (
        f"docs/pipelines.md has no heading for the step kind '{kind}'"
    )


def body_models() -> list[tuple[str, type[BaseModel]]]:
    out = []
    for kind in STEP_KINDS:
        step_model = getattr(models, f"{kind.capitalize()}Step")
        annotation = step_model.model_fields[kind].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.append((kind, annotation))
    return out


@pytest.mark.parametrize(
    ("kind", "field"),
    [(kind, field) for kind, model in body_models() for field in model.model_fields],
)
def test_step_field_is_documented_in_its_section(kind: str, field: str) -> None:
    body = section(text(DOCS / "pipelines.md"), f"`{kind}`")
    assert f"`{field}`" in body, f"the '{kind}' section of docs/pipelines.md does not mention `{field}`"


@pytest.mark.parametrize("field", [f for f in models.StepBase.model_fields if f not in STEP_KINDS])
def test_common_step_field_is_documented(field: str) -> None:
    assert f"`{field}`" in section(text(DOCS / "pipelines.md"), "Steps")


@pytest.mark.parametrize("field", list(Pipeline.model_fields))
def test_pipeline_field_is_documented(field: str) -> None:
    assert f"`{field}`" in text(DOCS / "pipelines.md")


@pytest.mark.parametrize("value", ["auto", "table", "view"])
def test_materialize_values_are_documented(value: str) -> None:
    assert f"`{value}`" in section(text(DOCS / "pipelines.md"), "Materialize")


# ---------------------------------------------------------------- checks, connectors, settings


@pytest.mark.parametrize("rule", list(Rule.registry))
def test_check_rule_has_a_section(rule: str) -> None:
    assert any(f"`{rule}`" in h for h in headings(text(DOCS / "checks.md"))), (
        f"docs/checks.md has no heading for the check rule '{rule}'"
    )


@pytest.mark.parametrize("scheme", sorted(Connector.registry))
def test_connector_scheme_is_documented(scheme: str) -> None:
    assert f"`{scheme}:`" in text(DOCS / "connectors.md"), (
        f"docs/connectors.md does not mention the connector scheme `{scheme}:`"
    )


def setting_variables() -> list[str]:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper() for name in Settings.model_fields]


@pytest.mark.parametrize("variable", setting_variables())
def test_setting_is_documented(variable: str) -> None:
    assert variable in all_docs(), f"no page under docs/ documents the setting {variable}"


@pytest.mark.parametrize("key", list(WorkspaceConfig.model_fields))
def test_workspace_config_key_is_documented(key: str) -> None:
    assert f"`{key}`" in text(DOCS / "configuration.md")


# ---------------------------------------------------------------- examples and links


def yaml_blocks() -> Iterator[Any]:
    for page in [ROOT / "README.md", *PAGES]:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text(page), flags=re.S)):
            yield pytest.param(block, id=f"{page.relative_to(ROOT)}#{i}")


STEP = TypeAdapter(Step)


def load_yaml(block: str) -> Any:
    """Parse an example the way pipeline files are parsed (YAML 1.2 booleans: `on:` stays a key)."""
    return parse_text("example:\n" + textwrap.indent(block, "  ")).raw["example"]


@pytest.mark.parametrize("block", list(yaml_blocks()))
def test_yaml_example_is_valid(block: str) -> None:
    """Pipelines, steps, rules and queryforge.yaml snippets in the docs validate against the models."""
    data = load_yaml(block)
    if isinstance(data, dict) and "steps" in data:
        Pipeline.model_validate(data)
    elif isinstance(data, dict) and "connections" in data:
        WorkspaceConfig.model_validate(data)
    elif isinstance(data, dict) and set(data) == {"params"}:
        Pipeline.model_validate({"name": "example", "steps": [{"id": "x", "sql": "SELECT 1"}], **data})
    elif isinstance(data, list) and all(isinstance(s, dict) and "id" in s for s in data):
        for step in data:
            STEP.validate_python(step)
    else:
        # A list of check rules: each item names exactly one known rule.
        assert isinstance(data, list), f"unrecognised YAML example: {data!r}"
        for item in data:
            names = set(item) - set(RESERVED)
            assert len(names) == 1 and names <= set(Rule.registry), f"not a check rule: {item!r}"


def links() -> Iterator[Any]:
    for page in [ROOT / "README.md", ROOT / "CHANGELOG.md", *PAGES]:
        for target in re.findall(r"\]\(([^)\s]+)\)", text(page)):
            if not re.match(r"[a-z]+:", target):
                yield pytest.param(page, target, id=f"{page.relative_to(ROOT)}->{target}")


@pytest.mark.parametrize(("page", "target"), list(links()))
def test_relative_link_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
    if anchor and resolved.suffix == ".md":
        slugs = {slug(h) for h in headings(text(resolved))}
        assert anchor in slugs, f"{page.relative_to(ROOT)} links to missing anchor {target}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    title = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
