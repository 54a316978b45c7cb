"""Canonical (DuckDB) SQL to Spark SQL: sqlglot's transpiler plus the fixes it needs.

sqlglot writes Spark SQL that parses, but not always SQL that means the same: `dayofweek` counts
from 1, `regexp_replace` replaces every match, `CAST(2.5 AS INT)` truncates, `round` of a double
rounds its decimal text, division by zero fails under ANSI mode. A query is first qualified
against the schemas of what it reads (stars expanded, every column typed), then the fixes below are
applied by node type. What is not on the allow-list, or has no faithful rewrite, is refused with a
reason: a query either means the same on both engines or does not run on Spark.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

Schema = list[tuple[str, str]]


class NotOnSpark(Exception):
    """The query has a construct whose Spark translation would not mean the same."""


# Functions whose Spark translation was checked against DuckDB (tests/spark/corpus.py).
ALLOWED_FUNCS: frozenset[type[exp.Expr]] = frozenset(
    getattr(exp, name)
    for name in [
        "Abs",
        "And",
        "ArgMax",
        "ArgMin",
        "Avg",
        "Between",
        "Case",
        "Cast",
        "Ceil",
        "Coalesce",
        "Concat",
        "ConcatWs",
        "Contains",
        "Corr",
        "Count",
        "CountIf",
        "CovarPop",
        "CovarSamp",
        "CumeDist",
        "CurrentDate",
        "DateDiff",
        "DateFromParts",
        "DateTrunc",
        "Day",
        "DayOfMonth",
        "DayOfWeek",
        "DayOfWeekIso",
        "DayOfYear",
        "Dayname",
        "DenseRank",
        "Exists",
        "Exp",
        "Extract",
        "Filter",
        "FirstValue",
        "Floor",
        "GroupConcat",
        "Greatest",
        "Hour",
        "If",
        "Initcap",
        "Lag",
        "LastDay",
        "LastValue",
        "Lead",
        "Least",
        "Left",
        "Length",
        "Ln",
        "Localtimestamp",
        "Log",
        "LogicalAnd",
        "LogicalOr",
        "Lower",
        "MD5",
        "Max",
        "Median",
        "Min",
        "Minute",
        "Month",
        "Monthname",
        "Ntile",
        "Nullif",
        "Or",
        "PercentRank",
        "PercentileCont",
        "Pow",
        "Quarter",
        "Rank",
        "ReadCSV",
        "ReadParquet",
        "RegexpExtract",
        "RegexpFullMatch",
        "RegexpLike",
        "RegexpReplace",
        "Replace",
        "Right",
        "Round",
        "RowNumber",
        "Second",
        "Sign",
        "SplitPart",
        "Sqrt",
        "StartsWith",
        "Stddev",
        "StddevPop",
        "StddevSamp",
        "StrPosition",
        "Substring",
        "Sum",
        "TimeToStr",
        "TimestampTrunc",
        "Trim",
        "TryCast",
        "Upper",
        "Variance",
        "VariancePop",
        "Week",
        "Year",
    ]
)
# File readers appear only in extracts; the Spark session replaces them with views of the data.
FILE_READERS = frozenset({"read_csv", "read_csv_auto", "read_json", "read_json_auto", "read_parquet"})
ALLOWED_ANONYMOUS = FILE_READERS | {"make_date", "ifnull", "chr", "ascii"}
EXTRACT_PARTS = frozenset({"year", "quarter", "month", "day", "hour", "minute", "week", "doy", "dayofyear"})
INTEGERS = {
    exp.DataType.Type.TINYINT,
    exp.DataType.Type.SMALLINT,
    exp.DataType.Type.INT,
    exp.DataType.Type.BIGINT,
}
FLOATS = {exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE}
DECIMALS = {exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL}
TEXTS = {exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT, exp.DataType.Type.CHAR}
TRUNC_UNITS = frozenset({"year", "quarter", "month", "week", "day", "hour", "minute", "second"})
# strftime specifiers whose Spark pattern sqlglot writes the same way, and the separators between them
STRFTIME = re.compile(r"(?:%[YmdHMS]|[-/:., T])*")


def table_names(query: exp.Expr) -> set[str]:
    return {t.name for t in query.find_all(exp.Table) if isinstance(t.this, exp.Identifier)}


def _mapping(schemas: Mapping[str, Schema], names: set[str]) -> dict[str, object]:
    return {n: dict(schemas[n]) for n in names if n in schemas}


def qualified(query: exp.Query, schemas: Mapping[str, Schema]) -> exp.Query:
    """The query with stars expanded, every column qualified and typed (canonical dialect)."""
    mapping = _mapping(schemas, table_names(query))
    try:
        done = qualify(query.copy(), schema=mapping, dialect="duckdb", quote_identifiers=True)
        annotated = annotate_types(done, schema=mapping, dialect="duckdb")
    except (OptimizeError, SqlglotError, KeyError, ValueError) as exc:
        raise NotOnSpark(f"it could not be analysed for translation ({str(exc).splitlines()[0]})") from None
    assert isinstance(annotated, exp.Query)
    return annotated


def _is(node: exp.Expr, kinds: set[Any]) -> bool:
    return node.type is not None and node.type.this in kinds


def _refuse(node: exp.Expr, why: str) -> None:
    raise NotOnSpark(f"{node.sql('duckdb')[:80]}: {why}")


def _is_file_reader(node: exp.Expr) -> bool:
    """A file-reading call of an extract: its arguments are DuckDB reader options, not SQL to translate."""
    if isinstance(node, exp.ReadCSV | exp.ReadParquet):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() in FILE_READERS


def _vet(node: exp.Expr) -> None:
    if isinstance(node, exp.Anonymous):
        if node.name.lower() not in ALLOWED_ANONYMOUS:
            _refuse(node, f"the function {node.name}() has no checked Spark translation")
    elif isinstance(node, exp.Func) and type(node) not in ALLOWED_FUNCS and not isinstance(node, exp.Window):
        _refuse(node, f"{type(node).__name__} has no checked Spark translation")
    if isinstance(node, exp.Extract) and node.name.lower() not in EXTRACT_PARTS:
        _refuse(node, f"the date part '{node.name}' is counted differently on Spark")
    if isinstance(node, exp.Bracket):
        _refuse(node, "indexing a list or map has no checked Spark translation")
    if isinstance(node, exp.RegexpReplace):
        modifiers = node.args.get("modifiers")
        if not (isinstance(modifiers, exp.Literal) and "g" in modifiers.name):
            _refuse(node, "DuckDB replaces only the first match without the 'g' option; Spark replaces all")
    if isinstance(node, exp.DateTrunc | exp.TimestampTrunc):
        unit = node.args.get("unit")
        if unit is None or unit.name.lower() not in TRUNC_UNITS:
            _refuse(node, "date_trunc() to this unit has no checked Spark translation")
    if isinstance(node, exp.PercentileCont) and isinstance(node.parent, exp.WithinGroup):
        _refuse(node, "percentile_cont(...) WITHIN GROUP becomes an approximate percentile on Spark")
    if isinstance(node, exp.Substring):
        start, length = node.args.get("start"), node.args.get("length")
        if not _literal_int(start, minimum=1) or (length is not None and not _literal_int(length, minimum=0)):
            _refuse(node, "substring() needs a constant start of 1 or more and a constant length on Spark")
    if isinstance(node, exp.Left | exp.Right) and not _literal_int(node.expression, minimum=0):
        _refuse(node, "left()/right() need a constant length of 0 or more on Spark")
    if isinstance(node, exp.SplitPart):
        delimiter = node.args.get("delimiter")
        if not (isinstance(delimiter, exp.Literal) and delimiter.is_string and delimiter.name):
            _refuse(node, "split_part() needs a constant, non-empty delimiter on Spark")
    if isinstance(node, exp.Like | exp.ILike):
        pattern = node.expression
        if not (isinstance(pattern, exp.Literal) and pattern.is_string) or "\\" in pattern.name:
            _refuse(node, "LIKE needs a constant pattern without backslashes on Spark (its escape character)")
    if isinstance(node, exp.RegexpLike | exp.RegexpReplace | exp.RegexpExtract | exp.RegexpFullMatch):
        _vet_regex(node)
    if isinstance(node, exp.TimeToStr):
        form = node.args.get("format")
        if not (isinstance(form, exp.Literal) and STRFTIME.fullmatch(form.name)):
            _refuse(
                node,
                "strftime() formats other than %Y %m %d %H %M %S and separators have no checked translation",
            )
    if isinstance(node, exp.ArrayAgg) and node.find(exp.Order):
        _refuse(node, "an ordered list() loses its order on Spark")
    if isinstance(node, exp.Pivot) and not node.args.get("fields"):  # DuckDB's PIVOT t ON c USING ...
        _refuse(node, "a PIVOT whose columns come from the data; list the pivot's `values:`")


def _literal_int(node: exp.Expr | None, *, minimum: int) -> bool:
    return isinstance(node, exp.Literal) and node.is_int and int(node.name) >= minimum


def _vet_regex(node: exp.Expr) -> None:
    """RE2 (DuckDB) and Java (Spark) agree on constant patterns without POSIX classes, flags or a
    `$` before the end; replacements may not refer to groups (\\1 in DuckDB, $1 in Java)."""
    pattern = node.expression
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        _refuse(node, "a regular expression needs a constant pattern on Spark")
    text = pattern.name
    if "[[:" in text or re.search(r"\(\?[a-zA-Z<]", text):
        _refuse(node, "POSIX classes, inline flags and named groups in a regular expression differ on Spark")
    if "$" in text.replace("\\$", "")[:-1]:
        _refuse(node, "'$' other than at the end of a regular expression matches differently on Spark")
    flags = node.args.get("flag") or node.args.get("parameters")
    if isinstance(node, exp.RegexpLike) and flags is not None:
        _refuse(node, "regular expression options have no checked Spark translation")
    if isinstance(node, exp.RegexpReplace):
        replacement = node.args.get("replacement")
        if not (isinstance(replacement, exp.Literal) and replacement.is_string) or {"\\", "$"} & set(
            replacement.name
        ):
            _refuse(node, "a replacement with group references or '$' is written differently on Spark")
        if not {"g"} >= set(node.args["modifiers"].name):
            _refuse(node, "regexp_replace options other than 'g' have no checked Spark translation")


def vet(query: exp.Query) -> None:
    """Raise NotOnSpark for a construct with no checked translation (needs no schemas)."""
    for node in query.walk(prune=_is_file_reader):
        _vet(node)


def _rewrite(node: exp.Expr) -> exp.Expr:
    """One node's Spark-faithful form, written in the canonical dialect."""
    if isinstance(node, exp.DayOfWeek):  # DuckDB: Sunday = 0; Spark: Sunday = 1
        return exp.Sub(this=node.copy(), expression=exp.Literal.number(1))
    if isinstance(node, exp.DayOfWeekIso):  # sqlglot's Spark form is off for Sunday
        return sqlglot.parse_one("((dayofweek(X) + 5) % 7) + 1", read="duckdb").transform(
            lambda part: node.this.copy() if isinstance(part, exp.Column) and part.name == "X" else part
        )
    if isinstance(node, exp.Dayname | exp.Monthname):  # Spark abbreviates them
        pattern = "EEEE" if isinstance(node, exp.Dayname) else "MMMM"
        return exp.Anonymous(this="date_format", expressions=[node.this, exp.Literal.string(pattern)])
    if isinstance(node, exp.Round):
        if _is(node.this, FLOATS):
            return _exact_round(node)
        if not _is(node.this, DECIMALS | INTEGERS):
            _refuse(node, "round() of a value whose type is not known here; cast it to DOUBLE or DECIMAL")
    if isinstance(node, exp.Cast):
        return _cast(node)
    if isinstance(node, exp.Log) and node.args.get("expression") is None:  # DuckDB's log(x) is base 10
        return exp.Anonymous(this="log10", expressions=[node.this])
    if isinstance(node, exp.Ln):  # DuckDB: ln(0) = -inf; Spark: NULL
        zero = exp.EQ(this=node.this.copy(), expression=exp.Literal.number(0))
        return exp.Case(ifs=[exp.If(this=zero, true=_double("-Infinity"))], default=node.copy())
    if isinstance(node, exp.Avg) and _is(node.this, DECIMALS):  # DuckDB averages decimals as doubles
        return exp.Avg(this=exp.Cast(this=node.this, to=exp.DataType.build("DOUBLE")))
    if isinstance(node, exp.ArgMax | exp.ArgMin):  # DuckDB skips rows whose value is NULL
        value = node.this
        gated = exp.Case(ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null())])
        gated.set("default", node.expression)
        return type(node)(this=value, expression=gated)
    if isinstance(node, exp.DateDiff):
        unit = (node.args.get("unit") or exp.var("day")).name.lower()
        if unit != "day" or not (_is(node.this, {T.DATE}) and _is(node.expression, {T.DATE})):
            _refuse(
                node,
                "datediff() counts elapsed units on Spark, boundaries on DuckDB: only days of DATEs agree",
            )
    if isinstance(node, exp.RegexpFullMatch):  # a whole-value match; Spark's RLIKE finds a part
        body = (
            node.expression.name.removesuffix("$")
            if not node.expression.name.endswith("\\$")
            else node.expression.name
        )
        anchored = exp.Literal.string(f"^(?:{body})\\z")
        return exp.RegexpLike(this=node.this, expression=anchored)
    if isinstance(node, exp.RegexpLike | exp.RegexpReplace | exp.RegexpExtract):
        text = node.expression.name
        if text.endswith("$") and not text.endswith(
            "\\$"
        ):  # RE2's end of text; Java's $ allows a final newline
            node.set("expression", exp.Literal.string(text[:-1] + "\\z"))
        return node
    if isinstance(node, exp.Localtimestamp):  # Spark knows it only as a call
        return exp.Anonymous(this="localtimestamp", expressions=[])
    if isinstance(node, exp.Week):  # DuckDB's week() is the ISO week, Spark's weekofyear()
        return exp.Anonymous(this="weekofyear", expressions=[node.this])
    if isinstance(node, exp.PercentileCont) and node.args.get("expression") is not None:
        return exp.Anonymous(this="percentile", expressions=[node.this, node.expression])
    if isinstance(node, exp.Div) and not node.args.get("safe"):
        return _ieee_division(node)
    return node


