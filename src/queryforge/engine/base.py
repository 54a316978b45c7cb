"""The engine protocol: what executes the relational work of a run.

Steps arrive as sqlglot expressions in the canonical dialect; an engine transpiles them to its
own SQL. Outputs are named by step id inside the run's work area, so a resume can reuse them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import pyarrow as pa
from sqlglot import exp

from ..errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from ..connectors.base import Connector, ReadRequest, StagedLoad

Schema = list[tuple[str, str]]
CANONICAL_ENGINE = "duckdb"  # steps compile to its dialect; plans are compiled and validated on it
INLINED_STEP = "qf_inlined_step"  # meta flag of a CTE the executor added for a step it did not materialise


class EngineSession(Protocol):
    def create(self, name: str, query: exp.Query, *, table: bool) -> int | None:
        """Create a view or table `name`; returns the row count for tables."""

    def create_from_arrow(self, name: str, data: pa.RecordBatchReader) -> int: ...

    def create_empty(self, name: str, schema: Schema) -> None: ...

    def describe(self, name: str) -> Schema: ...

    def read(self, query: exp.Query) -> pa.RecordBatchReader: ...

    def fetch(self, query: exp.Query) -> tuple[list[str], list[tuple[Any, ...]]]: ...

    def estimate_rows(self, query: exp.Query, *, known: Mapping[str, int] | None = None) -> int:
        """Rows the engine expects to handle at the largest step of `query` (from its plan);
        `known` gives better row counts of some of the views it reads (e.g. file extracts)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class DirectTransfer(Protocol):
    """A session that can move a database's rows itself (Spark through JDBC) instead of as Arrow
    through this process. Either method may decline (None): the executor then takes the Arrow path.
    The connector still owns the SQL of a read, the staging table and the publish."""

    def extract_direct(self, name: str, connector: Connector, request: ReadRequest) -> tuple[int, str] | None:
        """Read what `request` names from `connector` into table `name` of the work area;
        (rows, how it was read, for the step's record), or None."""
        ...

    def stage_direct(
        self, connector: Connector, run_id: str, load: StagedLoad, query: exp.Query
    ) -> str | None:
        """Stage the rows of `query` for `load` in the connector's staging place, as `stage()` would
        (the same StagedLoad filled in); how it was done, or None."""
        ...


class Engine:
    """An engine kind; subclasses register themselves by name."""

    name: ClassVar[str]
    dialect: ClassVar[str]
    work_files: ClassVar[tuple[str, ...]] = ()  # what a run's work area holds (copied by an edited resume)
    registry: ClassVar[dict[str, type[Engine]]] = {}

    def __init__(self, *, max_memory: str | None = None) -> None:
        self.max_memory = max_memory  # the memory ceiling of each session's engine instance

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Engine.registry[cls.name] = cls

    def session(
        self,
        work_dir: Path | None,
        *,
        preserve_order: bool = True,
        allowed_dirs: list[Path] | None = None,
        schemas: Mapping[str, Schema] | None = None,
    ) -> EngineSession:
        """A session over a run's work area; `schemas` are the plan's step schemas (canonical types),
        for engines that must give their outputs exactly those names and types."""
        raise NotImplementedError

    def unsupported(
        self, query: exp.Query, schemas: Mapping[str, Schema], output: Schema | None = None
    ) -> str | None:
        """Why this engine cannot run `query` with the canonical meaning, or None. Plans are
        compiled (and validated) on the canonical engine; this is asked of every step's query,
        with the plan's schemas of the steps it reads and, for a step's own query, its output."""
        return None

    def unsupported_type(self, canonical_type: str) -> str | None:
        """Why this engine cannot hold a column of this canonical type, or None."""
        return None


def get_engine(name: str, *, max_memory: str | None = None) -> Engine:
    cls = Engine.registry.get(name)
    if cls is None:
        raise ConfigError(f"Unknown engine '{name}'", hint=did_you_mean(name, Engine.registry))
    return cls(max_memory=max_memory)
