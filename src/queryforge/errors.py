"""One root error with failure classes, so retry and exit codes come from the exception type.

Every error a person can cause (bad YAML, unknown column, unsafe SQL) is a `UserError`: it renders
as one paragraph -- what, where, hint -- and maps to exit code 2. Data-check failures exit 1;
anything else is ours (exit 3+).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from rapidfuzz import process


class FailureClass(StrEnum):
    TRANSIENT = "TRANSIENT"
    TIMEOUT = "TIMEOUT"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    CHECK_FAILED = "CHECK_FAILED"
    MALFORMED_RESPONSE = "MALFORMED_RESPONSE"
    INTERNAL = "INTERNAL"


class QueryForgeError(Exception):
    """Root of all our errors: a message, where it happened, and a hint to fix it."""

    failure_class: FailureClass = FailureClass.INTERNAL
    exit_code: int = 3

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = self.message
        if self.where:
            text = f"{text} ({self.where})"
        if self.hint:
            text = f"{text}. Hint: {self.hint}" if not text.endswith(".") else f"{text} Hint: {self.hint}"
        return text


class TransientError(QueryForgeError):
    """May succeed when tried again (connection reset, lock held by another process)."""

    failure_class = FailureClass.TRANSIENT
    exit_code = 3


class QueryTimeout(TransientError):
    """A statement or request ran past its time limit."""

    failure_class = FailureClass.TIMEOUT


class TerminalError(QueryForgeError):
    """Trying again cannot help."""


class UserError(TerminalError):
    """Something the person wrote or asked for is wrong; exit code 2."""

    failure_class = FailureClass.VALIDATION_FAILED
    exit_code = 2


class SpecError(UserError):
    """The pipeline text is invalid (YAML, fields, DAG, SQL, columns)."""


class ConfigError(UserError):
    """queryforge.yaml or a setting is invalid."""


class NotFoundError(UserError):
    """A named thing (file, run, pipeline, table, connection) does not exist."""


class PermissionDenied(UserError):
    """A write to a read-only connection, or a target we cannot write."""

    failure_class = FailureClass.PERMISSION_DENIED


class StepFailed(UserError):
    """A step failed while running because of its input or its spec (cast error, missing file)."""


class ChecksFailed(TerminalError):
    """An error-severity data check failed: the data told the truth, nothing was published."""

    failure_class = FailureClass.CHECK_FAILED
    exit_code = 1


class ProductionChanged(UserError):
    """`commit` refuses: the production target changed since the sandbox run staged its data."""


class QuotaExceeded(UserError):
    """A cost cap or budget of ours stops the work; narrower scope helps, retrying does not."""

    failure_class = FailureClass.QUOTA_EXCEEDED


class QueryBlocked(UserError):
    """The SQL safety policy refused a query."""


class InternalError(TerminalError):
    """A bug of ours."""


class RunCancelled(TerminalError):
    """Somebody cancelled the run; it stopped between steps and production was not touched."""

    exit_code = 1


def suggest(value: str, options: Iterable[str], cutoff: float = 60.0) -> str | None:
    """The closest option to a misspelled name, or None when nothing is close."""
    choices = list(options)
    if not choices:
        return None
    match = process.extractOne(value, choices, score_cutoff=cutoff)
    return match[0] if match else None


def did_you_mean(value: str, options: Iterable[str]) -> str | None:
    """A hint that names the nearest option, else lists the valid ones."""
    choices = sorted(set(options))
    near = suggest(value, choices)
    if near is not None:
        return f"did you mean '{near}'?"
    if choices:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        return f"valid names are: {shown}"
    return None
