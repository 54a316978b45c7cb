"""The SQL allow-list: what a query written by a person, a pipeline or a planner may contain.

Allow, don't block. A query is parsed in the canonical dialect (DuckDB's) and every node of its
tree must be on an allow-list:

- **statements**: one SELECT (set operations and VALUES included); nothing else;
- **syntax**: the clause, operator and literal nodes of read-only queries (`ALLOWED_NODES`);
- **functions**: the typed functions sqlglot knows whose meaning is pure computation
  (`functions/sqlglot.txt`), and, for names sqlglot does not know, the per-dialect lists in
  `functions/<dialect>.txt` -- the names run as written on that database, so they are checked
  against its own list. Names are normalised first: quotes and case do not matter, DuckDB's
  method calls are the calls they mean (`name.lower()` is `lower(name)`, rewritten by `normalise`
  before anything is checked or sent), and a schema qualifier other than `pg_catalog` is refused
  (a function in another schema is somebody's code);
- **tables**: plain names, resolved with scopes, so a CTE shadows only unqualified references --
  no string paths, no system catalogs (refused with a pointer to `queryforge catalog`, which lists
  the tables and columns), no internal `_qf_` names, and no table functions except
  - the row generators `range`/`generate_series` (DuckDB, PostgreSQL) and `unnest`: with constant
    arguments (no table, query, column or text but a date or interval) their rows, counted by
    `generators.py`, may not exceed `MAX_GENERATED_ROWS`; a *lateral* generator reads the row
    before it, each bound a constant or a value of that row as stored (`range(t.n)`, not
    `range(t.n * 1000)`), and is counted by the cost gate (`generators.generated_rows`);
  - the per-dialect `ROW_FUNCTIONS`, which return the parts of one value (`json_each(t.doc)`,
    `jsonb_array_elements(t.doc -> 'items')`), with arguments that are values of the row or literals.
  `LATERAL f(...)` is the FROM item `f(...)` (a noise word on PostgreSQL, the default on DuckDB) and
  is rewritten so by `normalise`, so one shape is checked and counted.

Anything else is refused with its name and, for functions, the nearest allowed one. This module
imports nothing of ours outside `sql/`.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from importlib import resources

import sqlglot
from sqlglot import exp

from .generators import (
    MAX_GENERATED_ROWS,
    Interval,
    generated_rows,
    is_constant,
    is_lateral,
    lateral_rows,
    moved,
    row_value,
)

DIALECT = "duckdb"
MAX_SQL_CHARS = 200_000
MAX_JOINS = 16
MAX_SUBQUERY_DEPTH = 8
MAX_TREE_DEPTH = 200

SYSTEM_SCHEMAS = frozenset(
    {
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
)
SYSTEM_PREFIXES = ("pg_", "sqlite_", "duckdb_", "pragma_", "information_schema", "_qf_")
FUNCTION_QUALIFIERS = frozenset({"pg_catalog"})  # schema.function() is refused for every other schema


class SqlProblem(ValueError):
    """SQL we cannot accept, with a message fit for a person; callers add the location."""


class UnsafeSql(SqlProblem):
    """Refused by the policy; the message says why in words a person understands."""


# Syntax of read-only queries: clauses, operators, literals. A node class not listed is refused.
ALLOWED_NODES: frozenset[type[exp.Expr]] = frozenset(
    {
        # statements and clauses
        exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery, exp.With,
        exp.CTE, exp.From, exp.Join, exp.Lateral, exp.Where, exp.Group, exp.GroupingSets, exp.Rollup,
        exp.Cube, exp.Having, exp.Qualify, exp.Order, exp.Ordered, exp.Limit, exp.Offset, exp.Fetch,
        exp.LimitOptions, exp.Distinct, exp.Window, exp.WindowSpec, exp.Filter, exp.IgnoreNulls,
        exp.RespectNulls, exp.WithinGroup, exp.Pivot, exp.PivotAlias, exp.TableSample, exp.Table,
        exp.TableAlias,
        exp.Alias, exp.Aliases, exp.Star, exp.Column, exp.Identifier, exp.Var, exp.PositionalColumn,
        # literals and types
        exp.Literal, exp.Null, exp.Boolean, exp.Tuple, exp.DataType, exp.DataTypeParam, exp.ColumnDef,
        exp.Interval, exp.IntervalSpan, exp.ByteString, exp.HexString, exp.BitString, exp.National,
        exp.RawString, exp.UnicodeString,
        # operators
        exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Neg, exp.Not, exp.Paren, exp.And,
        exp.Or, exp.Xor, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ,
        exp.NullSafeNEQ, exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Glob, exp.SimilarTo,
        exp.RegexpLike, exp.RegexpILike, exp.Escape, exp.DPipe, exp.BitwiseAnd, exp.BitwiseOr,
        exp.BitwiseXor, exp.BitwiseNot, exp.BitwiseLeftShift, exp.BitwiseRightShift, exp.Pow,
        exp.Any, exp.All, exp.Exists, exp.AtTimeZone, exp.Collate, exp.Bracket, exp.Slice,
        exp.Lambda, exp.PropertyEQ, exp.Kwarg, exp.Overlaps, exp.Distance, exp.Dot, exp.Cast,
        exp.TryCast, exp.Case, exp.If, exp.Unnest, exp.JSONPath, exp.JSONPathKey, exp.JSONPathRoot,
        exp.JSONPathSubscript, exp.JSONPathWildcard, exp.JSONPathSlice, exp.JSONPathSelector,
        exp.ArrayContainsAll, exp.ArrayContainedBy, exp.ArrayOverlaps, exp.ScopeResolution,
    }
)  # fmt: skip

DIALECT_FILES = {"duckdb": "duckdb", "postgres": "postgres", "mysql": "mysql", "sqlite": "sqlite"}

# Table functions admitted as FROM items besides the generators and `unnest`: each returns the parts
# of one value (a JSON document, a string), so its rows are bounded by the data it is given, and
# its arguments must be values of the row or literals. Reviewed like the function lists: nothing
# here reads a file, a table, a setting or another session.
ROW_FUNCTIONS: dict[str, frozenset[str]] = {
    "duckdb": frozenset({"json_each", "json_tree"}),
    "postgres": frozenset(
        {
            "json_array_elements",
            "json_array_elements_text",
            "json_each",
            "json_each_text",
            "json_object_keys",
            "jsonb_array_elements",
            "jsonb_array_elements_text",
            "jsonb_each",
            "jsonb_each_text",
            "jsonb_object_keys",
            "jsonb_path_query",
            "regexp_matches",
            "regexp_split_to_table",
            "string_to_table",
        }
    ),
}


@functools.cache
def _listed(name: str) -> frozenset[str]:
    text = resources.files(__package__).joinpath("functions", f"{name}.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@functools.cache
def function_names(dialect: str) -> frozenset[str]:
    """The allow-listed function names of a dialect (functions/<dialect>.txt)."""
    return frozenset(n.lower() for n in _listed(DIALECT_FILES.get(dialect, "duckdb")))


def typed_functions() -> frozenset[str]:
    """sqlglot's function classes that compute from their arguments only (functions/sqlglot.txt)."""
    return _listed("sqlglot")


