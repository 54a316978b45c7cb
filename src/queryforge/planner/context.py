"""What the planner may know about a workspace: sources, their columns and types, small domains.

Built from the catalog of the workspace (files under data/, database files there, the
warehouse's tables). `for_prompt()` is the sanitised view that may be sent to an LLM:
identifiers reduced to a safe character set, untrusted text truncated, no raw sample values.
Domains (distinct values of low-cardinality text columns) stay local to the rules provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SAFE_IDENT = re.compile(r"[^A-Za-z0-9_./-]")
MAX_NAME = 64


@dataclass(frozen=True)
class Source:
    """A readable thing: a file (path relative to the workspace) or a table of a connection."""

    name: str  # what a person calls it: 'orders.csv', 'orders', 'legacy.accounts'
    kind: str  # 'file' | 'table'
    columns: tuple[tuple[str, str], ...]
    path: str | None = None
    connection: str | None = None
    table: str | None = None
    rows: int | None = None
    domains: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def type_of(self, column: str) -> str:
        for c, t in self.columns:
            if c.lower() == column.lower():
                return t.upper()
        return ""

    @property
    def stem(self) -> str:
        base = (self.table or self.name).rsplit("/", 1)[-1]
        return base.split(".", 1)[0]

    def extract_spec(self) -> dict[str, Any]:
        if self.path is not None:  # a data file, or a table inside a database file
            return {"path": self.path, "table": self.table} if self.table else {"path": self.path}
        return {"connection": self.connection, "table": self.table}


@dataclass(frozen=True)
class PlannerContext:
    sources: tuple[Source, ...]
    target_connection: str
    data_dir: str = "data"

    def files(self) -> list[Source]:
        return [s for s in self.sources if s.kind == "file"]

    def tables(self) -> list[Source]:
        return [s for s in self.sources if s.kind == "table"]

    def for_prompt(self) -> list[dict[str, Any]]:
        """The sanitised catalog for an LLM prompt: names and types only."""
        return [
            {
                "source": clean_identifier(s.name),
                "kind": s.kind,
                "extract": {k: clean_identifier(str(v)) for k, v in s.extract_spec().items()},
                "columns": [[clean_identifier(c), clean_identifier(t)] for c, t in s.columns[:200]],
                "rows": s.rows,
            }
            for s in self.sources
        ]


def clean_identifier(text: str) -> str:
    """Untrusted names (columns, files) reduced to a safe character set and length."""
    return SAFE_IDENT.sub("_", text)[:MAX_NAME]