# round(x, d) of a DOUBLE as DuckDB computes it: half away from zero of the double's exact binary
# value (round(2.675, 2) = 2.67, the double being 2.67499999...). Spark rounds the shortest decimal
# text instead (2.68). x * 10^d is split into p + e exactly (Dekker's product, plain IEEE double
# arithmetic); only when p lies exactly halfway does the sign of the error e decide.
_SPLIT = 134217729.0  # 2^27 + 1: Veltkamp's splitting constant for doubles
_EXACT_ROUND = """
CASE WHEN isnan(X) OR abs(X * C) >= 4503599627370496e0 THEN X ELSE (CASE
  WHEN X * C - floor(X * C) > 5e-1 THEN floor(X * C) + 1
  WHEN X * C - floor(X * C) < 5e-1 THEN floor(X * C)
  WHEN ((AH * BH - X * C) + AH * BL + AL * BH) + AL * BL < 0 THEN floor(X * C)
  WHEN ((AH * BH - X * C) + AH * BL + AL * BH) + AL * BL > 0 THEN floor(X * C) + 1
  WHEN X > 0 THEN floor(X * C) + 1
  ELSE floor(X * C) END) / C END
"""


def _split(value: float) -> tuple[float, float]:
    t = _SPLIT * value
    high = t - (t - value)
    return high, value - high


