"""`${...}` substitution: pipeline params, date macros and environment variables.

Macros: `${today}`, `${yesterday}`, `${now}`, arithmetic such as `${today - 1d}` or
`${today + 2w}` (units d, w, m, y, h), `${env:NAME}` and `${param}`. Substitution runs on
the raw document before validation, so every field may use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from ..errors import SpecError, did_you_mean

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
ARITH = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:([+-])\s*(\d+)\s*([dwmyh]))?\s*$")


def _shift(value: date | datetime, sign: str, amount: int, unit: str) -> date | datetime:
    n = amount if sign == "+" else -amount
    if unit in ("d", "w", "h"):
        delta = {"d": timedelta(days=n), "w": timedelta(weeks=n), "h": timedelta(hours=n)}[unit]
        return value + delta
    months = n * (12 if unit == "y" else 1)
    y, m = divmod(value.month - 1 + months, 12)
    year, month = value.year + y, m + 1
    day = min(
        value.day,
        [
            31,
            29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28,
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ][month - 1],
    )
    return value.replace(year=year, month=month, day=day)


def builtin_values(now: datetime) -> dict[str, Any]:
    today = now.date()
    return {"today": today, "yesterday": today - timedelta(days=1), "now": now.replace(microsecond=0)}


def render_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _as_date(text: Any) -> date | datetime | None:
    if isinstance(text, date):
        return text
    try:
        return (
            datetime.fromisoformat(str(text))
            if " " in str(text) or "T" in str(text)
            else date.fromisoformat(str(text))
        )
    except ValueError:
        return None


def resolve(expr: str, values: Mapping[str, Any], where: str) -> str:
    """Evaluate one placeholder body such as `today - 1d` or `env:TOKEN`."""
    if expr.startswith("env:"):
        name = expr[4:].strip()
        if name not in os.environ:
            raise SpecError(
                f"Environment variable '{name}' is not set",
                where=where,
                hint=f"export {name}=... before running",
            )
        return os.environ[name]
    m = ARITH.match(expr)
    if not m:
        raise SpecError(
            f"Cannot understand placeholder '${{{expr}}}'",
            where=where,
            hint="use ${param}, ${today - 1d} (units d, w, m, y, h) or ${env:NAME}",
        )
    name, sign, amount, unit = m.groups()
    if name not in values:
        raise SpecError(
            f"Unknown parameter '{name}' in '${{{expr}}}'", where=where, hint=did_you_mean(name, values)
        )
    value = values[name]
    if sign:
        base = _as_date(value)
        if base is None:
            raise SpecError(
                f"Parameter '{name}' is not a date, so '${{{expr}}}' cannot shift it", where=where
            )
        return render_value(_shift(base, sign, int(amount), unit))
    return render_value(value)


def substitute(obj: Any, values: Mapping[str, Any], where: str = "pipeline") -> Any:
    """Replace placeholders in every string of a nested structure."""
    if isinstance(obj, str):
        return PLACEHOLDER.sub(lambda m: resolve(m.group(1), values, where), obj)
    if isinstance(obj, list):
        return [substitute(v, values, where) for v in obj]
    if isinstance(obj, dict):
        return {k: substitute(v, values, where) for k, v in obj.items()}
    return obj


def resolve_params(
    declared: Mapping[str, Any],
    given: Mapping[str, Any],
    now: datetime | None = None,
    where: str = "pipeline",
) -> dict[str, Any]:
    """Concrete parameter values: given ones override defaults; defaults may use macros."""
    unknown = set(given) - set(declared)
    if unknown:
        name = sorted(unknown)[0]
        raise SpecError(f"Unknown parameter '{name}'", where=where, hint=did_you_mean(name, declared))
    values: dict[str, Any] = builtin_values(now or datetime.now())
    for name, spec in declared.items():
        default = spec.get("default") if isinstance(spec, dict) else spec
        raw = given.get(name, default)
        if raw is None:
            raise SpecError(f"Parameter '{name}' has no value", where=where, hint=f"pass --param {name}=...")
        value = substitute(raw, values, where) if isinstance(raw, str) else raw
        kind = spec.get("type", "string") if isinstance(spec, dict) else "string"
        values[name] = coerce(name, value, kind, where)
    return values


def coerce(name: str, value: Any, kind: str, where: str) -> Any:
    """A parameter value checked against its declared type (given values arrive as text)."""
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false", "1", "0", "yes", "no"):
                return str(value).lower() in ("true", "1", "yes")
            raise ValueError(value)
        if kind == "date":
            return value if isinstance(value, date) else date.fromisoformat(str(value))
    except (TypeError, ValueError):
        raise SpecError(
            f"Parameter '{name}' must be a {kind}, got {value!r}",
            where=where,
            hint="dates are written YYYY-MM-DD" if kind == "date" else None,
        ) from None
    return value
