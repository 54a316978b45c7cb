"""Settings: `queryforge.yaml` for the workspace, `QUERYFORGE_*` environment variables for the process."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError, SpecError, did_you_mean
from .spec.loader import load_yaml_text, read_text_file

CONFIG_FILE = "queryforge.yaml"
STATE_DIR = ".queryforge"


class ConnectionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    writable: bool = False


ENV_REFERENCE = re.compile(r"^\$\{env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}$")
HTTP_URL = re.compile(r"^https?://[^/\s]+")
PLANNER_HINTS = {
    "provider": "one of rules, openai, anthropic, gemini",
    "model": "the model's name as its API spells it, e.g. gpt-4o-mini",
    "base_url": "an http(s) URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1",
    "timeout": "seconds to wait per request, a positive number such as 60",
    "api_key": "write api_key: ${env:OPENAI_API_KEY} and export the key in that variable",
}


class Located(BaseModel):
    """A section that knows the file and the lines it came from, for errors found after loading."""

    _origin: str = PrivateAttr(default=CONFIG_FILE)
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    def located(self, origin: str, lines: dict[str, int]) -> Self:
        """This section, knowing its file and the line of each key (`a/b` for nested keys)."""
        self._origin, self._lines = origin, dict(lines)
        return self

    def where(self, key: str | None = None) -> str:
        """`queryforge.yaml:LINE` of a key of this section (or of the section)."""
        line = self._lines.get(key or "") or self._lines.get("")
        return f"{self._origin}:{line}" if line else self._origin


class PlannerConfig(Located):
    """The `planner:` section: which provider drafts pipelines and how to reach it.

    QUERYFORGE_LLM* environment variables win over these values. The key is never written here,
    only a reference (`${env:NAME}`, as connections reference secrets) to the variable holding it.
    """

    model_config = ConfigDict(extra="forbid")

    provider: str | None = Field(default=None, description="rules | openai | anthropic | gemini")
    model: str | None = Field(default=None, description="model name (default per provider)")
    base_url: str | None = Field(default=None, description="the API's base URL")
    timeout: float | None = Field(default=None, gt=0, description="seconds per HTTP request")
    api_key: str | None = Field(default=None, description="${env:NAME} of the variable holding the key")

    @field_validator("provider")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.strip().lower() if value is not None else None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not HTTP_URL.match(value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("api_key")
    @classmethod
    def _a_reference(cls, value: str | None) -> str | None:
        # The message never repeats the value: it may be the key itself.
        if value is not None and not ENV_REFERENCE.match(value):
            raise ValueError(
                "expected a reference to the environment variable that holds the key, written "
                "${env:NAME}; the key itself never belongs in queryforge.yaml"
            )
        return value

    @property
    def api_key_env(self) -> str | None:
        """The name of the environment variable `api_key` refers to."""
        found = ENV_REFERENCE.match(self.api_key or "")
        return found.group(1) if found else None


CUSTOM_RULE_SHAPE = (
    "a custom rule is {description: TEXT, args: {NAME: column | value}, holds: SQL PREDICATE}, "
    "e.g. positive: {args: {column: column}, holds: ':column > 0'}"
)


class CustomRuleConfig(Located):
    """An entry of the `rules:` section: a check rule of the workspace's own, used in pipelines as
    the built-in rules are. `quality.checks.CustomRule.define` checks the predicate."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, description="what the rule asserts")
    args: dict[str, str] = Field(
        default_factory=dict,
        description="argument name -> kind: column (a column of the checked step) or value (a literal)",
    )
    holds: str = Field(description="a SQL condition every row must satisfy; :NAME stands for an argument")


class WorkspaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "queryforge"
    engine: str = "duckdb"
    target: str = Field(default="warehouse", description="default connection that loads write to")
    connections: dict[str, ConnectionSpec] = Field(default_factory=dict)
    planner: PlannerConfig = Field(
        default_factory=PlannerConfig, description="the planner provider of `ask` (env vars win)"
    )
    rules: dict[str, CustomRuleConfig] = Field(
        default_factory=dict, description="check rules of the workspace's own, by name (docs/checks.md)"
    )

    @classmethod
    def default(cls, name: str) -> WorkspaceConfig:
        return cls(
            name=name,
            connections={
                "warehouse": ConnectionSpec(url=f"duckdb:{STATE_DIR}/warehouse.duckdb", writable=True)
            },
        )

    def with_defaults(self) -> WorkspaceConfig:
        if "warehouse" in self.connections:
            return self
        conns = {
            "warehouse": ConnectionSpec(url=f"duckdb:{STATE_DIR}/warehouse.duckdb", writable=True),
            **self.connections,
        }
        return self.model_copy(update={"connections": conns})

    def to_yaml(self) -> str:
        data: dict[str, Any] = self.model_dump(mode="json", exclude_defaults=False)
        if not self.planner.model_dump(exclude_none=True):  # the offline default needs no section
            data.pop("planner")
        else:
            data["planner"] = self.planner.model_dump(mode="json", exclude_none=True)
        if not self.rules:
            data.pop("rules")
        else:
            data["rules"] = {n: r.model_dump(mode="json", exclude_none=True) for n, r in self.rules.items()}
        return yaml.safe_dump(data, sort_keys=False)


