"""Parse user SQL in the canonical dialect (DuckDB's) into sqlglot expressions.

Everything a step compiles to is a sqlglot expression in this dialect; engines transpile it.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

DIALECT = "duckdb"


class SqlProblem(ValueError):
    """Raised with a message fit for a person; callers add the location."""


def parse_select(sql: str) -> exp.Query:
    """Exactly one read-only query (SELECT / UNION / WITH ... SELECT), or SqlProblem."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        raise SqlProblem(f"SQL does not parse{where}: {first.get('description', str(exc))}") from None
    if len(statements) != 1:
        raise SqlProblem(f"expected exactly one SELECT statement, found {len(statements)} statements")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise SqlProblem(f"only a SELECT is allowed here, found {statement.key.upper()}")
    return statement


def parse_expression(text: str) -> exp.Expr:
    """One scalar/boolean expression such as `amount > 100 AND status = 'shipped'`."""
    try:
        expression = sqlglot.parse_one(text, read=DIALECT, into=exp.Condition)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise SqlProblem(
            f"expression {text!r} does not parse: {first.get('description', str(exc))}"
        ) from None
    if expression is None or isinstance(expression, exp.Query | exp.Command):
        raise SqlProblem(f"{text!r} is not an expression")
    return expression


def parse_type(text: str) -> exp.DataType:
    try:
        return exp.DataType.build(text, dialect=DIALECT)
    except (ParseError, ValueError):
        raise SqlProblem(f"unknown SQL type {text!r}") from None


def table_references(query: exp.Expr) -> list[str]:
    """Names of the tables a query reads, leaving out its own CTE names."""
    ctes = {c.alias_or_name for c in query.find_all(exp.CTE)}
    names: list[str] = []
    for table in query.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier) and table.name not in ctes and table.name not in names:
            names.append(table.name)
    return names


def column_names(expression: exp.Expr) -> list[str]:
    """Unqualified or qualified column names an expression refers to."""
    return [c.name for c in expression.find_all(exp.Column) if c.name and not isinstance(c.this, exp.Star)]


def ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def table(name: str, schema: str | None = None, catalog: str | None = None) -> exp.Table:
    return exp.Table(
        this=ident(name),
        db=ident(schema) if schema else None,
        catalog=ident(catalog) if catalog else None,
    )


def to_sql(expression: exp.Expr, dialect: str = DIALECT) -> str:
    return expression.sql(dialect=dialect)
