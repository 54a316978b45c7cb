"""Classify a failed attempt and, where a rule knows the fix, patch the pipeline.

A failed error-severity check is the data telling the truth: it is never "repaired" (no check
is weakened or dropped, no rows are filtered away). Permission problems and missing source data
stop at once with guidance. Everything else gets the nearest catalog name, a cast, or a date
parse -- and is then validated and rehearsed again by the caller.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import FailureClass, QueryForgeError
from .context import PlannerContext

UNRECOVERABLE = {FailureClass.PERMISSION_DENIED, FailureClass.CHECK_FAILED, FailureClass.QUOTA_EXCEEDED}


@dataclass(frozen=True)
class Failure:
    """What went wrong in one attempt, in the words a planner needs."""

    kind: str  # missing_column | missing_file | missing_table | type_mismatch | sql_syntax | check_failed |
    #            permission | unsafe_sql | timeout | other
    failure_class: str
    message: str
    hint: str | None = None

    @property
    def recoverable(self) -> bool:
        return self.kind not in (
            "check_failed",
            "permission",
            "missing_file",  # missing source data: a person must provide it
            "unsafe_sql",
        ) and self.failure_class not in {c.value for c in UNRECOVERABLE}


def classify(error: QueryForgeError, *, unsafe: bool = False) -> Failure:
    text = error.message
    low = text.lower()
    if unsafe:
        kind = "unsafe_sql"
    elif error.failure_class == FailureClass.CHECK_FAILED:
        kind = "check_failed"
    elif error.failure_class == FailureClass.PERMISSION_DENIED:
        kind = "permission"
    elif "no file matches" in low or ("does not exist" in low and ("file" in low or "table" in low)):
        kind = "missing_file" if "file" in low else "missing_table"
    elif "unknown column" in low or "referenced column" in low or "not found in from clause" in low:
        kind = "missing_column"
    elif (
        "no function matches" in low
        or "conversion" in low
        or "could not convert" in low
        or "cannot compare" in low
        or ("type" in low and "mismatch" in low)
    ):
        kind = "type_mismatch"
    elif "parse" in low or "syntax" in low:
        kind = "sql_syntax"
    elif error.failure_class == FailureClass.TIMEOUT:
        kind = "timeout"
    else:
        kind = "other"
    return Failure(kind=kind, failure_class=error.failure_class.value, message=text, hint=error.hint)


def _replace_in_strings(obj: Any, old: str, new: str) -> Any:
    pattern = re.compile(rf"(?<![\w.]){re.escape(old)}(?!\w)")
    if isinstance(obj, str):
        return pattern.sub(new, obj)
    if isinstance(obj, list):
        return [_replace_in_strings(v, old, new) for v in obj]
    if isinstance(obj, dict):
        return {
            (_replace_in_strings(k, old, new) if isinstance(k, str) else k): _replace_in_strings(v, old, new)
            for k, v in obj.items()
        }
    return obj


class RulesRepairer:
    """Deterministic fixes for the failures a rule can understand."""

    def repair(
        self, pipeline: dict[str, Any], failure: Failure, ctx: PlannerContext
    ) -> tuple[dict[str, Any], str] | None:
        if not failure.recoverable:
            return None
        fix = getattr(self, f"fix_{failure.kind}", None)
        return fix(copy.deepcopy(pipeline), failure, ctx) if fix else None

    def fix_missing_column(
        self, pipeline: dict[str, Any], failure: Failure, ctx: PlannerContext
    ) -> tuple[dict[str, Any], str] | None:
        bad = re.search(
            r"unknown column '([^']+)'|referenced column \"?([^\" ]+)\"? not found", failure.message, re.I
        )
        near = re.search(r"did you mean '([^']+)'", failure.hint or "") or re.search(
            r'candidate bindings: "?(?:[\w]+\.)?"?([\w]+)', failure.message, re.I
        )
        if not bad or not near:
            return None
        old = bad.group(1) or bad.group(2)
        new = near.group(1)
        if old == new:
            return None
        return _replace_in_strings(
            pipeline, old, new
        ), f"replaced unknown column '{old}' with '{new}' (nearest name)"

    def fix_type_mismatch(
        self, pipeline: dict[str, Any], failure: Failure, ctx: PlannerContext
    ) -> tuple[dict[str, Any], str] | None:
        fn = re.search(
            r"(year|month|day|date_trunc|date_part|extract)\(([^)]*)VARCHAR", failure.message, re.I
        )
        if not fn:
            return None
        text = json.dumps(pipeline)
        patched = re.sub(r"\b(year|month|day)\(\s*\"?(\w+)\"?\s*\)", r"\1(TRY_CAST(\2 AS DATE))", text)
        patched = re.sub(
            r"date_trunc\('(\w+)',\s*\"?(\w+)\"?\)", r"date_trunc('\1', TRY_CAST(\2 AS DATE))", patched
        )
        if patched == text:
            return None
        return json.loads(patched), "parsed a text column as a date (TRY_CAST ... AS DATE)"