def _exact_round(node: exp.Round) -> exp.Expr:
    digits = node.args.get("decimals")
    places = -1
    if digits is None:
        places = 0
    elif isinstance(digits, exp.Literal) and digits.is_int:
        places = int(digits.name)
    if places < 0 or places > 15:
        _refuse(node, "round() of a DOUBLE to other than 0 to 15 decimals has no checked Spark translation")
    scale = float(10**places)
    high, low = _split(scale)
    x = node.this
    t = exp.Mul(this=exp.Literal.number(f"{_SPLIT!r}e0"), expression=exp.Paren(this=x.copy()))
    rest = exp.Paren(this=exp.Sub(this=t.copy(), expression=exp.Paren(this=x.copy())))
    x_high = exp.Paren(this=exp.Sub(this=t, expression=rest))
    x_low = exp.Paren(this=exp.Sub(this=exp.Paren(this=x.copy()), expression=x_high.copy()))
    template = sqlglot.parse_one(_EXACT_ROUND, read="duckdb")
    values: dict[str, exp.Expr] = {
        "X": exp.Paren(this=x),
        "C": exp.Literal.number(f"{scale!r}e0" if "e" not in repr(scale) else repr(scale)),
        "AH": x_high,
        "AL": x_low,
        "BH": exp.Literal.number(f"{high!r}e0" if "e" not in repr(high) else repr(high)),
        "BL": exp.Literal.number(f"{low!r}e0" if "e" not in repr(low) else repr(low)),
    }

    def fill(part: exp.Expr) -> exp.Expr:
        if isinstance(part, exp.Column) and not part.table and part.name in values:
            return values[part.name].copy()
        return part

    return template.transform(fill)


