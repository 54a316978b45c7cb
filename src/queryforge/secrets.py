"""Secret values are referenced (`${env:NAME}`), resolved late, and scrubbed from everything we print.

Every value resolved from a connection's options or URL password is remembered here for the life
of the process; `scrub` replaces each with `***` in messages, logs and `--json` output. Passwords
inside URLs are masked too, whether or not we resolved them.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_known: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)", re.IGNORECASE)
_MIN_LENGTH = 4  # shorter values would mask ordinary words


def remember(value: Any) -> None:
    """Mark a resolved value as secret so `scrub` hides it from now on."""
    if isinstance(value, str) and len(value) >= _MIN_LENGTH:
        _known.add(value)


def scrub(text: str) -> str:
    """`text` with every remembered secret and every URL password replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def scrub_data(data: Any) -> Any:
    """`scrub` applied to every string inside nested lists and dicts (for JSON output)."""
    if isinstance(data, str):
        return scrub(data)
    if isinstance(data, dict):
        return {k: scrub_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [scrub_data(v) for v in data]
    return data