def _fn_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        this = node.this
        return (this.name if isinstance(this, exp.Identifier) else str(this)).lower()
    try:
        return node.sql_names()[0].lower()
    except (NotImplementedError, IndexError):
        return type(node).__name__.lower()


def _is_row_function(node: exp.Expr, dialect: str) -> bool:
    """A FROM item that is one of the dialect's `ROW_FUNCTIONS` (checked by `_check_table_shape`)."""
    return (
        isinstance(node, exp.Anonymous)
        and isinstance(node.parent, exp.Table)
        and node.parent.this is node
        and _fn_name(node) in ROW_FUNCTIONS.get(dialect, frozenset())
    )


def _check_function(node: exp.Func, dialect: str) -> None:
    if _is_row_function(node, dialect):
        return
    if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
        name = _fn_name(node)
        allowed = function_names(dialect)
        if name not in allowed:
            near = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.75)
            hint = f" (did you mean {near[0]}()?)" if near else ""
            raise UnsafeSql(
                f"function {name}() is not on the allow-list for {dialect}{hint}: only functions that "
                "compute from their arguments may run (no files, network, settings, sessions or side effects)"
            )
        return
    if type(node).__name__ not in typed_functions():
        raise UnsafeSql(
            f"function {_fn_name(node)}() is not allowed: it reads files, the network or system state, "
            "or is not a plain computation"
        )