def _double(text: str) -> exp.Expr:
    return exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build("DOUBLE"))


def _cast(node: exp.Cast) -> exp.Expr:
    """CAST (and TRY_CAST) as DuckDB converts: doubles round half to even and decimals half away
    from zero into integers, doubles into decimals by their exact binary value."""
    target, value = node.to, node.this

    def kind(this: exp.Expr, to: exp.DataType) -> exp.Expr:
        return node.__class__(**{**node.args, "this": this, "to": to})  # TRY_CAST stays TRY_CAST

    if target.this in INTEGERS and _is(value, FLOATS):
        return kind(this=exp.Anonymous(this="bround", expressions=[value]), to=target)
    if target.this in INTEGERS and _is(value, DECIMALS):
        return kind(this=exp.Round(this=value), to=target)
    if target.this in DECIMALS and _is(value, FLOATS):
        scale = target.expressions[1].this if len(target.expressions) > 1 else exp.Literal.number(0)
        digits = int(scale.name) if isinstance(scale, exp.Literal) else 0
        return kind(this=_exact_round(exp.Round(this=value, decimals=exp.Literal.number(digits))), to=target)
    if target.this in TEXTS and _is(value, FLOATS):
        _refuse(node, "a DOUBLE written as text differs on Spark (1.23456789E7); round or format it first")
    if value.type is None or value.type.this == T.UNKNOWN:
        _refuse(node, "a cast of a value whose type is not known here; cast the parts it is made of")
    return node


