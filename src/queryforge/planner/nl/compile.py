"""Turn the intermediate form into a pipeline (extract steps, one SQL step, checks, load) and a reading.

The SQL is written for DuckDB over the extract steps and goes through the same allow-list gate
as SQL a person writes. The reading says in plain words what the pipeline will do, so a person
can compare it with what they meant before anything is published.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from . import ir
from .link import is_numeric_type, is_temporal_type
from .render import bound, literal, qident, shown

UNIT_SQL = {
    "hour": "hour({c})",
    "week": "date_trunc('week', {c})",
    "month": "date_trunc('month', {c})",
    "quarter": "date_trunc('quarter', {c})",
    "year": "year({c})",
    "weekday": "dayname({c})",
    "quarter_number": "quarter({c})",
    "month_number": "month({c})",
    "week_number": "week({c})",
    "day": "CAST({c} AS DATE)",
}
# parts of a text column: the first letter of a name, the two sides of an e-mail address
TEXT_PARTS = {
    "initial": "left({c}, 1)",
    "email_user": "split_part({c}, '@', 1)",
    "email_domain": "split_part({c}, '@', 2)",
}
OPS = {"=": "=", "<>": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
NEGATED = {"=": "<>", "<>": "=", ">": "<=", ">=": "<", "<": ">=", "<=": ">"}
WORDS = {
    "=": "is",
    "<>": "is not",
    ">": "over",
    ">=": "at least",
    "<": "under",
    "<=": "at most",
    "in": "is one of",
    "not_in": "is none of",
    "ilike": "matches",
}


class Compiler:
    def __init__(self, req: ir.Request) -> None:
        self.req = req
        self.qualified = bool(req.joins) or any(isinstance(w, ir.Exists) for w in req.where)
        self.types: dict[tuple[str, str], str] = {}
        for u in req.sources:
            for c, t in u.source.columns:
                self.types[(u.alias, c.lower())] = t.upper()

    # ------------------------------------------------------------ pieces
    def c(self, col: ir.Col) -> str:
        return col.sql(self.qualified)

    def key(self, k: ir.Col | str, *, output: bool = False) -> str:
        """An ordering key: a column (of the sources, or of the output), or a measure alias."""
        if isinstance(k, ir.Col):
            return qident(k.name) if output else self.c(k)
        return _key(k)

    def type_of(self, col: ir.Col) -> str:
        return self.types.get((col.alias, col.name.lower()), "")

    def as_date(self, col: ir.Col) -> str:
        t = self.type_of(col)
        return self.c(col) if is_temporal_type(t) else f"CAST({self.c(col)} AS DATE)"

    def value(self, col: ir.Col, v: Any) -> str:
        if isinstance(v, float) and not is_numeric_type(self.type_of(col)) and self.type_of(col):
            return literal(str(int(v)) if v.is_integer() else str(v))
        return literal(v)

    def cond(self, cond: ir.Cond) -> str:
        if isinstance(cond, ir.Compare):
            c = self.c(cond.col)
            if cond.op == "in":
                return f"{c} IN ({', '.join(self.value(cond.col, v) for v in cond.value)})"
            if cond.op == "ilike":
                return f"{c} ILIKE {literal(cond.value)}"
            return f"{c} {OPS[cond.op]} {self.value(cond.col, cond.value)}"
        if isinstance(cond, ir.IsNull):
            c = self.c(cond.col)
            text = not is_numeric_type(self.type_of(cond.col)) and not is_temporal_type(
                self.type_of(cond.col)
            )
            if cond.negated:
                return f"{c} IS NOT NULL AND {c} <> ''" if text else f"{c} IS NOT NULL"
            return f"({c} IS NULL OR {c} = '')" if text else f"{c} IS NULL"
        if isinstance(cond, ir.DateRange):
            c = self.as_date(cond.col) if not is_temporal_type(self.type_of(cond.col)) else self.c(cond.col)
            parts = []
            if cond.lo is not None:
                parts.append(f"{c} >= {bound(cond.lo)}")
            if cond.hi is not None:
                parts.append(f"{c} {'<=' if cond.hi_inclusive else '<'} {bound(cond.hi)}")
            return " AND ".join(parts) or "true"
        if isinstance(cond, ir.DatePart):
            c = self.as_date(cond.col) if cond.part != "hour" else self.c(cond.col)
            fn = {"month": "month", "quarter": "quarter", "hour": "hour", "dow": "dayofweek", "year": "year"}[
                cond.part
            ]
            e = f"{fn}({c})"
            if cond.op == "between":
                lo, hi = cond.value
                if cond.part == "hour":
                    if lo <= hi:
                        return f"{e} >= {lo} AND {e} < {hi}"
                    return f"({e} >= {lo} OR {e} < {hi})"
                return f"{e} BETWEEN {lo} AND {hi}"
            if cond.op == "in":
                return f"{e} IN ({', '.join(str(v) for v in cond.value)})"
            return f"{e} {cond.op} {cond.value}"
        if isinstance(cond, ir.VersusAggregate):
            main = self.req.main
            outer = main.alias if self.qualified else main.step
            same = " AND ".join(f"qf_all.{qident(k)} = {outer}.{qident(k)}" for k in cond.within)
            scope = f" WHERE {same}" if same else ""
            whole = f"(SELECT {cond.func}(qf_all.{qident(cond.col.name)}) FROM {main.step} AS qf_all{scope})"
            return f"{self.c(cond.col)} {OPS[cond.op]} {whole}"
        if isinstance(cond, ir.Recent):
            return f"{self.c(cond.col)} >= current_date - INTERVAL {cond.n} {cond.unit.upper()}"
        if isinstance(cond, ir.Exists):
            u = cond.source
            on = [f"{u.alias}.{qident(b)} = {self.req.main.alias}.{qident(a)}" for a, b in cond.keys]
            match = " AND ".join(on + [self.cond(w) for w in cond.where])
            exists = f"EXISTS (SELECT 1 FROM {u.step or u.alias} AS {u.alias} WHERE {match})"
            return f"NOT {exists}" if cond.negated else exists
        if isinstance(cond, ir.Not):
            inner = cond.cond
            if isinstance(inner, ir.Compare) and inner.op in NEGATED:
                return self.cond(ir.Compare(inner.col, NEGATED[inner.op], inner.value))
            if isinstance(inner, ir.Compare) and inner.op == "in":
                c = self.c(inner.col)
                return f"{c} NOT IN ({', '.join(self.value(inner.col, v) for v in inner.value)})"
            if isinstance(inner, ir.IsNull):
                return self.cond(ir.IsNull(inner.col, not inner.negated))
            return f"NOT ({self.cond(inner)})"
        if isinstance(cond, ir.And):
            return " AND ".join(f"({self.cond(x)})" for x in cond.items)
        if isinstance(cond, ir.Or):
            return "(" + " OR ".join(f"({self.cond(x)})" for x in cond.items) + ")"
        raise TypeError(cond)

    def group_expr(self, g: ir.GroupKey) -> str:
        if g.unit is None:
            return self.c(g.col)
        if g.unit in TEXT_PARTS:
            return TEXT_PARTS[g.unit].format(c=self.c(g.col))
        if g.unit.startswith("bin_"):  # buckets of a number: 0-99 → 0, 100-199 → 100
            width = g.unit.removeprefix("bin_")
            return f"floor({self.c(g.col)} / {width}) * {width}"
        c = self.c(g.col) if is_temporal_type(self.type_of(g.col)) else f"CAST({self.c(g.col)} AS TIMESTAMP)"
        return UNIT_SQL[g.unit].format(c=c)

    def measure_expr(self, m: ir.Measure) -> str:
        e = self.bare_measure(m)
        return e if self.req.round_to is None else f"round({e}, {self.req.round_to})"

    def bare_measure(self, m: ir.Measure) -> str:
        if m.parts is not None:
            a, b = (self.bare_measure(x) for x in m.parts)
            return {
                "ratio": f"{a} / {b}",
                "change": f"{b} - {a}",
                "pct_change": f"100.0 * ({b} - {a}) / {a}",
            }[m.func]
        arg = "*" if m.col is None else ("DISTINCT " if m.distinct else "") + self.c(m.col)
        if m.func == "quantile":
            arg += f", {m.arg}"
            e = f"quantile_cont({arg})"
        else:
            e = SPANS[m.func].format(arg=arg) if m.func in SPANS else f"{m.func}({arg})"
        if m.where is not None:
            e += f" FILTER (WHERE {self.cond(m.where)})"
        if m.share in ("rate_percent", "rate_fraction"):
            # within each group: the rows that match, out of all the group's rows
            scale = "100.0 * " if m.share == "rate_percent" else "1.0 * "
            whole = f"{m.func}({arg})"
            e = f"{scale}{e} / {whole}"
        elif m.share:
            scale = "100.0 * " if m.share == "percent" else "1.0 * "
            e = f"{scale}{e} / sum({e}) OVER ()"
        return e

    # ------------------------------------------------------------ the query
    def from_clause(self) -> str:
        r = self.req
        main = r.main
        if r.union:
            parts = " UNION ALL ".join(f"SELECT * FROM {u.step}" for u in r.sources if not self.is_exists(u))
            text = f"({parts}) AS {main.alias}"
        else:
            text = f"{main.step} AS {main.alias}" if self.qualified else main.step
        for j in r.joins:
            right = f"(SELECT DISTINCT * FROM {j.right.step})" if j.right.dedupe else j.right.step
            on = " AND ".join(
                [f"{self.c(a)} = {self.c(b)}" for a, b in j.keys] + [self.cond(w) for w in j.on]
            )
            text += f" {'LEFT ' if j.how == 'left' else ''}JOIN {right} AS {j.right.alias} ON {on}"
        return text

    def is_exists(self, u: ir.SourceUse) -> bool:
        return any(isinstance(w, ir.Exists) and w.source is u for w in self.req.where)

    def where(self) -> str:
        conds = [self.cond(w) for w in self.req.where]
        return f" WHERE {' AND '.join(conds)}" if conds else ""

    def row_columns(self) -> list[tuple[str, str]]:
        """(SQL expression, output name) of a row-level result."""
        r = self.req
        main = r.main
        if r.select:
            base = [(self.c(c), c.name) for c in r.select]
        else:
            base = [(self.c(ir.Col(main.alias, c)), c) for c in main.source.column_names]
            base += [
                (self.c(c), c.name) for c in r.extra if c.name.lower() not in {n.lower() for _, n in base}
            ]
        base = [(e, n) for e, n in base if n not in r.exclude]
        out = []
        for e, n in base:
            if n in r.fills:
                v = r.fills[n]
                t = self.types.get((main.alias, n.lower()), "")
                inner = e if is_numeric_type(t) else f"NULLIF({e}, '')"
                e = f"coalesce({inner}, {literal(v)})"
            out.append((e, r.renames.get(n, n)))
        for name, expr in r.derived.items():
            out = [(e, n) for e, n in out if n != name]
            out.append((expr, name))
        if r.running is not None:
            run = r.running
            part = f"PARTITION BY {', '.join(self.c(p) for p in run.partition)} " if run.partition else ""
            arg = "*" if run.measure.col is None else self.c(run.measure.col)
            func = run.measure.func if run.frame is None else run.window
            frame = "" if run.frame is None else f" ROWS BETWEEN {run.frame - 1} PRECEDING AND CURRENT ROW"
            out.append((f"{func}({arg}) OVER ({part}ORDER BY {self.c(run.order)}{frame})", run.alias))
        return out

    def sql(self) -> str:
        r = self.req
        if r.cohort:
            return self.cohort_sql(*r.cohort)
        if r.sequence:
            return self.sequence_sql(*r.sequence)
        if r.overlay_key:
            return self.overlay_sql(r.overlay_key)
        if r.aggregated and r.rollup:
            return self.rollup_sql(*r.rollup)
        if r.aggregated:
            return self.aggregate_sql()
        cols = self.row_columns()
        select = ", ".join(
            e if e == qident(n) or e.endswith("." + qident(n)) else f"{e} AS {qident(n)}" for e, n in cols
        )
        body = f"FROM {self.from_clause()}{self.where()}"
        if r.distinct and not r.distinct_keys:
            sql = f"SELECT DISTINCT {select} {body}"
        elif r.distinct_keys or (r.rank and r.rank.partition):
            if r.rank and r.rank.partition:
                part = ", ".join(self.group_expr(ir.GroupKey(p, r.rank.unit)) for p in r.rank.partition)
                order = ", ".join(f"{self.key(k)} {'DESC' if d else 'ASC'}" for k, d in r.rank.by)
                n = r.rank.n
            else:
                part = ", ".join(self.c(p) for p in r.distinct_keys)
                order, n = part, 1
            names = ", ".join(qident(nm) for _, nm in cols)
            sql = (
                f"SELECT {names} FROM (SELECT {select}, row_number() OVER (PARTITION BY {part} ORDER BY "
                f"{order}) "
                f"AS qf_rank {body}) AS ranked WHERE qf_rank <= {n}"
            )
        else:
            sql = f"SELECT {select} {body}"
        keys = list(r.order)
        limit = ""
        if r.rank and not r.rank.partition:
            keys = list(r.rank.by) + [o for o in keys if o[0] not in {k for k, _ in r.rank.by}]
            limit = f" LIMIT {r.rank.n}"
        if keys:
            sql += " ORDER BY " + ", ".join(f"{self.key(k)} {'DESC' if d else 'ASC'}" for k, d in keys)
        return sql + limit

    def sequence_sql(self, first: ir.Cond, then: ir.Cond, key: ir.Col, when: ir.Col) -> str:
        """Each key once that has a row of `first` and a later row of `then` (a signup, then a purchase)."""
        main = self.req.main
        cond_a = self.cond(_realias(first, main.alias, "qf_a"))
        cond_b = self.cond(_realias(then, main.alias, "qf_b"))
        k, t = qident(key.name), qident(when.name)
        return (
            f"SELECT DISTINCT qf_a.{k} FROM {main.step} AS qf_a WHERE {cond_a} AND EXISTS (SELECT 1 FROM "
            f"{main.step} AS qf_b WHERE qf_b.{k} = qf_a.{k} AND {cond_b} AND qf_b.{t} > qf_a.{t})"
        )

    def cohort_sql(self, key: ir.Col, when: ir.Col, unit: str) -> str:
        """Each entity once, at the period of its first row; then how many entities per period."""
        firsts = (
            f"SELECT {self.c(key)} AS qf_key, min({self.c(when)}) AS qf_first FROM {self.from_clause()}"
            f"{self.where()} GROUP BY {self.c(key)}"
        )
        period = UNIT_SQL[unit].format(c="qf_first")
        count = qident(key.name + "_count")
        return f"SELECT {period} AS {qident(unit)}, count(*) AS {count} FROM ({firsts}) AS firsts GROUP BY 1"

    def overlay_sql(self, key: str) -> str:
        """The update rows, then the base rows whose key they do not hold."""
        base, new = self.req.sources[0], self.req.sources[1]
        cols = ", ".join(qident(c) for c in base.source.column_names)
        k = qident(key)
        return (
            f"SELECT {cols} FROM {new.step} UNION ALL SELECT {cols} FROM {base.step} AS qf_base "
            f"WHERE NOT EXISTS (SELECT 1 FROM {new.step} AS qf_new WHERE qf_new.{k} = qf_base.{k})"
        )

    def rollup_sql(self, func: str, outer: list[ir.GroupKey]) -> str:
        """'the average number of orders per customer, per year': the measures per inner group, then
        `func` of them per outer group."""
        inner = self.aggregate_sql()
        r = self.req
        keys = [qident(g.name) for g in outer]
        ms = [
            f"{func}({qident(m.alias or m.func)}) AS {qident(f'{func}_{m.alias or m.func}')}"
            for m in r.measures
        ]
        sql = f"SELECT {', '.join(keys + ms)} FROM ({inner}) AS per_group"
        return sql + (f" GROUP BY {', '.join(keys)}" if keys else "")

    def aggregate_sql(self) -> str:
        r = self.req
        keys = [(self.group_expr(g), g.name) for g in r.group]
        ms = [(self.measure_expr(m), m.alias or m.func) for m in r.measures]
        names: list[str] = []
        parts = []
        for e, n in keys + ms:
            n2, k = n, 2
            while n2 in names:
                n2, k = f"{n}_{k}", k + 1
            names.append(n2)
            parts.append(e if e == qident(n2) or e.endswith("." + qident(n2)) else f"{e} AS {qident(n2)}")
        if r.running is not None:
            # a running total over the groups: sum of the per-group measure, in the order of the groups
            run = r.running
            order = next(
                (self.group_expr(g) for g in r.group if g.col == run.order),
                keys[0][0] if keys else self.c(run.order),
            )
            part = [self.group_expr(g) for g in r.group if g.col in run.partition]
            over = (f"PARTITION BY {', '.join(part)} " if part else "") + f"ORDER BY {order}"
            if run.frame is not None:  # a moving window: this group and the frame - 1 before it
                over += f" ROWS BETWEEN {run.frame - 1} PRECEDING AND CURRENT ROW"
            fn = run.window
            parts.append(f"{fn}({self.measure_expr(run.measure)}) OVER ({over}) AS {qident(run.alias)}")
        sql = f"SELECT {', '.join(parts)} FROM {self.from_clause()}{self.where()}"
        if keys:
            sql += " GROUP BY " + ", ".join(e for e, _ in keys)
        if r.having:
            by_alias = {m.alias: self.measure_expr(m) for m in r.measures}
            sql += " HAVING " + " AND ".join(
                f"{by_alias[h.measure]} {h.op} {literal(h.value)}" for h in r.having
            )
        ordering = list(r.order)
        limit = ""
        if r.rank:
            ordering = list(r.rank.by) + ordering
            limit = f" LIMIT {r.rank.n}"
        if ordering:
            sql += " ORDER BY " + ", ".join(
                f"{self.key(k, output=True)} {'DESC' if d else 'ASC'}" for k, d in ordering
            )
        return sql + limit

    def plain_load(self) -> bool:
        r = self.req
        return not (
            r.aggregated
            or r.cohort
            or r.sequence
            or r.overlay_key
            or r.where
            or r.joins
            or r.union
            or r.rank
            or r.order
            or r.running
            or r.derived
            or r.fills
            or r.select
            or r.extra
            or r.exclude
            or r.renames
            or r.distinct
        ) and not any(isinstance(w, ir.Exists) for w in r.where)


# measures over the two ends of a column: the spread of prices, the days from first to last order
SPANS = {
    "range": "max({arg}) - min({arg})",
    "days": "date_diff('day', min({arg}), max({arg}))",
}


def _realias(cond: Any, old: str, new: str) -> Any:
    """A condition on the columns of `old` moved onto the alias `new`."""
    if isinstance(cond, ir.Col):
        return ir.Col(new, cond.name) if cond.alias == old else cond
    if isinstance(cond, list):
        return [_realias(c, old, new) for c in cond]
    if dataclasses.is_dataclass(cond) and not isinstance(cond, type):
        return dataclasses.replace(
            cond, **{f.name: _realias(getattr(cond, f.name), old, new) for f in dataclasses.fields(cond)}
        )
    return cond


def _key(k: str) -> str:
    return qident(k) if re.fullmatch(r"[A-Za-z_]\w*", k) else k


def pipeline(req: ir.Request) -> dict[str, Any]:
    comp = Compiler(req)
    steps: list[dict[str, Any]] = []
    read = {req.main.alias} | {j.right.alias for j in req.joins}
    read |= {w.source.alias for w in req.where if isinstance(w, ir.Exists)}
    if req.union or req.overlay_key:
        read |= {u.alias for u in req.sources}
    for u in req.sources:
        if u.alias not in read:
            continue
        if not u.step:
            u.step = u.alias
        steps.append({"id": u.step, "extract": u.source.extract_spec()})
    last = req.main.step
    if not comp.plain_load():
        steps.append({"id": "result", "sql": comp.sql()})
        last = "result"
    if req.checks:
        steps.append({"id": "checked", "check": {"input": last, "rules": req.checks}})
    load: dict[str, Any] = {"input": last, "table": req.target, "mode": req.mode}
    if req.keys:
        load["keys"] = req.keys
    steps.append({"id": "load", "load": load})
    return {"name": re.sub(r"\W", "_", f"ask_{req.target}").lower(), "steps": steps}


# ------------------------------------------------------------ the reading in plain words
def reading(req: ir.Request) -> str:
    parts: list[str] = []
    src = req.main.source.name
    if req.union:
        src = " + ".join(u.source.name for u in req.sources if not _exists(req, u))
    if req.overlay_key:
        src += (
            f" with the rows of {req.sources[1].source.name} in place of those of the same {req.overlay_key}"
        )
        src += ", and its new ones added"
    for j in req.joins:
        src += f" joined with {j.right.source.name} on {', '.join(b.name for _, b in j.keys)}"
    parts.append(src)
    if req.where:
        parts.append("rows where " + " and ".join(cond_words(w) for w in req.where))
    if req.fills:
        parts.append(", ".join(f"missing {c} filled with {shown(v)}" for c, v in req.fills.items()))
    if req.derived:
        parts.append(", ".join(f"new column {n} = {e}" for n, e in req.derived.items()))
    if req.running:
        run = req.running
        what = "count" if run.measure.col is None else run.measure.col.name
        per = f" per {', '.join(p.name for p in run.partition)}" if run.partition else ""
        kind = (
            f"running {run.measure.func}"
            if run.frame is None
            else f"moving {run.window} over {run.frame} rows"
        )
        parts.append(f"{kind} of {what} by {run.order.name}{per} as {run.alias}")
    if req.sequence:
        first, then, key, when = req.sequence
        parts.append(
            f"each {key.name} once that has a row where {cond_words(first)} and a later one "
            f"(by {when.name}) where {cond_words(then)}"
        )
    if req.cohort:
        key, when, unit = req.cohort
        parts.append(
            f"each {key.name} once, at the {unit} of its first {when.name} → number of them per {unit}"
        )
    if req.aggregated:
        ms = ", ".join(measure_words(m) for m in req.measures)
        per = f" per {', '.join(group_words(g) for g in req.group)}" if req.group else ""
        parts.append(ms + per)
        if req.round_to is not None:
            parts.append(f"rounded to {req.round_to} decimals")
        if req.rollup:
            func, outer = req.rollup
            over = f" per {', '.join(group_words(g) for g in outer)}" if outer else " over all of them"
            parts.append(f"{'average' if func == 'avg' else func} of those{over}")
        if req.having:
            parts.append(
                "only groups where "
                + " and ".join(f"{h.measure} {WORDS.get(h.op, h.op)} {shown(h.value)}" for h in req.having)
            )
    if req.rank:
        by = ", ".join(f"{_name(k)} {'highest' if d else 'lowest'} first" for k, d in req.rank.by)
        per = (
            f" per {', '.join(group_words(ir.GroupKey(p, req.rank.unit)) for p in req.rank.partition)}"
            if req.rank.partition
            else ""
        )
        parts.append(f"first {req.rank.n} row{'s' if req.rank.n != 1 else ''}{per} by {by}")
    if req.distinct:
        keys = f" by {', '.join(c.name for c in req.distinct_keys)}" if req.distinct_keys else ""
        parts.append(f"duplicates removed{keys}")
    if req.select:
        parts.append("columns " + ", ".join(c.name for c in req.select))
    elif req.extra:
        parts.append(f"all {req.main.source.name} columns plus " + ", ".join(c.name for c in req.extra))
    if req.exclude:
        parts.append("without columns " + ", ".join(req.exclude))
    if req.renames:
        parts.append(", ".join(f"{a} renamed to {b}" for a, b in req.renames.items()))
    if req.order:
        parts.append(
            "sorted by " + ", ".join(f"{_name(k)} {'descending' if d else 'ascending'}" for k, d in req.order)
        )
    if req.checks:
        parts.append("checked: " + ", ".join(next(iter(c)) for c in req.checks))
    target = {
        "replace": f"{'replace table' if req.mode_said else 'new table'} {req.target}",
        "append": f"append to {req.target}",
        "merge": f"merge into {req.target} on {', '.join(req.keys)}",
    }[req.mode]
    if not req.target_said:
        target += " (name chosen by the planner)"
    parts.append(target)
    return " → ".join(parts)


def _name(k: ir.Col | str) -> str:
    return k.name if isinstance(k, ir.Col) else k.split(".")[-1]


def _exists(req: ir.Request, u: ir.SourceUse) -> bool:
    return any(isinstance(w, ir.Exists) and w.source is u for w in req.where)


def group_words(g: ir.GroupKey) -> str:
    return g.col.name if g.unit is None else f"{g.unit} of {g.col.name}"


def measure_words(m: ir.Measure) -> str:
    if m.parts is not None:
        a, b = (measure_words(x) for x in m.parts)
        return {
            "ratio": f"({a}) divided by ({b})",
            "change": f"change from ({a}) to ({b})",
            "pct_change": f"percentage change from ({a}) to ({b})",
        }[m.func]
    if m.col is None:
        text = "number of rows"
    else:
        fn = {
            "sum": "total",
            "avg": "average",
            "min": "lowest",
            "max": "highest",
            "count": "number of",
            "range": "highest minus lowest",
            "stddev_samp": "standard deviation of",
            "var_samp": "variance of",
            "quantile": f"{round((m.arg or 0) * 100)}th percentile of",
            "days": "days from first to last",
        }.get(m.func, m.func)
        text = f"{fn} {'distinct ' if m.distinct else ''}{m.col.name}"
    if m.where is not None:
        text += f" where {cond_words(m.where)}"
    if m.share in ("rate_percent", "rate_fraction"):
        whole = measure_words(ir.Measure(m.func, m.col, distinct=m.distinct))
        text = f"({text}) as a {'percentage' if m.share == 'rate_percent' else 'fraction'} of the {whole}"
    elif m.share:
        text = f"{'percentage' if m.share == 'percent' else 'share'} of all ({text})"
    return text


def cond_words(c: ir.Cond) -> str:
    if isinstance(c, ir.Compare):
        if c.op == "in":
            return f"{c.col.name} is one of {', '.join(shown(v) for v in c.value)}"
        if c.op == "ilike":
            return f"{c.col.name} matches {shown(c.value)}"
        return f"{c.col.name} {WORDS[c.op]} {shown(c.value)}"
    if isinstance(c, ir.IsNull):
        return f"{c.col.name} {'has a value' if c.negated else 'is missing'}"
    if isinstance(c, ir.DateRange):
        lo = f"from {shown(c.lo) if not isinstance(c.lo, str) else c.lo}" if c.lo is not None else ""
        hi = f"before {shown(c.hi) if not isinstance(c.hi, str) else c.hi}" if c.hi is not None else ""
        return f"{c.col.name} {' '.join(x for x in (lo, hi) if x)}"
    if isinstance(c, ir.DatePart):
        return f"{c.part} of {c.col.name} {c.op} {c.value}"
    if isinstance(c, ir.Recent):
        return f"{c.col.name} in the last {c.n} {c.unit}s"
    if isinstance(c, ir.VersusAggregate):
        fn = {"avg": "average", "min": "lowest", "max": "highest"}.get(c.func, c.func)
        scope = f" of the rows with the same {', '.join(c.within)}" if c.within else " of all rows"
        return f"{c.col.name} {WORDS.get(c.op, c.op)} the {fn} {c.col.name}{scope}"
    if isinstance(c, ir.Exists):
        extra = f" ({' and '.join(cond_words(w) for w in c.where)})" if c.where else ""
        return f"{'no' if c.negated else 'a'} matching row in {c.source.source.name}{extra}"
    if isinstance(c, ir.Not):
        inner = c.cond
        if isinstance(inner, ir.Compare) and inner.op == "=":
            return f"{inner.col.name} is not {shown(inner.value)}"
        if isinstance(inner, ir.Compare) and inner.op == "in":
            return f"{inner.col.name} is none of {', '.join(shown(v) for v in inner.value)}"
        return f"not ({cond_words(inner)})"
    if isinstance(c, ir.And):
        return " and ".join(cond_words(x) for x in c.items)
    if isinstance(c, ir.Or):
        return "(" + " or ".join(cond_words(x) for x in c.items) + ")"
    return str(c)
