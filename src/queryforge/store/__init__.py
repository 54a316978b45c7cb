"""Persistence: the metadata tables, their Alembic migrations and org-scoped repositories."""

from queryforge.store.repo import RecordNotFound, Repo, RunRecord, StepRecord, Store

__all__ = ["RecordNotFound", "Repo", "RunRecord", "StepRecord", "Store"]