def _ieee_division(node: exp.Div) -> exp.Expr:
    """x / 0 as DuckDB answers it (IEEE: inf, -inf, NaN); ANSI Spark would fail the query."""
    dividend, divisor = node.this, node.expression

    def double(text: str) -> exp.Expr:
        return exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build("DOUBLE"))

    zero = exp.Literal.number(0)
    by_zero = exp.Case(
        ifs=[
            exp.If(this=exp.Anonymous(this="isnan", expressions=[dividend.copy()]), true=double("NaN")),
            exp.If(this=exp.GT(this=dividend.copy(), expression=zero.copy()), true=double("Infinity")),
            exp.If(this=exp.LT(this=dividend.copy(), expression=zero.copy()), true=double("-Infinity")),
            exp.If(this=exp.EQ(this=dividend.copy(), expression=zero.copy()), true=double("NaN")),
        ]
    )
    return exp.Case(
        ifs=[exp.If(this=exp.EQ(this=divisor.copy(), expression=zero.copy()), true=by_zero)],
        default=node.copy(),
    )


def _same_types_by_name(union: exp.Union) -> None:
    """The columns a BY NAME union matches must have one type, or Spark would pick its own."""
    left, right = union.left, union.right
    if not isinstance(left, exp.Select) or not isinstance(right, exp.Select):
        return
    types = {item.alias_or_name.lower(): item.type for item in left.expressions}
    for item in right.expressions:
        mine, theirs = item.type, types.get(item.alias_or_name.lower())
        known = [t for t in (mine, theirs) if t is not None and t.this != T.UNKNOWN]
        if len(known) == 2 and known[0].sql("duckdb") != known[1].sql("duckdb"):
            raise NotOnSpark(
                f"a UNION BY NAME matches {item.alias_or_name} of types {known[1].sql('duckdb')} and "
                f"{known[0].sql('duckdb')}; cast them to one type"
            )


