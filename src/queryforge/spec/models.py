"""The pipeline spec: a strict pydantic tree, one key per step kind.

A step is a mapping with an `id` and exactly one kind key (`extract`, `sql`, `filter`, ...);
the kind is found by a callable discriminator so a wrong key gets a clear message instead
of a pydantic union dump.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- step bodies


class Incremental(Strict):
    """Read only rows newer than the last published high-water mark of `cursor`."""

    cursor: str = Field(description="a column that only grows, e.g. updated_at or id")
    initial: Any = Field(
        default=None, description="the mark to start from on the first run (all rows if unset)"
    )


class Extract(Strict):
    """Read a file (path, globs allowed), a table/query of a named connection, or an API endpoint."""

    path: str | None = None
    format: Literal["csv", "json", "ndjson", "parquet"] | None = None
    options: dict[str, Any] = Field(
        default_factory=dict, description="reader options, e.g. delim, header; pagination for APIs"
    )
    connection: str | None = None
    table: str | None = None
    query: str | None = None
    endpoint: str | None = Field(default=None, description="API path, relative to the connection's url")
    stream: str | None = Field(
        default=None, description="a stream of a stream connection: a NATS subject, a Redis stream key"
    )
    types: dict[str, str] | None = Field(
        default=None,
        description="column types of a stream's JSON messages, e.g. {id: BIGINT, url: VARCHAR}",
    )
    columns: list[str] | None = None
    incremental: Incremental | None = None
    ref: str | None = Field(
        default=None,
        description="another pipeline's output, by name: 'stg_orders', or 'stg_orders.load_step' when it "
        "loads more than one table",
    )


class Filter(Strict):
    input: str
    where: str


class Select(Strict):
    input: str
    columns: list[str] | None = None
    exclude: list[str] | None = None


class Rename(Strict):
    input: str
    columns: dict[str, str] = Field(description="old name -> new name")


class Cast(Strict):
    input: str
    columns: dict[str, str] = Field(description="column -> SQL type, e.g. amount: DECIMAL(12,2)")


class Derive(Strict):
    input: str
    columns: dict[str, str] = Field(description="new or replaced column -> SQL expression")


class Join(Strict):
    left: str
    right: str
    on: list[str] | dict[str, str] = Field(description="shared key names, or left column -> right column")
    how: Literal["inner", "left", "right", "full", "semi", "anti"] = "inner"


class Union(Strict):
    inputs: list[str] = Field(min_length=2)
    distinct: bool = False
    by_name: bool = True


class Aggregate(Strict):
    input: str
    group_by: list[str] = Field(default_factory=list)
    measures: dict[str, str] = Field(description="output column -> aggregate expression, e.g. sum(amount)")


class Dedupe(Strict):
    input: str
    keys: list[str] | None = Field(default=None, description="keep one row per key; all columns if omitted")
    order_by: list[str] | None = Field(
        default=None, description="which row to keep, e.g. ['updated_at DESC']"
    )


class Sort(Strict):
    input: str
    by: list[str] = Field(min_length=1, description="e.g. ['amount DESC', 'order_id']")


class Limit(Strict):
    input: str
    n: int = Field(ge=0)
    offset: int = Field(default=0, ge=0)


class Pivot(Strict):
    input: str
    on: str
    using: str = Field(
        description="aggregate expression, e.g. sum(amount), coalesce(sum(amount), 0), sum(a) / count(*)"
    )
    group_by: list[str] = Field(default_factory=list)
    values: list[str | int | float] | None = None
    name: str | None = Field(
        default=None, description="output column name template with {value}, e.g. '{value}_amount'"
    )
    fill: str | int | float | bool | None = Field(
        default=None, description="value of a cell no row falls into (NULL if unset), e.g. 0"
    )


class Unpivot(Strict):
    input: str
    columns: list[str] = Field(min_length=1)
    name: str = "name"
    value: str = "value"


class Check(Strict):
    input: str
    rules: list[dict[str, Any]] = Field(min_length=1)
    severity: Literal["error", "warn"] = "error"


class ColumnDoc(Strict):
    """What a loaded column means and what must hold for it: dbt's `columns:` block."""

    description: str | None = None
    checks: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="rules on this column: not_null, unique, {accepted_values: [a, b]}, {range: {min: 0}}",
    )


class Load(Strict):
    input: str
    connection: str | None = Field(
        default=None, description="target connection; the workspace default if omitted"
    )
    table: str | None = None
    path: str | None = Field(
        default=None, description="write a file instead of a table (.parquet, .csv, .json)"
    )
    mode: Literal["append", "replace", "merge", "snapshot", "view"] = Field(
        default="replace", description="view: publish a view over the pipeline's query, no data copied"
    )
    keys: list[str] | None = None
    check_columns: list[str] | None = Field(
        default=None,
        description="snapshot only: the columns whose change makes a new version (default: all but the keys)",
    )
    on_schema_change: Literal["fail", "add_columns"] = Field(
        default="fail", description="what an append or merge does when the data has new columns"
    )
    columns: dict[str, ColumnDoc] | None = Field(
        default=None, description="descriptions and checks of the loaded columns, by name"
    )


class RetryPolicy(Strict):
    attempts: int = Field(default=3, ge=1, le=20)
    delays: list[float] | None = None


