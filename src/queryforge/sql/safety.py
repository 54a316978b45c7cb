"""The SQL safety policy: decide on the sqlglot AST whether a piece of SQL may run.

No regex gatekeeping: the text is parsed in the canonical dialect and the tree is inspected.
Blocked: more than one statement, anything but a query (DDL, DML, COPY, ATTACH, SET, PRAGMA,
INSTALL/LOAD -- which sqlglot parses as commands), system catalogs, functions that read files
or the network or the environment, and queries nested deeper than the caps. Ad-hoc previews
without aggregation get a default LIMIT (a rewrite). This module imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

DIALECT = "duckdb"
MAX_JOINS = 5
MAX_SUBQUERY_DEPTH = 3
DEFAULT_PREVIEW_LIMIT = 1000

SYSTEM_SCHEMAS = {
    "information_schema",
    "pg_catalog",
    "pg_toast",
    "sys",
    "mysql",
    "performance_schema",
    "sqlite_master",
    "sqlite_schema",
    "sqlite_temp_master",
    "temp",
    "system",
}
SYSTEM_PREFIXES = ("pg_", "sqlite_", "duckdb_", "pragma_", "information_schema")
DANGEROUS_FUNCTIONS = {
    # files and network
    "read_csv",
    "read_csv_auto",
    "read_parquet",
    "parquet_scan",
    "read_json",
    "read_json_auto",
    "read_json_objects",
    "read_ndjson",
    "read_ndjson_auto",
    "read_ndjson_objects",
    "read_text",
    "read_blob",
    "read_xlsx",
    "sniff_csv",
    "glob",
    "parquet_metadata",
    "parquet_schema",
    "parquet_file_metadata",
    "parquet_kv_metadata",
    "iceberg_scan",
    "delta_scan",
    "sqlite_scan",
    "sqlite_attach",
    "postgres_scan",
    "postgres_attach",
    "mysql_scan",
    "st_read",
    "http_get",
    "http_post",
    "query_table",
    "query",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "lo_import",
    "lo_export",
    "load_file",
    "dblink",
    "copy_from",
    "pg_sleep",
    "sleep",
    # environment and settings
    "getenv",
    "current_setting",
    "set_config",
    "duckdb_settings",
    "duckdb_secrets",
    "which_secret",
    "duckdb_extensions",
    "duckdb_databases",
    "duckdb_tables",
    "duckdb_columns",
    "duckdb_functions",
    "pragma_table_info",
    "pragma_database_list",
    "pragma_storage_info",
    "pragma_version",
    "sqlite_version",
    "version",
    "current_version",
    "pg_backend_pid",
    "txid_current",
    "system",
}
BLOCKED_NODES: tuple[type[exp.Expr], ...] = (
    exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
    exp.Copy, exp.Set, exp.Pragma, exp.Transaction, exp.Commit, exp.Rollback, exp.Grant, exp.Use,
    exp.Attach, exp.Detach, exp.Install, exp.LoadData, exp.TruncateTable, exp.Describe, exp.Into,
)  # fmt: skip


class UnsafeSql(ValueError):
    """Blocked by the policy; the message says why in words a person understands."""


@dataclass
class Verdict:
    """What the policy decided: the (possibly rewritten) SQL and the reasons for any rewrite."""

    sql: str
    decision: str  # "allow" | "rewrite"
    reasons: list[str] = field(default_factory=list)


def _name_of(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return (node.sql_name() if hasattr(node, "sql_name") else node.key).lower()


def _depth(node: exp.Expr) -> int:
    """How many queries enclose this node (the outer query counts 0)."""
    depth = 0
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Subquery | exp.Exists | exp.CTE) or (
            isinstance(parent, exp.Query) and isinstance(parent.parent, exp.In | exp.Any | exp.All)
        ):
            depth += 1
        parent = parent.parent
    return depth


def check_query(sql: str, *, allowed_tables: set[str] | None = None) -> exp.Query:
    """Parse and vet one read-only query; raises UnsafeSql with the reason."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise UnsafeSql(f"the SQL does not parse: {first.get('description', exc)}") from None
    except Exception as exc:  # the tokenizer raises other errors on garbage; it is still a no
        raise UnsafeSql(f"the SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise UnsafeSql(f"exactly one statement is allowed, found {len(statements)}")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise UnsafeSql(f"only SELECT queries are allowed, found {statement.key.upper()}")
    for node in statement.walk():
        if isinstance(node, BLOCKED_NODES):
            raise UnsafeSql(f"{node.key.upper()} is not allowed inside a query")
        if isinstance(node, exp.Func):
            name = _name_of(node)
            if name in DANGEROUS_FUNCTIONS or name.startswith(SYSTEM_PREFIXES):
                raise UnsafeSql(
                    f"function {name}() is not allowed: it reads files, the network or system state"
                )
        if isinstance(node, exp.Table):
            _check_table(node, allowed_tables)
    ctes = {c.alias_or_name.lower() for c in statement.find_all(exp.CTE)}
    if allowed_tables is not None:
        for table in statement.find_all(exp.Table):
            if (
                isinstance(table.this, exp.Identifier)
                and table.name.lower() not in ctes
                and table.name.lower() not in allowed_tables
            ):
                raise UnsafeSql(f"unknown table {table.name!r}")
    joins = len(list(statement.find_all(exp.Join)))
    if joins > MAX_JOINS:
        raise UnsafeSql(f"the query joins {joins} tables; at most {MAX_JOINS} joins are allowed")
    deepest = max((_depth(q) for q in statement.find_all(exp.Query)), default=0)
    if deepest > MAX_SUBQUERY_DEPTH:
        raise UnsafeSql(
            f"subqueries are nested {deepest} deep; at most {MAX_SUBQUERY_DEPTH} levels are allowed"
        )
    return statement


def _check_table(node: exp.Table, allowed: set[str] | None) -> None:
    if not isinstance(node.this, exp.Identifier):
        # A table function or a string path ("SELECT * FROM 'file.csv'") reads outside the catalog.
        what = node.this.sql(DIALECT) if node.this is not None else "?"
        raise UnsafeSql(f"reading {what} directly is not allowed; name a table or a pipeline step")
    names = [p.lower() for p in (node.catalog, node.db, node.name) if p]
    for part in names:
        if part in SYSTEM_SCHEMAS or part.startswith(SYSTEM_PREFIXES):
            raise UnsafeSql(f"system catalog {'.'.join(names)} is not allowed")
    if "/" in node.name or "\\" in node.name or "." in node.name:
        raise UnsafeSql(f"table name {node.name!r} looks like a path")


def vet_preview(
    sql: str, *, allowed_tables: set[str] | None = None, limit: int = DEFAULT_PREVIEW_LIMIT
) -> Verdict:
    """An ad-hoc query: vetted, and capped with a LIMIT when it is a plain (non-aggregated) listing."""
    query = check_query(sql, allowed_tables=allowed_tables)
    aggregated = isinstance(query, exp.Select) and (
        query.args.get("group") is not None
        or any(isinstance(e.unalias(), exp.AggFunc) for e in query.expressions)
    )
    if not aggregated and query.args.get("limit") is None:
        capped = (
            query.limit(limit)
            if isinstance(query, exp.Select)
            else exp.select(exp.Star()).from_(query.subquery("listing")).limit(limit)
        )
        return Verdict(
            sql=capped.sql(DIALECT),
            decision="rewrite",
            reasons=[f"added LIMIT {limit} to an ad-hoc listing"],
        )
    return Verdict(sql=query.sql(DIALECT), decision="allow")


def check_expression(text: str) -> None:
    """A step's expression (filter, derive, measure): the same rules, applied to SELECT <expr>."""
    check_query(f"SELECT {text}")
