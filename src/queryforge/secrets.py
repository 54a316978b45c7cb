"""Secret values are referenced (`${env:NAME}`), resolved late, and scrubbed from everything we print.

Every value resolved from a connection's options or URL password is remembered here for the life
of the process; `scrub` replaces each with `***` in messages, logs and `--json` output. Passwords
inside URLs are masked too, whether or not we resolved them.

A secret is remembered in every form a driver may echo: raw, URL-quoted, URL-unquoted, and each
piece a URL parser cuts it into. A password holding `/`, `#`, `?`, `@` or `:` inside a URL is split
by the parser (the rest becomes the "port", the path or the fragment), and a driver then quotes
that piece alone ("Port could not be cast to integer value as 'LeakyHead77'").
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
_known: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)", re.IGNORECASE)
_MIN_LENGTH = 4  # shorter values would mask ordinary words
_URL_CUTS = re.compile(r"[/#?@:]")  # where a URL parser splits a password that was not quoted
_URL_START = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# user:password@host, the password reaching to the last '@' (an unquoted one may hold '/', '#', '?').
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<pw>.+)@[^@]*", re.IGNORECASE | re.DOTALL)


def remember(value: Any, *, whole: bool = False) -> None:
    """Mark a resolved value as secret so `scrub` hides it from now on, in all its forms.

    `whole=True` remembers only the value as it is: for a string that merely contains a secret
    (a whole substituted URL), whose own pieces (host, port, database) are not secret.
    """
    if not isinstance(value, str):
        return
    forms = {value} if whole else secret_forms(value)
    _known.update(f for f in forms if len(f) >= _MIN_LENGTH)


def secret_forms(value: str) -> set[str]:
    """The secret raw, URL-quoted (both ways), unquoted, and every piece between URL delimiters.

    A whole connection URL (`${env:DATABASE_URL}`) is a secret as a whole and through its password;
    its scheme, host, port and database are not, so they are not cut out and masked everywhere.
    """
    if _URL_START.match(value):
        url = _URL_WITH_PASSWORD.fullmatch(value)
        return {value} | (secret_forms(url.group("pw")) if url else set())
    forms = {value, quote(value), quote(value, safe=""), quote_plus(value), unquote(value)}
    pieces = {piece for form in forms for piece in _URL_CUTS.split(form)}
    return {f for f in forms | pieces if len(f) >= _MIN_LENGTH}


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