def _qualifier(node: exp.Expr) -> list[str] | None:
    """The identifier chain left of a `.function()` (`a.b` -> [a, b]), or None for a value's method."""
    if isinstance(node, exp.Identifier):
        return [node.name.lower()]
    if isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier):
        return [p.lower() for p in (node.catalog, node.db, node.table, node.name) if p]
    if isinstance(node, exp.Dot):
        left, right = _qualifier(node.this), _qualifier(node.expression)
        return None if left is None or right is None else left + right
    return None


def _identifiers(node: exp.Expr) -> list[exp.Identifier] | None:
    """The identifiers of a chain `a` / `a.b` as parsed left of a dotted call, else None."""
    if isinstance(node, exp.Identifier):
        return [node]
    if isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier):
        return [
            p for p in (node.args.get("catalog"), node.args.get("db"), node.args.get("table"), node.this) if p
        ]
    if isinstance(node, exp.Dot):
        left, right = _identifiers(node.this), _identifiers(node.expression)
        return None if left is None or right is None else left + right
    return None


def _call_parts(call: exp.Func) -> tuple[exp.Expr | str, list[exp.Expr]]:
    """The name (as written) and the arguments of the function right of a dot."""
    if isinstance(call, exp.Anonymous):
        return call.this, list(call.expressions)
    args: list[exp.Expr] = []
    for key in call.arg_types:
        value = call.args.get(key)
        args.extend(value if isinstance(value, list) else [value] if isinstance(value, exp.Expr) else [])
    return _fn_name(call), args


def _method_call(dot: exp.Dot) -> exp.Expr | None:
    """DuckDB's method syntax as the plain call it means: `x.f(a)` is `f(x, a)`; None when the dot
    is a schema-qualified call instead (`pg_catalog.lower(x)`, `evil.lower(name)`).

    The receiver is a value (a literal, an expression, a call) or a column, `name` or `t.name`.
    A column-like receiver followed by a function that cannot take it as one more argument
    (`evil.lower(name)`: lower takes one) is a schema-qualified call, which the policy refuses.
    """
    call = dot.expression
    assert isinstance(call, exp.Func)
    name, args = _call_parts(call)
    receiver = dot.this
    chain = _identifiers(receiver)
    if chain is not None:
        words = [i.name.lower() for i in chain]
        if words == sorted(FUNCTION_QUALIFIERS)[:1] or len(chain) > 2:
            return None
        receiver = exp.Column(this=chain[-1].copy(), table=chain[0].copy() if len(chain) == 2 else None)
        plain = name.name if isinstance(name, exp.Identifier) else str(name)
        try:
            exp.func(plain.lower(), receiver.copy(), *[a.copy() for a in args], dialect=DIALECT)
        except ValueError as exc:
            if "greater than the maximum" in str(exc):
                return None  # the function cannot take the receiver too: a schema-qualified call
        except Exception:  # the call is written out and parsed below either way
            pass
    written = exp.Anonymous(
        this=name.copy() if isinstance(name, exp.Expr) else name,
        expressions=[receiver.copy(), *[a.copy() for a in args]],
    ).sql(DIALECT)
    try:
        parsed = sqlglot.parse_one(written, read=DIALECT)
    except (sqlglot.errors.SqlglotError, ValueError):
        raise SqlProblem(
            f"the method call {dot.sql(DIALECT)[:80]} cannot be read as {written[:80]}"
        ) from None
    return parsed


def _plain_lateral(node: exp.Lateral) -> exp.Expr | None:
    """`LATERAL f(...) AS a` as the FROM item `f(...) AS a` it means, or None for `LATERAL (query)`.

    PostgreSQL calls LATERAL before a function-call FROM item a noise word (the function may refer
    to earlier FROM items anyway) and DuckDB makes every table function in FROM lateral, so the
    meaning is the same; the policy and the cost gate then see one shape of a table function.
    """
    call = node.this
    if node.args.get("view") or not isinstance(call, exp.Func):
        return None
    alias = node.args.get("alias")
    if isinstance(call, exp.Unnest):
        plain = call.copy()
        if isinstance(alias, exp.TableAlias):
            alias = alias.copy()
            columns = list(alias.columns)
            if node.args.get("ordinality") and columns:  # as the parser reads `unnest(x) WITH ORDINALITY`
                plain.set("offset", columns.pop().copy())
                alias.set("columns", columns)
            plain.set("alias", alias)
        elif node.args.get("ordinality"):
            plain.set("offset", exp.to_identifier("ordinality"))
        return plain
    return exp.Table(
        this=call.copy(),
        alias=alias.copy() if isinstance(alias, exp.Expr) else None,
        ordinality=node.args.get("ordinality") or None,
    )