def _by_name(union: exp.Union) -> exp.Query:
    """UNION [ALL] BY NAME as a positional union: each side lists every column, NULL where absent."""
    left, right = union.left, union.right
    left_names, right_names = list(left.named_selects), list(right.named_selects)
    names = left_names + [n for n in right_names if n.lower() not in {x.lower() for x in left_names}]

    def padded(side: exp.Query, have: list[str]) -> exp.Query:
        lowered = {n.lower(): n for n in have}
        items = [
            exp.column(lowered[n.lower()], quoted=True)
            if n.lower() in lowered
            else exp.alias_(exp.Null(), n, quoted=True)
            for n in names
        ]
        return exp.select(*items).from_(side.subquery("_side"))

    return exp.Union(
        this=padded(left, left_names),
        expression=padded(right, right_names),
        distinct=union.args.get("distinct"),
    )


def _rewrite_all(root: exp.Query) -> exp.Query:
    """Apply `_rewrite` bottom-up, so a rewritten node's parent sees its rewritten children; a
    replacement keeps the type the node was annotated with."""
    for node in reversed(list(root.dfs())):
        new = _rewrite(node)
        if new is node:
            continue
        if new.type is None or new.type.this == exp.DataType.Type.UNKNOWN:
            new.type = node.type
        if node is root:
            return new  # type: ignore[return-value]
        node.replace(new)
    return root


def _nested_unions_agree(query: exp.Query) -> None:
    """A union inside a query (a CTE, a subquery) must have sides of one type column by column."""
    for union in query.find_all(exp.Union):
        if isinstance(union.parent, exp.Union):
            continue
        sides = [leaf for leaf in _union_leaves(union) if isinstance(leaf, exp.Select)]
        columns = [[item.type for item in side.expressions] for side in sides]
        for position in zip(*columns, strict=False):
            known = {t.sql("duckdb") for t in position if t is not None and t.this != T.UNKNOWN}
            if len(known) > 1:
                raise NotOnSpark(
                    f"a UNION inside the query mixes the types {', '.join(sorted(known))} in one column; "
                    "cast them to one type"
                )


def _in_top_chain(union: exp.Union, top: exp.Expr) -> bool:
    """Whether `union` is the query itself or a link of its chain of unions (whose leaves
    `_typed_union` casts to the result's types)."""
    node: exp.Expr = union
    while node is not top:
        if not isinstance(node.parent, exp.Union):
            return False
        node = node.parent
    return True


