"""What starts runs besides a person: idempotency keys, backfill value ranges, `after:` dependencies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, timedelta
from graphlib import CycleError, TopologicalSorter
from typing import Any

from ..errors import SpecError, UserError, did_you_mean

MAX_BACKFILL_VALUES = 10_000


def derived_key(org: str, content_hash: str, params: Mapping[str, Any], mode: str) -> str:
    """The idempotency key of a submission that brought none: the same pipeline version with the
    same parameters in the same org and mode is the same run."""
    text = json.dumps([org, content_hash, dict(params), mode], sort_keys=True, default=str)
    return "auto:" + hashlib.sha256(text.encode()).hexdigest()[:40]


def expand_values(spec: str) -> list[str]:
    """`2026-01-01..2026-01-31` (days), `1..12` (integers) or `a,b,c` as the list of values."""
    if ".." not in spec:
        values = [v.strip() for v in spec.split(",") if v.strip()]
        if not values:
            raise UserError(f"No values in '{spec}'", hint="write day=2026-01-01..2026-01-31 or day=a,b,c")
        return values
    start, _, end = (part.strip() for part in spec.partition(".."))
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
        days = (last - first).days
        values = [(first + timedelta(days=i)).isoformat() for i in range(days + 1)]
    except ValueError:
        try:
            lo, hi = int(start), int(end)
        except ValueError:
            raise UserError(
                f"Cannot read the range '{spec}'",
                hint="a range is two dates (2026-01-01..2026-01-31) or two integers (1..12)",
            ) from None
        values = [str(i) for i in range(lo, hi + 1)]
    if not values:
        raise UserError(f"The range '{spec}' is empty: its end comes before its start")
    if len(values) > MAX_BACKFILL_VALUES:
        raise UserError(f"The range '{spec}' has {len(values)} values; at most {MAX_BACKFILL_VALUES} at once")
    return values


def split_range(params: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """Which --param a backfill ranges over: (name, its values spec, the fixed others)."""
    ranged = [k for k, v in params.items() if ".." in v] or [k for k, v in params.items() if "," in v]
    if len(ranged) != 1:
        raise UserError(
            "A backfill needs exactly one parameter with a range or a list of values",
            hint="write --param day=2026-01-01..2026-01-31 (or day=a,b,c); other --param values stay fixed",
        )
    key = ranged[0]
    return key, params[key], {k: v for k, v in params.items() if k != key}


def check_dependencies(graph: Mapping[str, list[str]]) -> None:
    """Every `after:` names a known pipeline and the pipelines form no cycle (else a SpecError)."""
    for name, upstream in graph.items():
        for other in upstream:
            if other not in graph:
                raise SpecError(
                    f"Pipeline '{name}' runs after '{other}', which is not a pipeline of this workspace",
                    hint=did_you_mean(other, graph) or "check the names under 'after:'",
                )
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise SpecError(
            f"Pipelines depend on each other in a cycle: {cycle}",
            hint="remove one of these names from an 'after:' list",
        ) from None


def downstream(graph: Mapping[str, list[str]], name: str) -> list[str]:
    """Pipelines that run after `name` succeeds."""
    return sorted(other for other, upstream in graph.items() if name in upstream)
