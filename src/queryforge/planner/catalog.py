"""Build the planner's context from a workspace: data files, database files, warehouse tables."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path

import duckdb

from ..catalog.cache import CatalogCache, FileProfile, FileProfiles
from ..connectors.base import ConnectionConfig, TargetRef, connector_for
from ..connectors.files import READERS, FilesConnector, describe_file, file_format
from ..connectors.registry import DATABASE_FILES, FILES, ConnectionSet
from ..connectors.sql import SqlConnector
from ..errors import QueryForgeError
from .context import PlannerContext, Source

MAX_DOMAIN = 12  # a text column with at most this many distinct values is a "domain" (status, country)
SAMPLE_BYTES = 50_000_000


def _domains(
    con: duckdb.DuckDBPyConnection, relation: str, columns: list[tuple[str, str]]
) -> dict[str, tuple[str, ...]]:
    """Distinct values of low-cardinality text columns; used locally by the rules provider only."""
    texts = [c for c, t in columns if t.upper().startswith("VARCHAR")]
    if not texts:
        return {}
    counts = con.execute(
        "SELECT " + ", ".join(f'count(DISTINCT "{c}")' for c in texts) + f" FROM {relation}"
    ).fetchall()[0]
    out: dict[str, tuple[str, ...]] = {}
    for column, n in zip(texts, counts or (), strict=False):
        if 0 < n <= MAX_DOMAIN:
            rows = con.execute(
                f'SELECT DISTINCT "{column}" FROM {relation} WHERE "{column}" IS NOT NULL ORDER BY 1'
            ).fetchall()
            out[column] = tuple(str(r[0]) for r in rows)
    return out


def _profile(con: duckdb.DuckDBPyConnection, path: Path) -> FileProfile | None:
    """Columns and low-cardinality value domains of one data file (a sample of a very large one)."""
    kind = file_format(path.name)
    described = describe_file(con, path, kind)
    if described is None:
        return None
    columns = tuple((c.name, c.type) for c in described)
    sample = " USING SAMPLE 100000 ROWS" if path.stat().st_size > SAMPLE_BYTES else ""
    relation = f"(SELECT * FROM {READERS[kind]}('{str(path).replace(chr(39), chr(39) * 2)}'){sample})"
    try:
        domains = _domains(con, relation, list(columns))
    except duckdb.Error:
        domains = {}
    return columns, domains


def file_sources(root: Path, data_dir: str, catalog: CatalogCache | None = None) -> list[Source]:
    """The data files and database files under the data folder; file profiles come from the
    catalog's file cache while a file is unchanged."""
    folder = root / data_dir
    out: list[Source] = []
    if not folder.is_dir():
        return out
    files = FilesConnector(ConnectionConfig(name="data", url=f"file:{data_dir}"), root)
    profiles = FileProfiles(catalog.folder) if catalog is not None else None
    with duckdb.connect() as con:
        for path in files.data_files():
            rel = f"{data_dir}/{path.relative_to(files.folder)}"
            compute = functools.partial(_profile, con, path)
            profile = profiles.get(rel, path, compute) if profiles is not None else compute()
            if profile is not None:
                columns, domains = profile
                out.append(Source(name=rel, kind="file", columns=columns, path=rel, domains=domains))
    if profiles is not None:
        profiles.save()
    for path in sorted(folder.rglob("*")):
        if not path.name.lower().endswith(DATABASE_FILES):
            continue
        rel = str(path.relative_to(root))
        scheme = "duckdb" if path.name.lower().endswith(".duckdb") else "sqlite"
        connector = connector_for(ConnectionConfig(name=f"@{rel}", url=f"{scheme}:{rel}"), root)
        try:
            for table in connector.introspect():
                out.append(
                    Source(
                        name=f"{rel}:{table.qualified}",
                        kind="table",
                        path=rel,
                        table=table.qualified,
                        rows=table.row_estimate,
                        columns=tuple((c.name, c.type) for c in table.columns),
                    )
                )
        except QueryForgeError:
            continue
        finally:
            connector.close()
    return out


def table_sources(connections: ConnectionSet) -> list[Source]:
    out: list[Source] = []
    try:
        connector = connections.get(connections.default_target)
    except QueryForgeError:
        return out
    if not isinstance(connector, SqlConnector):
        return out
    try:
        tables = connector.introspect()
    except Exception:  # an empty or locked warehouse simply has nothing to offer the planner
        return out
    con = getattr(connector, "con", None)
    for table in tables:
        columns = tuple((c.name, c.type) for c in table.columns)
        domains: dict[str, tuple[str, ...]] = {}
        if isinstance(con, duckdb.DuckDBPyConnection):
            try:
                domains = _domains(
                    con,
                    connector.sql(connector.target_expr(TargetRef(connector.name, table.qualified))),
                    list(columns),
                )
            except duckdb.Error:
                domains = {}
        out.append(
            Source(
                name=table.qualified,
                kind="table",
                connection=connections.default_target,
                table=table.qualified,
                rows=table.row_estimate,
                columns=columns,
                domains=domains,
            )
        )
    return out


def connection_sources(connections: ConnectionSet, catalog: CatalogCache | None) -> list[Source]:
    """Tables of the other database connections, from the catalog cache (names and types only).

    A connection that is down or not configured completely offers nothing, and the ask goes on.
    """
    out: list[Source] = []
    for name in connections.configs:
        if name in (FILES, connections.default_target):
            continue
        try:
            connector = connections.get(name)
            if not isinstance(connector, SqlConnector):
                continue
            tables = (
                catalog.get(name, connector.introspect).tables
                if catalog is not None
                else connector.introspect()
            )
        except Exception:  # an unreachable database must not stop the planner
            continue
        out.extend(
            Source(
                name=f"{name}.{table.qualified}",
                kind="table",
                connection=name,
                table=table.qualified,
                rows=table.row_estimate,
                columns=tuple((c.name, c.type) for c in table.columns),
            )
            for table in tables
        )
    return out


# (connection, lower-cased table) -> (the table's description, column -> description)
Descriptions = Mapping[tuple[str, str], tuple[str | None, Mapping[str, str]]]


def build_context(
    connections: ConnectionSet,
    root: Path,
    data_dir: str = "data",
    catalog: CatalogCache | None = None,
    descriptions: Descriptions | None = None,
) -> PlannerContext:
    """The sources a request may read; tables a pipeline of the project publishes carry the
    descriptions its YAML gives them."""
    sources = (
        file_sources(root, data_dir, catalog)
        + table_sources(connections)
        + connection_sources(connections, catalog)
    )
    if descriptions:
        sources = [_described(s, descriptions) for s in sources]
    return PlannerContext(
        sources=tuple(sources), target_connection=connections.default_target, data_dir=data_dir
    )


def _described(source: Source, descriptions: Descriptions) -> Source:
    if source.kind != "table" or source.connection is None or source.table is None:
        return source
    found = descriptions.get((source.connection, source.table.lower()))
    if found is None:
        return source
    about, columns = found
    return dataclasses.replace(source, description=about, column_descriptions=dict(columns))
