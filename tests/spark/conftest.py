"""Spark tests share one local Spark session: they all run on one xdist worker (loadgroup).

Spark is a real part here, not a mock: if Java or PySpark is missing the tests fail and say so,
they are never skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/spark/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.spark)
            item.add_marker(pytest.mark.xdist_group("spark"))


@pytest.fixture(scope="session", autouse=True)
def spark_is_installed() -> Iterator[None]:
    if shutil.which("java") is None:
        pytest.fail("The Spark tests need Java 17+ on PATH (apt-get install openjdk-17-jre-headless)")
    try:
        import pyspark  # noqa: F401,TID251 -- only to tell a missing install from a failure
    except ImportError:
        pytest.fail("The Spark tests need PySpark: make setup (pip install -e '.[dev]') installs it")
    yield
