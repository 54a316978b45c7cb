"""Planner providers by name: `rules` (offline default); LLM providers register the same way.

Which provider drafts, first match wins: `--provider`, then `QUERYFORGE_LLM`, then `planner.provider`
in queryforge.yaml, then `rules`. The file's model, base URL, timeout and key reference apply to the
provider the file names (an environment variable still overrides each of them); a provider chosen
by `--provider` or `QUERYFORGE_LLM` that the file does not name does not inherit them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ..config import PlannerConfig
from ..errors import ConfigError, did_you_mean
from .llm import LLM_PROVIDERS
from .rules import RulesPlanner

PROVIDERS: dict[str, Callable[[], Any]] = {"rules": RulesPlanner, **LLM_PROVIDERS}


def get_provider(
    name: str | None = None, *, config: PlannerConfig | None = None, env: Mapping[str, str] | None = None
) -> Any:
    """The provider named, or QUERYFORGE_LLM, or queryforge.yaml's `planner.provider`, or `rules`.

    Raises:
        ConfigError: an unknown provider (with where it was named and the nearest valid name), or
            an LLM provider whose settings are invalid or whose key is missing.
    """
    env = os.environ if env is None else env
    config = config or PlannerConfig()
    in_file = config.provider or None
    if name:
        chosen, where = name.strip().lower(), "--provider"
    elif env.get("QUERYFORGE_LLM"):
        chosen, where = env["QUERYFORGE_LLM"].strip().lower(), "QUERYFORGE_LLM"
    else:
        chosen, where = in_file or "rules", config.where("provider")
    factory = PROVIDERS.get(chosen)
    if factory is None:
        raise ConfigError(
            f"Unknown planner provider '{chosen}'", where=where, hint=did_you_mean(chosen, PROVIDERS)
        )
    llm = LLM_PROVIDERS.get(chosen)
    if llm is not None:
        return llm(env=env, file=config if in_file in (None, chosen) else None)
    return factory()
