"""Connectors, one module per kind of data system; importing this package registers the built-ins."""

from . import duckdb, files, http, mysql, nats, postgres, rate, redis_streams, sqlite  # noqa: F401 -- registration by import
from .base import ConnectionConfig, Connector, StagedLoad, TargetRef, connector_for

__all__ = ["ConnectionConfig", "Connector", "StagedLoad", "TargetRef", "connector_for"]
