"""Engines execute the relational work of a run; importing this package registers the built-ins."""

from . import duckdb  # noqa: F401 -- registration by import
from .base import Engine, EngineSession, get_engine

__all__ = ["Engine", "EngineSession", "get_engine"]
