"""What every planner provider hands back: a draft with its reading, or a question.

The contract is the same for the offline rules planner and an LLM: a `Draft` carries the pipeline,
the planner's reading of the request in plain words and the words it did not use; a request it
cannot fully account for raises `PlannerQuestion` (status `needs_input`), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


@dataclass
class Draft:
    pipeline: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    reading: str | None = None  # "orders.csv → rows where status is not 'cancelled' → new table x"
    unused: list[str] = field(default_factory=list)  # words of the request the reading did not use


class PlannerQuestion(UserError):
    """The planner needs an answer before it drafts anything (`status: needs_input`).

    `candidates` lists the interpretations it considered, so that a person (or a script) can
    answer by rephrasing with one of them.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        where: str | None = None,
        candidates: list[str] | None = None,
        refusal: bool = False,
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.candidates = list(candidates or [])
        self.refusal = refusal
