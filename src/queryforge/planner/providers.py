"""Planner providers by name: `rules` (offline default); LLM providers register the same way."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, did_you_mean
from .llm import LLM_PROVIDERS
from .rules import RulesPlanner

PROVIDERS: dict[str, Callable[[], Any]] = {"rules": RulesPlanner, **LLM_PROVIDERS}


def get_provider(name: str | None = None) -> Any:
    """The provider named, or QUERYFORGE_LLM, or `rules`."""
    chosen = (name or os.environ.get("QUERYFORGE_LLM") or "rules").lower()
    factory = PROVIDERS.get(chosen)
    if factory is None:
        raise ConfigError(f"Unknown planner provider '{chosen}'", hint=did_you_mean(chosen, PROVIDERS))
    return factory()