def _union_leaves(query: exp.Expr) -> list[exp.Expr]:
    if isinstance(query, exp.Union):
        return _union_leaves(query.left) + _union_leaves(query.right)
    return [query]


def _typed_union(union: exp.Union, output: Schema) -> None:
    """Cast every side of a union to the types DuckDB gave its result: Spark would otherwise pick
    its own common type (a DATE for DATE and VARCHAR, failing on text that is not a date)."""
    for leaf in _union_leaves(union):
        if not isinstance(leaf, exp.Select) or len(leaf.expressions) != len(output):
            raise NotOnSpark("a UNION whose sides could not be matched to its result's columns")
        leaf.set(
            "expressions",
            [
                exp.alias_(exp.Cast(this=item.unalias().copy(), to=_spark_data_type(t)), n, quoted=True)
                for item, (n, t) in zip(leaf.expressions, output, strict=True)
            ],
        )


def _spark_data_type(duckdb_type: str) -> exp.DataType:
    return exp.DataType.build(spark_type(duckdb_type), dialect="spark")


def to_spark(query: exp.Query, schemas: Mapping[str, Schema], output: Schema | None = None) -> str:
    """Spark SQL meaning what `query` means on DuckDB, or NotOnSpark. `output` is the result's
    schema on DuckDB, when known (a step's)."""
    vet(query)
    done = qualified(query, schemas)
    unions = [u for u in done.find_all(exp.Union) if u.args.get("by_name")]
    for union in reversed(unions):  # innermost first: a chain nests to the left
        if not (output and _in_top_chain(union, done)):  # the result's types are cast at the top
            _same_types_by_name(union)
        positional = _by_name(union)
        if union is done:
            done = positional
        else:
            union.replace(positional)
    if not (isinstance(done, exp.Union) and output) and any(
        isinstance(u, exp.Union) and not isinstance(u.parent, exp.Union) for u in done.find_all(exp.Union)
    ):
        _nested_unions_agree(done)
    done = _rewrite_all(done)
    if isinstance(done, exp.Union) and output:  # after the rewrites: these casts are ours, typed by DuckDB
        _typed_union(done, output)
    try:
        return done.sql(dialect="spark")
    except SqlglotError as exc:
        raise NotOnSpark(str(exc).splitlines()[0]) from None


T = exp.DataType.Type
# Canonical types Spark lacks, and the Spark type that holds every value of theirs.
_TYPE_SWAPS: dict[Any, str] = {
    T.INT128: "DECIMAL(38, 0)",
    T.UBIGINT: "DECIMAL(20, 0)",
    T.UINT: "BIGINT",
    T.USMALLINT: "INT",
    T.UTINYINT: "SMALLINT",
    T.TIMESTAMPTZ: "TIMESTAMP_LTZ",
    T.TIMESTAMP_S: "TIMESTAMP_NTZ",
    T.TIMESTAMP_MS: "TIMESTAMP_NTZ",
    T.TIMESTAMP_NS: "TIMESTAMP_NTZ",
    T.JSON: "STRING",
    T.UUID: "STRING",
}
_NO_SPARK_TYPE = frozenset({T.TIME, T.TIMETZ, T.INTERVAL, T.BIGNUM, T.UINT128, T.BIT, T.UNION})


def spark_type(duckdb_type: str) -> str:
    """A canonical (DuckDB) column type written as a Spark type, or NotOnSpark."""

    def swap(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.DataType):
            return node
        if node.this in _NO_SPARK_TYPE:
            raise NotOnSpark(f"the type {node.sql('duckdb')} has no Spark equivalent")
        if node.this in _TYPE_SWAPS:
            return exp.DataType.build(_TYPE_SWAPS[node.this], dialect="spark")
        return node

    built = exp.DataType.build(duckdb_type, dialect="duckdb")
    return built.transform(swap).sql(dialect="spark")
