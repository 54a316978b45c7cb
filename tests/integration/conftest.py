"""Metadata-store fixtures, parametrised over SQLite and a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queryforge.store import Repo, Store
from tests.integration.roles import mariadb_least_privilege, pg_least_privilege
from tests.services import postgres_database

__all__ = ["mariadb_least_privilege", "pg_least_privilege"]  # session fixtures: least-privilege roles


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta' / 'queryforge.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as migrated:
        migrated.migrate()
        yield migrated


@pytest.fixture
def repo(store: Store) -> Repo:
    return store.repo("default", user="alice")