class Settings(BaseSettings):
    """Process settings; each can be set as QUERYFORGE_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="QUERYFORGE_", extra="ignore")

    database_url: str | None = Field(default=None, description="metadata DB; SQLite in .queryforge/ if unset")
    org: str = "default"
    user: str = "local"
    engine: str | None = Field(
        default=None,
        description="engine of the runs this process executes (duckdb, spark); wins over queryforge.yaml",
    )
    workspace: str | None = None
    spark_above_bytes: int = Field(
        default=10 * 1024**3,
        ge=0,
        description="input size above which `engine: auto` runs a pipeline on Spark",
    )
    cost_cap_rows: int = Field(
        default=100_000_000, description="rows one ask may scan before it needs --approve-cost"
    )
    catalog_ttl_s: float = Field(
        default=600.0, description="seconds a cached catalog listing is reused; --refresh skips the cache"
    )
    cost_budget_rows_per_hour: int = Field(
        default=1_000_000_000, description="rows all asks of an org may scan in a rolling hour"
    )
    max_memory: str = Field(
        default="75%",
        pattern=r"(?i)^\s*\d+(\.\d+)?\s*(%|b|[kmgt]i?b)\s*$",
        description="memory each DuckDB instance of a run or query may use: a share of RAM or a size",
    )
    query_timeout_s: float = Field(
        default=900.0, gt=0, description="seconds a `queryforge query` on the warehouse may run"
    )
    org_concurrency: int = Field(default=3, ge=1, description="runs of one org that may run at once")
    lease_s: float = Field(default=30.0, gt=0, description="seconds a worker owns a run without a heartbeat")
    heartbeat_s: float = Field(default=10.0, gt=0, description="seconds between a worker's heartbeats")
    max_lost_leases: int = Field(
        default=3, ge=1, description="lost leases after which a run is dead-lettered"
    )
    cancel_grace_s: float = Field(
        default=30.0, ge=0, description="seconds a cancelled run may take to stop before it is killed"
    )
    run_attempts: int = Field(
        default=3, ge=1, description="times a worker runs a run that keeps failing with TRANSIENT errors"
    )

    @model_validator(mode="after")
    def _heartbeats_fit_in_a_lease(self) -> Settings:
        # A worker stops itself when it could not renew its lease for 3/4 of it: with heartbeats
        # further apart than half a lease, one late heartbeat would stop a healthy worker.
        if self.heartbeat_s > self.lease_s / 2:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s:g}) must be at most half of lease_s ({self.lease_s:g})"
            )
        return self


def process_settings() -> Settings:
    """Settings from the QUERYFORGE_* environment, with a readable error when one is wrong."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(x) for x in err["loc"])
        where = f"QUERYFORGE_{name.upper()}" if name else "QUERYFORGE_* environment variables"
        raise ConfigError(
            f"Invalid setting {where}: {err['msg']}", where="environment", hint="fix or unset the variable"
        ) from None


def load_config(root: Path) -> WorkspaceConfig:
    path = root / CONFIG_FILE
    try:
        text = read_text_file(path, str(path))
        data = load_yaml_text(text, str(path), what=CONFIG_FILE, yaml11_booleans=True)
    except SpecError as exc:  # the same guards as pipelines; here it is a settings error
        raise ConfigError(exc.message, where=exc.where, hint=exc.hint) from None
    lines = _key_lines(text) if isinstance(data, dict) else {}
    try:
        config = WorkspaceConfig.model_validate(data or {}).with_defaults()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(x) for x in err["loc"])
        line = next((lines[loc[:cut]] for cut in range(len(loc), 0, -1) if loc[:cut] in lines), None)
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"Invalid setting '{'.'.join(loc)}' in {CONFIG_FILE}: {message}",
            where=f"{path}:{line}" if line else str(path),
            hint=_planner_hint(loc, str(err["type"])) or _rules_hint(loc, str(err["type"])),
        ) from None
    config.planner.located(str(path), _section_lines(lines, ("planner",)))
    for name, rule in config.rules.items():
        rule.located(str(path), _section_lines(lines, ("rules", name)))
    return config


def _section_lines(lines: dict[tuple[str, ...], int], section: tuple[str, ...]) -> dict[str, int]:
    """The lines of a section's keys, as `key` or `key/sub` ("" is the section's own line)."""
    n = len(section)
    return {"/".join(key[n:]): line for key, line in lines.items() if key[:n] == section}


def _rules_hint(loc: tuple[str, ...], kind: str) -> str | None:
    """How to fix a bad entry of the `rules:` section."""
    if loc[:1] != ("rules",):
        return None
    if kind == "extra_forbidden" and len(loc) == 3:
        return f"{did_you_mean(loc[2], CustomRuleConfig.model_fields)}; {CUSTOM_RULE_SHAPE}"
    return CUSTOM_RULE_SHAPE


def _planner_hint(loc: tuple[str, ...], kind: str) -> str | None:
    """How to fix a bad key or value of the `planner:` section."""
    if loc[:1] != ("planner",):
        return None
    if len(loc) < 2:
        return "write planner: as a mapping of " + ", ".join(PlannerConfig.model_fields)
    if kind == "extra_forbidden":
        return did_you_mean(loc[1], PlannerConfig.model_fields)
    return PLANNER_HINTS.get(loc[1])


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line of every mapping key (as a path of keys) of a document the guarded loader accepted."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                out[child] = key.start_mark.line + 1
                walk(value, child)

    if root is not None:
        walk(root, ())
    return out
