"""Database driver errors, mapped to our failure classes (the retry policy keys on them).

Each driver reports failures its own way: PostgreSQL by SQLSTATE, MySQL/MariaDB by error number,
connectorx and ADBC as text that carries one of those. The tables below are the whole mapping;
anything unknown is INTERNAL, so a new kind of failure is seen, not silently retried.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from ..errors import (
    ConfigError,
    PermissionDenied,
    QueryForgeError,
    QueryTimeout,
    TerminalError,
    TransientError,
    UserError,
)
from ..secrets import scrub

ErrorType = type[QueryForgeError]

# SQLSTATE class (first two characters) or full code -> error type; full codes win.
POSTGRES_STATES: dict[str, ErrorType] = {
    "08": TransientError,  # connection exception
    "40": TransientError,  # serialization failure, deadlock
    "53": TransientError,  # insufficient resources (too many connections, disk full)
    "57P01": TransientError,  # admin shutdown
    "57P02": TransientError,  # crash shutdown
    "57P03": TransientError,  # cannot connect now (starting up)
    "55P03": TransientError,  # lock not available (lock_timeout)
    "57014": QueryTimeout,  # query canceled: statement_timeout
    "28": PermissionDenied,  # invalid authorization: wrong password, unknown role
    "42501": PermissionDenied,  # insufficient privilege
    "25006": PermissionDenied,  # read-only transaction
    "42": UserError,  # syntax error or access rule violation: unknown table/column/function
    "0A": UserError,  # feature not supported, e.g. a data-modifying WITH inside a query
    "3D": UserError,  # database does not exist
    "3F": UserError,  # schema does not exist
    "22": UserError,  # data exception: bad cast, overflow
    "23": UserError,  # integrity constraint violation
    "2B": UserError,  # dependent objects still exist: a view or foreign key needs the table dropped
}

# MySQL / MariaDB error numbers.
MYSQL_CODES: dict[int, ErrorType] = {
    1040: TransientError,  # too many connections
    1205: TransientError,  # lock wait timeout
    1213: TransientError,  # deadlock
    2002: TransientError,  # cannot connect through socket
    2003: TransientError,  # cannot connect to server
    2006: TransientError,  # server has gone away
    2013: TransientError,  # lost connection during query
    1969: QueryTimeout,  # MariaDB max_statement_time exceeded
    3024: QueryTimeout,  # MySQL max_execution_time exceeded
    1044: PermissionDenied,  # access denied to database
    1045: PermissionDenied,  # access denied (wrong user or password)
    1142: PermissionDenied,  # command denied on table
    1143: PermissionDenied,  # command denied on column
    1227: PermissionDenied,  # needs a privilege
    1792: PermissionDenied,  # statement not allowed in a READ ONLY transaction
    1049: UserError,  # unknown database
    1054: UserError,  # unknown column
    1064: UserError,  # syntax error
    1146: UserError,  # table does not exist
    1305: UserError,  # FUNCTION / PROCEDURE does not exist
    1062: UserError,  # duplicate entry
    1451: UserError,  # a foreign key of another table references the row (or table)
    1452: UserError,  # a foreign key's parent row is missing
    1264: UserError,  # out of range value
    1366: UserError,  # incorrect value for column
    1292: UserError,  # incorrect datetime value
    3948: PermissionDenied,  # LOAD DATA LOCAL disabled on the server
    4166: PermissionDenied,  # MariaDB: LOAD DATA LOCAL disabled
}

HINTS: dict[ErrorType, str] = {
    TransientError: (
        "the database may be down or busy; reads and staging were retried as the step's retry "
        "policy says, so run the pipeline again later"
    ),
    QueryTimeout: "narrow the query, or raise the connection's statement_timeout_ms",
    PermissionDenied: "check the user, the password (${env:...}) and the role's privileges",
    UserError: "check table and column names with 'queryforge catalog CONNECTION'",
    ConfigError: (
        "the connection URL in queryforge.yaml cannot be parsed; URL-quote special characters of the "
        "user and password (/ as %2F, # as %23, ? as %3F, @ as %40, : as %3A)"
    ),
}

_CONNECT_TEXT = re.compile(
    r"connection refused|could not connect|connection reset|server closed the connection|"
    r"timeout expired|no route to host|name or service not known|could not translate host name|"
    r"can't connect|broken pipe|os error 111|connection to server .* failed|the connection is closed|"
    r"terminating connection due to administrator command|the database system is (starting up|shutting down)",
    re.IGNORECASE,
)
# Failures ADBC reports without their SQLSTATE (raised while a result streams): the server's words.
POSTGRES_TEXT_STATES: dict[str, str] = {
    "canceling statement due to statement timeout": "57014",
    "canceling statement due to lock timeout": "55P03",
    "in a read-only transaction": "25006",
    "division by zero": "22012",
    "out of range": "22003",
    "invalid input syntax": "22P02",
    "large object": "42704",  # `large object 123 does not exist` (lo_get, lo_export, loread)
}
# libpq could not parse the connection URL (a password with unquoted '/', '#', '?' splits it).
_BAD_URL_TEXT = re.compile(
    r"missing key/value separator|invalid URI query parameter|invalid (port number|integer value)|"
    r"invalid percent-encoded token|invalid connection option|unexpected spaces found|servname not supported",
    re.IGNORECASE,
)
_AUTH_TEXT = re.compile(r"password authentication failed|role \".*\" does not exist|access denied", re.I)
_MYSQL_CODE = re.compile(r"\b(?:ERROR|error code:?|\()\s*(\d{4})\b", re.IGNORECASE)
_CX_ERROR = re.compile(r"ERROR (\d{4}) \([0-9A-Z]{5}\): (.*?) \}", re.DOTALL)
_SQLSTATE = re.compile(r"SQLSTATE[:\s]*\[?([0-9A-Z]{5})\]?|\bsqlstate:?\s*([0-9A-Z]{5})", re.IGNORECASE)


def postgres_class(sqlstate: str | None, text: str) -> ErrorType:
    if not sqlstate:
        sqlstate = next((state for words, state in POSTGRES_TEXT_STATES.items() if words in text), None)
    if sqlstate:
        found = POSTGRES_STATES.get(sqlstate) or POSTGRES_STATES.get(sqlstate[:2])
        if found is not None:
            return found
    if _BAD_URL_TEXT.search(text):
        return ConfigError
    if _AUTH_TEXT.search(text):
        return PermissionDenied
    if re.search(r"database \".*\" does not exist", text):
        return UserError
    if _CONNECT_TEXT.search(text):
        return TransientError
    return TerminalError


def mysql_class(code: int | None, text: str) -> ErrorType:
    if code is not None and code in MYSQL_CODES:
        return MYSQL_CODES[code]
    if _AUTH_TEXT.search(text):
        return PermissionDenied
    if _CONNECT_TEXT.search(text):
        return TransientError
    return TerminalError


def _first_line(exc: BaseException) -> str:
    """The server's own words: after libpq's `ERROR:` prefix, without the driver's preamble."""
    text = str(exc).strip() or type(exc).__name__
    if "ERROR:" in text:
        text = text.rsplit("ERROR:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else text


def build(cls: ErrorType, connection: str, system: str, detail: str) -> QueryForgeError:
    message = scrub(f"Connection '{connection}' ({system}) failed: {detail}")
    error = cls(message, hint=HINTS.get(cls))
    return error


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state and state != "00000":
        return state
    match = _SQLSTATE.search(str(exc))
    return (match.group(1) or match.group(2)) if match else None


def _mysql_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    match = _MYSQL_CODE.search(str(exc))
    return int(match.group(1)) if match else None


@contextmanager
def map_postgres_error(connection: str) -> Iterator[None]:
    """Turn psycopg and ADBC errors into QueryForge errors naming the connection."""
    try:
        yield
    except QueryForgeError:
        raise
    except Exception as exc:
        if not _is_driver_error(exc):
            raise
        detail = _first_line(exc).removeprefix("connection failed: ")
        raise build(postgres_class(_sqlstate(exc), str(exc)), connection, "PostgreSQL", detail) from None


@contextmanager
def map_mysql_error(connection: str) -> Iterator[None]:
    """Turn PyMySQL and connectorx errors (including connectorx's panics) into QueryForge errors."""
    try:
        yield
    except QueryForgeError:
        raise
    except BaseException as exc:
        if not _is_driver_error(exc):
            raise
        code = _mysql_code(exc)
        detail = _first_line(exc)
        if code is not None and isinstance(getattr(exc, "args", (None,))[0], int) and len(exc.args) > 1:
            detail = f"({code}) {exc.args[1]}"
        elif found := _CX_ERROR.search(str(exc)):  # connectorx: `... MySqlError { ERROR 1146 (42S02): text }`
            detail = f"({found.group(1)}) {found.group(2)}"
        raise build(mysql_class(code, str(exc)), connection, "MySQL", detail) from None


def _is_driver_error(exc: BaseException) -> bool:
    """Errors raised by the database libraries (not our own bugs, which keep their traceback)."""
    module = type(exc).__module__ or ""
    return (
        module.startswith(("psycopg", "adbc_driver", "pymysql", "connectorx"))
        or (
            isinstance(exc, OSError | RuntimeError)
            and not isinstance(exc, NotImplementedError | RecursionError)
        )
        # ADBC's PostgreSQL driver fails a streaming read with a plain Arrow error carrying libpq's text
        or (isinstance(exc, pa.ArrowException) and "[libpq]" in str(exc))
        # connectorx panics (a BaseException) when the server fails a query while it streams
        or type(exc).__name__ == "PanicException"
    )