# ---------------------------------------------------------------- steps

STEP_KINDS = (
    "extract", "sql", "filter", "select", "rename", "cast", "derive", "join", "union",
    "aggregate", "dedupe", "sort", "limit", "pivot", "unpivot", "check", "load",
)  # fmt: skip
TRANSFORM_OPS = STEP_KINDS[2:15]


class StepBase(Strict):
    id: str = Field(pattern=IDENT)
    description: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    retry: RetryPolicy | None = None
    materialize: Literal["auto", "table", "view"] = "auto"

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if k in type(self).model_fields)

    @property
    def body(self) -> Any:
        return getattr(self, self.kind)

    @property
    def inputs(self) -> list[str]:
        """Ids of the steps this one reads (sql steps are resolved by the validator)."""
        body = self.body
        if isinstance(body, Join):
            return [body.left, body.right]
        if isinstance(body, Union):
            return list(body.inputs)
        if isinstance(body, str | Extract):
            return []
        return [body.input]


class ExtractStep(StepBase):
    extract: Extract


class SqlStep(StepBase):
    sql: str


class FilterStep(StepBase):
    filter: Filter


class SelectStep(StepBase):
    select: Select


class RenameStep(StepBase):
    rename: Rename


class CastStep(StepBase):
    cast: Cast


class DeriveStep(StepBase):
    derive: Derive


class JoinStep(StepBase):
    join: Join


class UnionStep(StepBase):
    union: Union


class AggregateStep(StepBase):
    aggregate: Aggregate


class DedupeStep(StepBase):
    dedupe: Dedupe


class SortStep(StepBase):
    sort: Sort


class LimitStep(StepBase):
    limit: Limit


class PivotStep(StepBase):
    pivot: Pivot


class UnpivotStep(StepBase):
    unpivot: Unpivot


class CheckStep(StepBase):
    check: Check


class LoadStep(StepBase):
    load: Load


def step_kind_of(value: Any) -> str | None:
    """The discriminator: the one kind key present in a raw step mapping."""
    if isinstance(value, dict):
        found = [k for k in STEP_KINDS if k in value]
    else:
        found = [k for k in STEP_KINDS if hasattr(value, k)]
    return found[0] if len(found) == 1 else None


Step = Annotated[
    Annotated[ExtractStep, Tag("extract")]
    | Annotated[SqlStep, Tag("sql")]
    | Annotated[FilterStep, Tag("filter")]
    | Annotated[SelectStep, Tag("select")]
    | Annotated[RenameStep, Tag("rename")]
    | Annotated[CastStep, Tag("cast")]
    | Annotated[DeriveStep, Tag("derive")]
    | Annotated[JoinStep, Tag("join")]
    | Annotated[UnionStep, Tag("union")]
    | Annotated[AggregateStep, Tag("aggregate")]
    | Annotated[DedupeStep, Tag("dedupe")]
    | Annotated[SortStep, Tag("sort")]
    | Annotated[LimitStep, Tag("limit")]
    | Annotated[PivotStep, Tag("pivot")]
    | Annotated[UnpivotStep, Tag("unpivot")]
    | Annotated[CheckStep, Tag("check")]
    | Annotated[LoadStep, Tag("load")],
    Discriminator(step_kind_of),
]


class Trigger(Strict):
    """When a streaming pipeline closes a micro-batch: at `max_rows` messages or after `max_wait_s`
    with at least one, whichever comes first."""

    max_rows: int = Field(default=10_000, ge=1, le=5_000_000)
    max_wait_s: float = Field(default=1.0, gt=0, le=3600)


class Param(Strict):
    default: Any = None
    type: Literal["string", "int", "float", "date", "bool"] = "string"
    description: str | None = None


class Pipeline(Strict):
    name: str = Field(pattern=IDENT)
    description: str | None = None
    params: dict[str, Param | str | int | float | bool | None] = Field(default_factory=dict)
    retry: RetryPolicy | None = None
    after: list[str] = Field(
        default_factory=list, description="pipelines whose successful publish runs this one"
    )
    tags: list[str] = Field(default_factory=list, description="labels for selection: --select tag:NAME")
    ephemeral: bool = Field(
        default=False,
        description="publish nothing: the pipelines that ref this one inline its query instead",
    )
    concurrency: int | None = Field(
        default=None, ge=1, description="at most this many runs of this pipeline at once"
    )
    mode: Literal["batch", "streaming"] = Field(
        default="batch", description="streaming: run the steps per micro-batch of a stream source"
    )
    trigger: Trigger | None = Field(default=None, description="streaming only: when a micro-batch closes")
    on_check_failure: Literal["stop", "quarantine"] = Field(
        default="stop",
        description="streaming only: stop the stream, or publish a failing batch to <table>__quarantine",
    )
    steps: list[Step] = Field(min_length=1)

    @field_validator("params", mode="after")
    @classmethod
    def _normalise_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {k: v if isinstance(v, Param) else Param(default=v) for k, v in value.items()}

    def step(self, step_id: str) -> StepBase:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def canonical_json(self) -> str:
        return json.dumps(
            self.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":")
        )

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def json_schema() -> dict[str, Any]:
    schema = Pipeline.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "QueryForge pipeline"
    return schema
