"""Engines execute the relational work of a run; importing this package registers the built-ins."""

from . import duckdb, spark  # noqa: F401 -- registration by import (PySpark loads on first use)
from .base import Engine, EngineSession, get_engine

__all__ = ["Engine", "EngineSession", "get_engine"]
