"""Parse user SQL in the canonical dialect (DuckDB's) into sqlglot expressions.

Everything a step compiles to is a sqlglot expression in this dialect; engines transpile it.
Every piece of SQL a person, a pipeline or a planner writes enters through `parse_select`,
`parse_expression` or `parse_order`, and each vets the tree against the allow-list of
`policy.py` before anyone can run it: one gate, whatever field the SQL came from. DuckDB's method
calls (`name.lower()`) are rewritten into the calls they mean first (`policy.normalise`), so what
is vetted is what runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from .policy import DIALECT, MAX_SQL_CHARS, SqlProblem, UnsafeSql, normalise, real_tables, vet_tree

__all__ = ["DIALECT", "SqlProblem", "UnsafeSql"]

# sqlglot logs "falling back to parsing as a Command" for statements it does not know; the policy
# refuses those with its own words, so the library's warning must not reach a person's terminal.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


def _parse(sql: str, what: str) -> list[exp.Expr]:
    """sqlglot's statements of `sql`, with every way parsing can fail turned into a SqlProblem."""
    if len(sql) > MAX_SQL_CHARS:
        raise SqlProblem(f"{what} is {len(sql):,} characters long; at most {MAX_SQL_CHARS:,} are allowed")
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        raise SqlProblem(f"{what} does not parse{where}: {first.get('description', str(exc))}") from None
    except RecursionError:
        raise SqlProblem(f"{what} is nested too deeply to read") from None
    except (TokenError, ValueError) as exc:  # the tokenizer raises these on garbage
        raise SqlProblem(f"{what} does not parse: {exc}") from None
    return [normalise(s) for s in statements]


def parse_select(
    sql: str, *, dialect: str = DIALECT, allowed_tables: Iterable[str] | None = None
) -> exp.Query:
    """Exactly one read-only query (SELECT / UNION / WITH ... SELECT / VALUES), vetted, or SqlProblem.

    `dialect` is where the query will run (its function names are checked against that
    dialect's allow-list); `allowed_tables` as in `policy.vet_tree`.
    """
    statements = _parse(sql, "SQL")
    if len(statements) != 1:
        raise SqlProblem(f"expected exactly one SELECT statement, found {len(statements)} statements")
    statement = statements[0]
    if isinstance(statement, exp.Values):
        statement = exp.select(exp.Star()).from_(exp.Subquery(this=statement, alias="v"))
    if not isinstance(statement, exp.Query):
        kind = str(statement.this) if isinstance(statement, exp.Command) else statement.key
        raise UnsafeSql(f"only a SELECT is allowed here, found {kind.upper()}")
    vet_tree(statement, dialect=dialect, allowed_tables=allowed_tables)
    round_trip(statement, dialect, allowed_tables)
    return statement


def round_trip(tree: exp.Expr, dialect: str, allowed_tables: Iterable[str] | None) -> None:
    """Defence in depth: the text that will be sent must itself parse into a tree that passes.

    The parser keeps a few things as raw words that are written back verbatim; whatever a tree
    check missed there becomes visible SQL in the written text, and is vetted here.
    """
    try:
        text = tree.sql(dialect=dialect)
        again = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except Exception as exc:  # sqlglot's generators raise all kinds of errors on odd trees
        raise SqlProblem(f"the SQL cannot be written for {dialect}: {exc}") from None
    if len(again) != 1:
        raise UnsafeSql(f"the SQL written for {dialect} is not one statement")
    vet_tree(again[0], dialect=dialect, allowed_tables=allowed_tables)


def parse_expression(text: str, *, dialect: str = DIALECT) -> exp.Expr:
    """One scalar/boolean expression such as `amount > 100 AND status = 'shipped'`, vetted.

    An expression reads the columns of its step's input and no table: a subquery that names a
    table is refused (join the table in a step instead).
    """
    if len(text) > MAX_SQL_CHARS:
        raise SqlProblem(f"the expression is {len(text):,} characters long")
    try:
        expression = sqlglot.parse_one(text, read=DIALECT, into=exp.Condition)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise SqlProblem(
            f"expression {text[:200]!r} does not parse: {first.get('description', str(exc))}"
        ) from None
    except RecursionError:
        raise SqlProblem("the expression is nested too deeply to read") from None
    except (TokenError, ValueError) as exc:
        raise SqlProblem(f"expression {text[:200]!r} does not parse: {exc}") from None
    if expression is None or isinstance(expression, exp.Query | exp.Command):
        raise SqlProblem(f"{text[:200]!r} is not an expression")
    normalised = normalise(expression)
    vet_tree(normalised, dialect=dialect, allowed_tables=())
    round_trip(exp.select(normalised.copy()), dialect, ())
    return normalised


def parse_order(text: str) -> list[exp.Ordered]:
    """A sort term list such as `amount DESC, name`, vetted like an expression."""
    statements = _parse(f"SELECT 1 ORDER BY {text}", "sort term")
    select = statements[0] if len(statements) == 1 else None
    order = select.args.get("order") if isinstance(select, exp.Select) else None
    if (
        select is None
        or order is None
        or {k for k, v in select.args.items() if v} != {"expressions", "order"}
    ):
        raise SqlProblem(f"sort term {text[:200]!r} is not a list of columns or expressions")
    vet_tree(order, allowed_tables=())
    round_trip(select, DIALECT, ())
    return list(order.expressions)


def parse_type(text: str) -> exp.DataType:
    try:
        return exp.DataType.build(text, dialect=DIALECT)
    except (ParseError, ValueError):
        raise SqlProblem(f"unknown SQL type {text!r}") from None


def table_references(query: exp.Expr) -> list[str]:
    """Names of the tables a query reads (qualified ones as `db.name`), leaving out its CTEs."""
    names: list[str] = []
    for t in real_tables(query):
        name = ".".join(p for p in (t.catalog, t.db, t.name) if p)
        if name not in names:
            names.append(name)
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