def normalise(tree: exp.Expr) -> exp.Expr:
    """Rewrite DuckDB's method-call syntax into the function calls it means, innermost first, so
    the allow-list checks (and the engine runs) `lower(name)` for `name.lower()`, and
    `LATERAL f(...)` into the FROM item `f(...)` (`_plain_lateral`). Returns the tree (a new root
    when the root itself was a method call)."""
    dots = [d for d in tree.walk() if isinstance(d, exp.Dot) and isinstance(d.expression, exp.Func)]
    for dot in reversed(dots):  # breadth-first reversed: inner calls before the calls on them
        call = _method_call(dot)
        if call is None:
            continue
        if dot is tree:
            tree = call
        else:
            dot.replace(call)
    for lateral in [n for n in tree.walk() if isinstance(n, exp.Lateral)]:
        plain = _plain_lateral(lateral)
        if plain is not None and lateral is not tree:
            lateral.replace(plain)
    for select in [n for n in tree.walk() if isinstance(n, exp.Select)]:
        _comma_cross_joins(select)
    return tree


def _is_comma(join: exp.Join) -> bool:
    return not any(join.args.get(k) for k in ("kind", "side", "method", "on", "using"))


def _comma_cross_joins(select: exp.Select) -> None:
    """`a CROSS JOIN f(...)` as `a, f(...)` (the same product) when only comma or cross joins
    follow it, so the join order is unchanged: DuckDB keeps an explicit join as a parenthesised
    join tree in a view's SQL, which the cost gate's syntax bound does not walk, and a table
    function there would go uncounted."""
    joins = list(select.args.get("joins") or [])
    for i, join in enumerate(joins):
        if (
            (join.args.get("kind") or "").upper() == "CROSS"
            and not join.args.get("side")
            and isinstance(join.this, exp.Table | exp.Unnest)
            and not isinstance(join.this.this, exp.Identifier)
            and all(_is_comma(j) or (j.args.get("kind") or "").upper() == "CROSS" for j in joins[i + 1 :])
        ):
            join.set("kind", None)


def _check_dot(node: exp.Dot) -> None:
    """`schema.function()` runs somebody's function unless the schema is the system's own.

    Method calls (`'text'.upper()`, `name.lower()`) were rewritten into plain calls by `normalise`;
    a dotted call left here is schema-qualified.
    """
    if not isinstance(node.expression, exp.Func):
        return
    qualifier = _qualifier(node.this)
    if qualifier is not None and qualifier != sorted(FUNCTION_QUALIFIERS)[:1]:
        raise UnsafeSql(
            f"the schema-qualified function {node.sql(DIALECT)[:80]} is not allowed: "
            "call built-in functions by their plain name"
        )


WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WORDY = (exp.Var, exp.Literal, exp.Identifier)


def _check_words(node: exp.Expr) -> None:
    """Words the parser keeps verbatim (units, type names, collations) are written back unquoted:
    anything but a plain word there would be SQL that no other check ever saw."""
    text: object = None
    if isinstance(node, exp.Var):
        text = node.this
    elif isinstance(node, exp.DataType) and node.this == exp.DataType.Type.USERDEFINED:
        text = node.args.get("kind")
    elif isinstance(node, exp.Collate) and isinstance(node.expression, WORDY):
        text = node.expression.name
    if text is not None and not WORD.match(str(text)):
        raise UnsafeSql(
            f"{str(text)[:60]!r} is not a plain name: units, types and collations are single words"
        )


def _check_node(node: exp.Expr, dialect: str) -> None:
    if isinstance(node, exp.Func):
        _check_function(node, dialect)
    elif type(node) not in ALLOWED_NODES:
        raise UnsafeSql(_refusal(node))
    if isinstance(node, exp.Dot):
        _check_dot(node)
    if isinstance(node, exp.Table):
        _check_table_shape(node, dialect)
    if isinstance(node, exp.Unnest):
        _check_row_source(node, dialect)
    _check_words(node)


