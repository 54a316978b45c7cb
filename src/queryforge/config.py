"""Settings: `queryforge.yaml` for the workspace, `QUERYFORGE_*` environment variables for the process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError, SpecError
from .spec.loader import load_yaml_text, read_text_file

CONFIG_FILE = "queryforge.yaml"
STATE_DIR = ".queryforge"


class ConnectionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    writable: bool = False


class WorkspaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "queryforge"
    engine: str = "duckdb"
    target: str = Field(default="warehouse", description="default connection that loads write to")
    connections: dict[str, ConnectionSpec] = Field(default_factory=dict)

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
        return yaml.safe_dump(data, sort_keys=False)


class Settings(BaseSettings):
    """Process settings; each can be set as QUERYFORGE_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="QUERYFORGE_", extra="ignore")

    database_url: str | None = Field(default=None, description="metadata DB; SQLite in .queryforge/ if unset")
    org: str = "default"
    user: str = "local"
    workspace: str | None = None
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
        data = load_yaml_text(
            read_text_file(path, str(path)), str(path), what=CONFIG_FILE, yaml11_booleans=True
        )
    except SpecError as exc:  # the same guards as pipelines; here it is a settings error
        raise ConfigError(exc.message, where=exc.where, hint=exc.hint) from None
    try:
        return WorkspaceConfig.model_validate(data or {}).with_defaults()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(
            f"Invalid setting '{loc}' in {CONFIG_FILE}: {err['msg']}", where=str(path)
        ) from None
