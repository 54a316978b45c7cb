"""The SQL allow-list: what a query written by a person, a pipeline or a planner may contain.

Allow, don't block. A query is parsed in the canonical dialect (DuckDB's) and every node of its
tree must be on an allow-list:

- **statements**: one SELECT (set operations and VALUES included); nothing else;
- **syntax**: the clause, operator and literal nodes of read-only queries (`ALLOWED_NODES`);
- **functions**: the typed functions sqlglot knows whose meaning is pure computation
  (`functions/sqlglot.txt`), and, for names sqlglot does not know, the per-dialect lists in
  `functions/<dialect>.txt` -- the names run as written on that database, so they are checked
  against its own list. Names are normalised first: quotes and case do not matter, and a schema
  qualifier other than `pg_catalog` is refused (a function in another schema is somebody's code);
- **tables**: plain names only -- no table functions, no string paths, no system catalogs, no
  internal `_qf_` names -- resolved with scopes, so a CTE shadows only unqualified references.

Anything else is refused with its name and, for functions, the nearest allowed one. This module
imports nothing of ours outside `sql/`.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from importlib import resources

from sqlglot import exp

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


def _check_function(node: exp.Func, dialect: str) -> None:
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


def _check_dot(node: exp.Dot) -> None:
    """`schema.function()` runs somebody's function unless the schema is the system's own.

    `'text'.upper()` (DuckDB's method call on a value) is the function itself, checked on its own.
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
        _check_table_shape(node)
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


def _check_table_shape(node: exp.Table) -> None:
    if not isinstance(node.this, exp.Identifier):
        # A table function or a string path ("SELECT * FROM 'file.csv'") reads outside the catalog.
        what = node.this.sql(DIALECT) if node.this is not None else "?"
        raise UnsafeSql(f"reading {what[:120]} directly is not allowed; name a table or a pipeline step")
    names = [p.lower() for p in (node.catalog, node.db, node.name) if p]
    for part in names:
        if part in SYSTEM_SCHEMAS or part.startswith(SYSTEM_PREFIXES):
            raise UnsafeSql(f"system or internal table {'.'.join(names)} is not allowed")
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