def _refusal(node: exp.Expr) -> str:
    """Words for a refused node: what it is and why it cannot run here."""
    kind = type(node).__name__
    reasons = {
        "Lock": "FOR UPDATE / FOR SHARE takes locks; a read-only query takes none",
        "Into": "SELECT ... INTO creates a table; write with a load step instead",
        "Placeholder": "query parameters ($1, ?) are not supported; write the value or use ${param}",
        "Parameter": "query parameters are not supported; write the value or use ${param}",
        "SessionParameter": "session variables (@@name) read server settings",
        "Operator": "OPERATOR(schema.op) calls a user-defined operator",
        "Summarize": "SUMMARIZE reads a table or file outside the query; use 'queryforge catalog' or checks",
        "Describe": "DESCRIBE is not a query; use 'queryforge catalog'",
        "Show": "SHOW is not a query; use 'queryforge catalog'",
        "Command": "this statement is not a query",
    }
    why = reasons.get(kind, "it is not part of a read-only SELECT")
    return f"{kind.upper()} is not allowed: {why}"


def _check_constant_text(node: exp.Expr, what: str) -> None:
    """No string in a generator bound but a date, time or interval written as one."""
    for part in node.walk():
        if (
            isinstance(part, exp.Literal)
            and part.is_string
            and not isinstance(part.parent, exp.Cast | exp.TryCast | exp.Interval)
        ):
            raise UnsafeSql(
                f"the arguments of {what} in FROM may not be text ({part.sql(DIALECT)[:60]}); "
                "write dates as DATE '2026-01-01' and steps as INTERVAL 1 DAY"
            )


def _shifted_row_value(node: exp.Expr) -> bool:
    """`t.n - 1`, `(t.n + 10) - 1`, `t.d + INTERVAL 1 YEAR`: a value of the row moved by constants
    adding up to no more than a generator may count (how `range(t.n)` is written for PostgreSQL:
    `generate_series(0, t.n - 1)`)."""
    base, by = moved(node)
    if base is None or not row_value(base):
        return False
    return isinstance(by, Interval) or (isinstance(by, float) and abs(by) <= MAX_GENERATED_ROWS)


def _check_generator_bounds(call: exp.GenerateSeries, what: str) -> None:
    """A generator's bounds: no table or query; each a constant -- numbers, dates, timestamps,
    intervals, and no string but a date, time or interval written as one (`DATE '2026-01-01'`) --
    or, for a lateral generator, a value of the row as stored (a column, a field of one, a cast of
    one), possibly moved by a constant (`t.n - 1`, `t.d + INTERVAL 6 DAY`); computing on it
    (`t.n * 1000`) is refused."""
    for arg in call.iter_expressions():
        if any(isinstance(p, exp.Query | exp.Subquery | exp.Table) for p in arg.walk()):
            raise UnsafeSql(f"the arguments of {what} in FROM may not read a table or run a query")
        if is_constant(arg):
            _check_constant_text(arg, what)
        elif not (row_value(arg) or _shifted_row_value(arg)):
            raise UnsafeSql(
                f"the arguments of {what} in FROM must be constants or columns of the rows before it, "
                f"not the computed value {arg.sql(DIALECT)[:60]}: compute it in a CTE and pass the column"
            )


def _check_generator(call: exp.GenerateSeries, what: str, dialect: str) -> None:
    """`range`/`generate_series` as a FROM item: constant and counted, or lateral and checked."""
    if dialect not in GENERATOR_DIALECTS:
        raise UnsafeSql(f"{what} in FROM is not available on {dialect}; generate the rows in a step")
    _check_generator_bounds(call, what)
    if is_lateral(call):
        per_row = lateral_rows(call)
        if per_row is None and isinstance(call.parent, exp.Unnest):
            # DuckDB's writer sends `FROM t, unnest(...)` as `JOIN unnest(...) ON TRUE`: see below
            raise UnsafeSql(
                f"unnest({what}) in FROM makes as many rows as the data says; write the generator "
                f"itself as the FROM item (`FROM t, range(t.n)`), which QueryForge can bound"
            )
        join = call.parent.parent if call.parent is not None else None  # the FROM item's join
        if per_row is None and isinstance(join, exp.Join) and not _is_comma(join):
            raise UnsafeSql(
                f"{what} makes as many rows as the data says, which QueryForge can bound only in a "
                "comma or CROSS JOIN; write `FROM t, generate_series(...)` (or count the rows with "
                "`generate_series(t.d, t.d + INTERVAL 6 DAY, ...)`)"
            )
        if per_row is not None and per_row > MAX_GENERATED_ROWS:
            raise UnsafeSql(
                f"{what} would make {per_row:,} rows for each row it runs over; a row generator may "
                f"make at most {MAX_GENERATED_ROWS:,} (narrow its range or use a coarser step)"
            )
        return
    _check_generated_rows(call, what, required=True)


