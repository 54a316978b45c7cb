"""SQL text for the parts of the intermediate form (DuckDB dialect, vetted later by the SQL gate)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any


def qident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return quote(str(value))


def bound(value: Any) -> str:
    """A date bound: a date literal or a SQL expression over current_date."""
    return literal(value) if isinstance(value, date | datetime) else str(value)


def shown(value: Any) -> str:
    """A value as a person reads it in the plain-words reading."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)
