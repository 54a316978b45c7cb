"""DuckDB's errors about a bad input file (encoding, line size, gzip), said in one sentence with a fix.

DuckDB reports these with a page of reader settings and, for a long line, the line itself (up to
megabytes); a user needs the file, the line and what to set. Both the CSV sniffer (at compile time)
and the engine (at run time) use this, so validate and run say the same thing.
"""

from __future__ import annotations

import re

import duckdb

_FILE = re.compile(r"^\s*file = (.+?)\s*$", re.M)
_LINE = re.compile(r"CSV Error on Line: (\d+)")
_GZ_PATH = re.compile(r": (\S.*\.gz(?:ip)?)$")
_MAX_LINE = re.compile(r"Maximum line size of (\d+) bytes exceeded")


def input_problem(exc: duckdb.Error, path: str | None = None) -> tuple[str, str] | None:
    """(what is wrong with the file, how to fix it) for an input-file error; None for any other.

    `path` names the file when the caller knows it (DuckDB's gzip errors do not always say).
    """
    text = str(exc)
    named = path or (m.group(1) if (m := _FILE.search(text)) else None)
    file = f"file '{named}'" if named else "the input file"
    line = f" (near line {m.group(1)})" if (m := _LINE.search(text)) else ""
    if "not utf-8 encoded" in text:
        return (
            f"{file} is not valid UTF-8{line}",
            "save the file as UTF-8, or give its encoding on the extract: "
            "options: {encoding: latin-1} (DuckDB reads utf-8, utf-16 and latin-1)",
        )
    if m := _MAX_LINE.search(text):
        return (
            f"a line of {file} is longer than DuckDB's maximum line size of {int(m.group(1)):,} bytes{line}",
            "check that the file is a CSV with one record per line; if such long lines are real, "
            "raise the limit on the extract: options: {max_line_size: 100000000}",
        )
    if line and not isinstance(exc, duckdb.ConversionException):
        # any other malformed row: DuckDB's one-sentence reason, never the (maybe huge) line itself
        reason = next(
            (
                ln.strip()
                for ln in text.splitlines()[1:]
                if ln.strip() and not ln.startswith("Original Line:")
            ),
            "a malformed row",
        )
        return (
            f"{file} has a row DuckDB cannot read{line}: {reason[:200]}",
            "fix that row, or relax the reader on the extract: options: {null_padding: true} (rows with "
            "missing fields) or options: {ignore_errors: true} (skip bad rows)",
        )
    if isinstance(exc, duckdb.IOException) and "gzip" in text.lower():
        detail = text.splitlines()[0].removeprefix("IO Error: ")
        if (m := _GZ_PATH.search(detail)) is not None:
            detail, named = detail[: m.start()], named or m.group(1)
        return (
            f"file '{named}' is not a readable gzip file ({detail})"
            if named
            else f"the input file is not a readable gzip file ({detail})",
            "re-create the file with gzip, or drop the .gz suffix if it is not compressed",
        )
    return None