def _check_row_function(call: exp.Anonymous, what: str, dialect: str) -> None:
    """A `ROW_FUNCTIONS` FROM item: its arguments are values of the row or literals."""
    for arg in call.expressions:
        literal = isinstance(arg, exp.Literal) or (
            isinstance(arg, exp.Cast | exp.TryCast) and isinstance(arg.this, exp.Literal)
        )
        if not (literal or row_value(arg)):
            raise UnsafeSql(
                f"the arguments of {what} in FROM must be columns of the rows before it or literals, "
                f"not {arg.sql(DIALECT)[:60]}: compute the value in a CTE and pass the column"
            )


def _check_generated_rows(call: exp.Expr, what: str, *, required: bool) -> None:
    """A generator in FROM makes a number of rows the policy can count, and at most the cap."""
    rows = generated_rows(call)
    if rows is None:
        if required:
            raise UnsafeSql(
                f"QueryForge cannot count the rows of {what}: its bounds and step must be numbers, "
                "dates or timestamps (current_date and now() included) and intervals"
            )
        return
    if rows > MAX_GENERATED_ROWS:
        raise UnsafeSql(
            f"{what} would make {rows:,} rows; a row generator may make at most {MAX_GENERATED_ROWS:,} "
            "(narrow its range or use a coarser step)"
        )


def _check_row_source(node: exp.Unnest, dialect: str) -> None:
    """`FROM unnest(...)`: a list literal or a constant generator is counted like `range` in FROM;
    a generator in it obeys the rules of generators in FROM (`unnest(range(t.n))` is `range(t.n)`);
    a list read from a column (a lateral unnest) is counted by the plan-based cost gate."""
    if not isinstance(node.parent, exp.From | exp.Join):
        return
    generators = [g for g in node.find_all(exp.GenerateSeries) if g.parent is node]
    for call in generators:
        _check_generator(call, call.sql(DIALECT)[:80], dialect if dialect in GENERATOR_DIALECTS else DIALECT)
    if not any(is_lateral(g) for g in generators):
        _check_generated_rows(node, "unnest(...)", required=False)


GENERATOR_DIALECTS = frozenset({"duckdb", "postgres"})  # where generate_series() is a table


# Table functions that list tables and columns: their refusal points to `queryforge catalog` too.
CATALOG_FUNCTIONS = frozenset(
    {
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_indexes",
        "duckdb_schemas",
        "duckdb_tables",
        "duckdb_views",
        "pragma_database_list",
        "pragma_show",
        "pragma_show_tables",
        "pragma_show_tables_expanded",
        "pragma_table_info",
    }
)
CATALOG_POINTER = (
    "to see the tables and their columns, run `queryforge catalog` "
    "(or `queryforge catalog CONNECTION` for one connection)"
)


def system_table_refusal(name: str, *, internal: bool = False) -> str:
    """Why a system catalog (information_schema, pg_catalog, sqlite_master, duckdb_*, ...) or an
    internal `_qf_` table cannot be read, and where the tables and columns are listed instead."""
    if internal:
        return (
            f"system or internal table {name} is not allowed: "
            "it is QueryForge's own bookkeeping (staging, stream positions)"
        )
    return f"system or internal table {name} is not allowed: {CATALOG_POINTER}"


def _check_table_shape(node: exp.Table, dialect: str = DIALECT) -> None:
    qualified = bool(node.args.get("db") or node.args.get("catalog"))
    if isinstance(node.this, exp.GenerateSeries) and not qualified:
        # A row generator (`range`, `generate_series`): date spines and number tables, with
        # constant, counted arguments; or a lateral one over the rows before it (the cost gate
        # counts both).
        _check_generator(node.this, node.this.sql(DIALECT)[:80], dialect)
        return
    if _is_row_function(node.this, dialect) and not qualified:
        assert isinstance(node.this, exp.Anonymous)
        _check_row_function(node.this, node.this.sql(DIALECT)[:80], dialect)
        return
    if not isinstance(node.this, exp.Identifier):
        # A table function or a string path ("SELECT * FROM 'file.csv'") reads outside the catalog.
        what = node.this.sql(DIALECT) if node.this is not None else "?"
        if isinstance(node.this, exp.Func) and _fn_name(node.this) in CATALOG_FUNCTIONS:
            raise UnsafeSql(f"reading {what[:120]} directly is not allowed: {CATALOG_POINTER}")
        raise UnsafeSql(f"reading {what[:120]} directly is not allowed; name a table or a pipeline step")
    names = [p.lower() for p in (node.catalog, node.db, node.name) if p]
    for part in names:
        if part in SYSTEM_SCHEMAS or part.startswith(SYSTEM_PREFIXES):
            raise UnsafeSql(system_table_refusal(".".join(names), internal=part.startswith("_qf_")))
    if any(ch in node.name for ch in "/\\") or "." in node.name:
        raise UnsafeSql(f"table name {node.name!r} looks like a path")


def _cte_names_in_scope(node: exp.Table) -> set[str]:
    """CTE names an unqualified table reference at `node` would resolve to.

    Standard scoping: the main query sees every CTE of its WITH; a CTE sees the ones defined before
    it, and itself only under RECURSIVE; inner WITHs add to what the outer ones give.
    """
    names: set[str] = set()
    inside: exp.CTE | None = None  # the CTE of the WITH being examined that `node` sits in, if any
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.CTE):
            inside = parent
        elif isinstance(parent, exp.Query) and isinstance(parent.args.get("with_"), exp.With):
            with_ = parent.args["with_"]
            recursive = bool(with_.args.get("recursive"))
            for cte in with_.expressions:
                name = cte.alias_or_name.lower()
                if cte is inside:
                    if recursive:
                        names.add(name)
                    break
                names.add(name)
            inside = None
        parent = parent.parent
    return names


def real_tables(tree: exp.Expr) -> list[exp.Table]:
    """The table references that read stored tables (not CTEs): a qualified name is never a CTE."""
    out: list[exp.Table] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue
        qualified = bool(table.args.get("db") or table.args.get("catalog"))
        if not qualified and table.name.lower() in _cte_names_in_scope(table):
            continue
        out.append(table)
    return out


def qualified_name(table: exp.Table) -> str:
    return ".".join(p.lower() for p in (table.catalog, table.db, table.name) if p)


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


def _tree_depth(tree: exp.Expr) -> int:
    deepest = 0
    stack: list[tuple[exp.Expr, int]] = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_TREE_DEPTH:
            return deepest
        stack.extend((child, d + 1) for child in node.iter_expressions())
    return deepest


def vet_tree(
    tree: exp.Expr,
    *,
    dialect: str = DIALECT,
    allowed_tables: Iterable[str] | None = None,
) -> None:
    """Raise UnsafeSql unless every node of `tree` is allowed (see the module docstring).

    `allowed_tables`: the names the query may read (lower case; qualified names as `schema.table`);
    None leaves table names to the engine (its catalog is the fence), [] allows no table at all.
    """
    if _tree_depth(tree) > MAX_TREE_DEPTH:
        raise UnsafeSql(f"the query is nested more than {MAX_TREE_DEPTH} levels deep")
    for node in tree.walk():
        _check_node(node, dialect)
    joins = sum(1 for _ in tree.find_all(exp.Join))
    if joins > MAX_JOINS:
        raise UnsafeSql(f"the query joins {joins} tables; at most {MAX_JOINS} joins are allowed")
    deepest = max((_depth(q) for q in tree.find_all(exp.Query)), default=0)
    if deepest > MAX_SUBQUERY_DEPTH:
        raise UnsafeSql(
            f"subqueries are nested {deepest} deep; at most {MAX_SUBQUERY_DEPTH} levels are allowed"
        )
    if allowed_tables is not None:
        known = {t.lower() for t in allowed_tables}
        for table in real_tables(tree):
            name = qualified_name(table)
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise UnsafeSql(f"unknown table {name!r}{hint}")
