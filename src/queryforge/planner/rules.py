"""The offline, deterministic planner: plain English to a pipeline, by rules over the catalog.

It reads a request the way a data engineer would: which sources (files or tables), which target
table and load mode, and which operations (filters, column choices, renames, derived columns,
duplicates, unions, joins, aggregates, top-N, checks). Names are matched against the catalog
with fuzzy matching; when the request is ambiguous it asks instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz, process

from .context import PlannerContext, Source
from .draft import Draft, PlannerQuestion

FILE_RE = re.compile(
    r"(?<![\w/.-])((?:[\w.-]+/)*[\w-][\w.-]*\.(?:csv|tsv|ndjson|jsonl|json|parquet|sqlite3?|db|duckdb)"
    r"(?:\.gz)?)\b",
    re.I,
)
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
QUALIFIED = rf"{IDENT}(?:\.{IDENT})?"  # table, or connection.table
NUMBER = r"-?\d+(?:\.\d+)?"
STOP = {
    "the",
    "a",
    "an",
    "of",
    "and",
    "or",
    "with",
    "from",
    "into",
    "to",
    "in",
    "on",
    "by",
    "per",
    "for",
    "all",
    "only",
    "rows",
    "row",
    "table",
    "file",
    "csv",
    "each",
    "their",
    "its",
    "is",
    "are",
    "be",
    "that",
    "which",
    "where",
    "whose",
    "keeping",
    "keep",
    "load",
    "import",
    "create",
    "put",
    "count",
    "number",
    "total",
    "column",
    "columns",
    "data",
    "records",
    "record",
    "then",
    "as",
    "it",
    "them",
    "new",
    "make",
    "sure",
}
AGG_WORDS = {
    "sum": "sum",
    "total": "sum",
    "average": "avg",
    "avg": "avg",
    "mean": "avg",
    "maximum": "max",
    "max": "max",
    "highest": "max",
    "minimum": "min",
    "min": "min",
    "lowest": "min",
}
COMPARATORS = [
    (r"(?:is )?(?:over|above|more than|greater than|bigger than|larger than|exceeding|exceeds|>)", ">"),
    (r"(?:is )?(?:under|below|less than|smaller than|lower than|<)", "<"),
    (r"(?:is )?(?:at least|no less than|>=)", ">="),
    (r"(?:is )?(?:at most|no more than|up to|<=)", "<="),
]


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def qident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def singular(word: str) -> str:
    w = word.lower()
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("ses", "xes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


@dataclass
class Columns:
    """Column vocabulary of the sources a request reads, for matching words to columns."""

    sources: list[Source]

    @property
    def names(self) -> list[str]:
        seen: list[str] = []
        for s in self.sources:
            for c in s.column_names:
                if c not in seen:
                    seen.append(c)
        return seen

    def type_of(self, column: str) -> str:
        for s in self.sources:
            t = s.type_of(column)
            if t:
                return t
        return ""

    def is_numeric(self, column: str) -> bool:
        return any(
            k in self.type_of(column) for k in ("INT", "DOUBLE", "DECIMAL", "FLOAT", "REAL", "NUMERIC")
        )

    def is_temporal(self, column: str) -> bool:
        return any(k in self.type_of(column) for k in ("DATE", "TIME"))

    def domain(self, column: str) -> tuple[str, ...]:
        for s in self.sources:
            for c, values in s.domains.items():
                if c.lower() == column.lower():
                    return values
        return ()

    def find(self, phrase: str, *, numeric: bool | None = None) -> str | None:
        """The column a phrase names: exact, spaced (order date), entity (customers -> customer_id), fuzzy."""
        p = phrase.strip().lower().strip("'\"`")
        if not p:
            return None
        candidates = [c for c in self.names if numeric is None or self.is_numeric(c) == numeric]
        by_lower = {c.lower(): c for c in candidates}
        for variant in (p, p.replace(" ", "_"), singular(p), singular(p).replace(" ", "_")):
            if variant in by_lower:
                return by_lower[variant]
        words = p.split()
        if words:
            last = singular(words[-1])
            for suffix in ("_id", "_key", "_code", "_name"):
                if last + suffix in by_lower:
                    return by_lower[last + suffix]
            for w in reversed(words):
                if w in by_lower:
                    return by_lower[w]
                if singular(w) in by_lower:
                    return by_lower[singular(w)]
        match = process.extractOne(p.replace(" ", "_"), candidates, scorer=fuzz.ratio, score_cutoff=85)
        return match[0] if match else None

    def date_column(self) -> str | None:
        temporal = [c for c in self.names if self.is_temporal(c)]
        preferred = [c for c in temporal if not re.search(r"updated|created|modified|loaded", c)]
        pick = preferred or temporal
        return pick[0] if pick else None

    def value_column(self, value: str) -> str | None:
        """The low-cardinality column whose values include `value` (case-insensitive)."""
        hits = [c for c in self.names if value.lower() in {v.lower() for v in self.domain(c)}]
        return hits[0] if len(hits) == 1 else None

    def canonical_value(self, column: str, value: str) -> str:
        for v in self.domain(column):
            if v.lower() == value.lower():
                return v
        return value


class RulesPlanner:
    """Draft a pipeline from a request and the catalog."""

    name = "rules"

    def draft(self, request: str, ctx: PlannerContext) -> Draft:
        refuse_in_place_changes(request)
        return _Drafting(request, ctx).run()


# A request that starts by asking to change data in place. Pipelines only read sources and load
# results into a target; they never delete, drop, truncate or update, so the planner says so
# instead of drafting a load that would quietly do something else (or nothing).
IN_PLACE = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+|i want to\s+|let'?s\s+)?"
    r"(delete|drop|truncate|wipe|erase|purge|destroy|clear|empty|update|alter|insert|overwrite)\b",
    re.I,
)


def refuse_in_place_changes(request: str) -> None:
    match = IN_PLACE.match(request)
    if match:
        raise PlannerQuestion(
            f"I can't {match.group(1).lower()} data in place: a pipeline reads its sources and loads "
            "its result into a target table, and never deletes, drops or updates a table",
            hint="say what to keep and where to put it, e.g. 'Load customers where active is true "
            "into active_customers'",
        )


class _Drafting:
    def __init__(self, request: str, ctx: PlannerContext) -> None:
        self.text = " ".join(request.strip().rstrip(".").split())
        self.low = self.text.lower()
        self.ctx = ctx
        self.notes: list[str] = []
        self.steps: list[dict[str, Any]] = []

    # ------------------------------------------------------------ sources and target
    def resolve_file(self, mention: str) -> Source | None:
        files = self.ctx.files()
        m = mention.lower().removeprefix("./")
        for s in files:
            if s.path and (s.path.lower() == m or s.path.lower().endswith("/" + m)):
                return s
        base = m.rsplit("/", 1)[-1]
        names = {s.path.rsplit("/", 1)[-1].lower(): s for s in files if s.path}
        if base in names:
            return names[base]
        same_ext = {n: s for n, s in names.items() if n.rsplit(".", 1)[-1] == base.rsplit(".", 1)[-1]}
        match = process.extractOne(base, list(same_ext), scorer=fuzz.ratio, score_cutoff=80)
        if match:
            self.notes.append(f"read {same_ext[match[0]].path} for '{mention}' (closest file name)")
            return same_ext[match[0]]
        return None

    def sources(self) -> list[Source]:
        found: list[Source] = []
        for m in FILE_RE.finditer(self.text):
            mention = m.group(1)
            if mention.lower().endswith((".sqlite", ".sqlite3", ".db", ".duckdb")):
                tm = re.search(
                    rf"\b(?:the\s+)?({IDENT})\s+table\s+(?:from|in|of)\s+{re.escape(mention)}",
                    self.text,
                    re.I,
                ) or re.search(rf"{re.escape(mention)}\W+(?:table\s+)?({IDENT})", self.text, re.I)
                table = tm.group(1) if tm else None
                db = [
                    s
                    for s in self.ctx.tables()
                    if s.path and s.path.lower().endswith(mention.lower().rsplit("/", 1)[-1])
                ]
                hit = next((s for s in db if table and s.table and s.table.lower() == table.lower()), None)
                if hit is None and len(db) == 1:
                    hit = db[0]
                if hit is None:
                    raise PlannerQuestion(
                        f"Which table of {mention} should I read?",
                        hint="name it: 'the <table> table from " + mention + "'",
                    )
                found.append(hit)
                continue
            source = self.resolve_file(mention)
            if source is None:
                path = mention if "/" in mention else f"{self.ctx.data_dir}/{mention}"
                source = Source(name=mention, kind="file", columns=(), path=path)
                self.notes.append(f"no file matches '{mention}' in the workspace")
            found.append(source)
        if not found:
            found = self.table_sources()
        return found

    def table_sources(self) -> list[Source]:
        """A table named in the request: the target's first, then 'crm.customers' of another connection."""
        tables = [s for s in self.ctx.tables() if s.connection == self.ctx.target_connection]
        by_name = {(s.table or "").lower(): s for s in tables}
        others = [s for s in self.ctx.tables() if s.connection and s.connection != self.ctx.target_connection]
        for s in others:
            by_name.setdefault(s.name.lower(), s)  # connection.table
            if sum((o.table or "").lower() == (s.table or "").lower() for o in others) == 1:
                by_name.setdefault((s.table or "").lower(), s)  # a bare name only when it is unambiguous
        for pattern in (
            rf"\bfrom\s+(?:the\s+)?({QUALIFIED})\s+table\b",
            rf"\bfrom\s+(?:the\s+)?table\s+({QUALIFIED})\b",
            rf"\b(?:the\s+)?({QUALIFIED})\s+table\b",
            rf"\bfrom\s+(?:the\s+)?({QUALIFIED})\b",
        ):
            for m in re.finditer(pattern, self.text, re.I):
                name = m.group(1).lower()
                if name in by_name and name != self.target_name():
                    return [by_name[name]]
        raise PlannerQuestion(
            "Which file or table should I read?",
            hint="name a file in data/ (e.g. data/orders.csv) or a table ('from the orders table')",
        )

    def target_name(self) -> str | None:
        patterns = [
            rf"\binto\s+(?:the\s+|a\s+|an\s+)?(?:new\s+)?(?:table\s+)?(?:called\s+|named\s+)?[`\"']?({IDENT})[`\"']?",
            rf"\b(?:called|named)\s+[`\"']?({IDENT})",
            rf"\bsave\s+(?:it|them|that|this|the result)?\s*(?:as|to|in|into)\s+(?:the\s+)?"
            rf"(?:table\s+)?({IDENT})",
            rf"^(?:create|build|make)\s+(?:a\s+|the\s+)?(?:table\s+)?({IDENT})\b",
            rf"\b(?:append|add|insert|upsert|merge)\b.*?\bto\s+(?:the\s+)?(?:table\s+)?({IDENT})\b",
            rf"\bto\s+(?:the\s+)?({IDENT})\s+table\b",
            rf"\b(?:as|called|named)\s+(?:table\s+)?({IDENT})\s*$",
            rf"\b(?:copy|move|write|load|put|keep|store|bring)\b.*\b(?:to|in)\s+(?:the\s+)?(?:table\s+)?({IDENT})\s*$",
        ]
        for pattern in patterns:
            m = re.search(pattern, self.text, re.I)
            if m and not FILE_RE.fullmatch(m.group(1)) and m.group(1).lower() not in STOP:
                name = m.group(1)
                # "into the orders table" -> orders; "into table orders" handled by the pattern
                return name
        return None

    def mode(self) -> tuple[str, list[str]]:
        verb = re.search(r"\b(upsert|merge)\b", self.low)
        if verb:
            m = re.search(
                rf"\b(?:on|by|using|keyed by|key)\s+(?:the\s+)?(?:key\s+)?({IDENT})",
                self.text[verb.end() :],
                re.I,
            )
            return "merge", [m.group(1)] if m else []
        if re.search(r"\b(append|add)\b", self.low) and re.search(r"\bto\b", self.low):
            return "append", []
        return "replace", []

    # ------------------------------------------------------------ step helpers
    def add(self, step_id: str, kind: str, body: Any) -> str:
        taken = {s["id"] for s in self.steps}
        base, n = step_id, 2
        while step_id in taken:
            step_id, n = f"{base}_{n}", n + 1
        self.steps.append({"id": step_id, kind: body})
        return step_id

    # ------------------------------------------------------------ the drafting
    def run(self) -> Draft:
        sources = self.sources()
        target = self.target_name()
        mode, keys = self.mode()
        if target is None:
            if len(sources) == 1:
                target = re.sub(r"\W", "_", sources[0].stem)
                self.notes.append(f"no target table named; loading into '{target}'")
            else:
                raise PlannerQuestion("Which table should I load the result into?", hint="say 'into <table>'")
        if mode == "merge" and not keys:
            raise PlannerQuestion(
                f"On which key should rows be merged into {target}?", hint="say 'on <key column>'"
            )
        cols = Columns(sources)
        ids = [
            self.add(re.sub(r"\W", "_", s.stem).lower() or "source", "extract", s.extract_spec())
            for s in sources
        ]
        current = ids[0]
        combine = len(sources) > 1 and re.search(
            r"\b(combine|union|stack|concatenate|merge the files|together|"
            r"append .* and)\b",
            self.low,
        )
        if len(sources) > 1 and combine:
            current = self.add("combined", "union", {"inputs": ids})
        elif len(sources) > 1:
            current = self.join(sources, ids, cols)
        current = self.filters(current, cols)
        current = self.derive(current, cols)
        current, aggregated = self.aggregate(current, cols, sources)
        current = self.top_n(current, cols, aggregated)
        if not aggregated:
            current = self.select_columns(current, cols)
            current = self.rename(current, cols)
            current = self.dedupe(current, cols)
        self.checks(current, cols)
        load: dict[str, Any] = {"input": current, "table": target, "mode": mode}
        if keys:
            load["keys"] = [cols.find(k) or k for k in keys]
        self.add("load", "load", load)
        name = re.sub(r"\W", "_", f"ask_{target}").lower()
        return Draft(
            pipeline={"name": name, "description": self.text[:200], "steps": self.steps}, notes=self.notes
        )

    # ------------------------------------------------------------ joins
    def join(self, sources: list[Source], ids: list[str], cols: Columns) -> str:
        left, right = sources[0], sources[1]
        m = re.search(rf"\bon\s+(?:the\s+)?({IDENT})", self.text)
        shared = [c for c in left.column_names if c.lower() in {x.lower() for x in right.column_names}]
        key = None
        if m and m.group(1).lower() in {c.lower() for c in shared}:
            key = next(c for c in shared if c.lower() == m.group(1).lower())
        if key is None:
            ids_shared = [c for c in shared if c.lower().endswith(("_id", "_key", "_code"))]
            if len(ids_shared) == 1 or (ids_shared and not m):
                key = ids_shared[0]
            elif len(shared) == 1:
                key = shared[0]
        if key is None:
            raise PlannerQuestion(
                f"On which column should {left.name} and {right.name} be joined?",
                hint="say 'on <column>'" + (f"; shared columns: {', '.join(shared)}" if shared else ""),
            )
        # A lookup side may repeat identical rows; they carry no information and would multiply facts.
        right_id = self.add(f"{ids[1]}_distinct", "dedupe", {"input": ids[1]})
        joined = self.add(
            "joined",
            "join",
            {
                "left": ids[0],
                "right": right_id,
                "on": [key],
                "how": "left" if re.search(r"\bleft join|keep all\b.*\brows", self.low) else "inner",
            },
        )
        keep = re.search(r"\bkeeping all (\w+) columns(?: plus| and| with)?(.*)$", self.low)
        if keep:
            extra: list[str] = []
            for word in re.findall(r"[a-z_][a-z0-9_]*", keep.group(2)):
                if word in STOP:
                    continue
                c = next(
                    (c for c in right.column_names if c.lower() == word or c.lower() == singular(word)), None
                )
                if c and c not in extra and c.lower() != key.lower():
                    extra.append(c)
            right_names = {c.lower() for c in right.column_names} - {key.lower()}
            left_names = {c.lower() for c in left.column_names}
            out = list(left.column_names) + [
                (c if c.lower() not in left_names else f"{c}_{right_id}")
                for c in extra
                if c.lower() in right_names
            ]
            joined = self.add("picked", "select", {"input": joined, "columns": out})
        return joined

    # ------------------------------------------------------------ filters
    def filters(self, current: str, cols: Columns) -> str:
        conditions: list[str] = []
        sql_cond = self.sql_condition(cols)
        if sql_cond:
            conditions.append(sql_cond)
        else:
            conditions += self.word_conditions(cols)
        conditions += self.time_conditions(cols)
        if not conditions:
            return current
        where = " AND ".join(
            f"({c})" if " OR " in c.upper() and len(conditions) > 1 else c for c in conditions
        )
        return self.add("filtered", "filter", {"input": current, "where": where})

    def sql_condition(self, cols: Columns) -> str | None:
        m = re.search(r"\bwhere\s+(.+)$", self.text, re.I)
        if not m:
            return None
        clause = m.group(1)
        if not re.search(r"(>=|<=|<>|!=|=|>|<|\bis\s+(?:not\s+)?null\b|\bin\s*\(|\blike\b)", clause, re.I):
            return None
        clause = re.split(r",\s*(?:into|and then|then)\b|\s+into\s+", clause, maxsplit=1)[0]
        from ..sql.parse import SqlProblem, UnsafeSql, column_names, parse_expression

        try:
            expression = parse_expression(clause)
        except UnsafeSql:
            # Never drop a condition the policy refuses: keep it as written, so the SQL gate
            # refuses the draft and audits why, instead of a silently wider result.
            return clause.strip()
        except SqlProblem:
            return None
        names = column_names(expression)
        if not names or any(cols.find(n) is None for n in names):
            return None
        return expression.sql(dialect="duckdb")

    def word_conditions(self, cols: Columns) -> list[str]:
        out: list[str] = []
        negate = re.search(
            r"\b(?:dropping|drop|excluding|exclude|removing|remove|without|skip|skipping|"
            r"except)\s+(?:the\s+)?(?:rows|records|orders|customers|entries|ones)?\s*(?:where|whose|"
            r"with|that)\b",
            self.low,
        )
        clause_match = re.search(
            r"\b(?:where|whose|with|that have|having|keeping|keep|only|filter)\b\s*(.*)$", self.text, re.I
        )
        clause = clause_match.group(1) if clause_match else ""
        clause = re.split(
            r"\s+(?:into|from)\s+\S+\.(?:csv|parquet|ndjson|json)\b|,\s*(?:and\s+)?(?:make sure|ensure)"
            r"|\s+and\s+(?:make sure|ensure)",
            clause,
            maxsplit=1,
            flags=re.I,
        )[0]
        # COL is empty / null
        for m in re.finditer(
            rf"\b({IDENT}(?:\s{IDENT})?)\s+(?:is|are)\s+(?:empty|blank|missing|null)\b", clause, re.I
        ):
            c = cols.find(m.group(1))
            if c:
                cond = f"{qident(c)} IS NULL OR CAST({qident(c)} AS VARCHAR) = ''"
                out.append(
                    f"{qident(c)} IS NOT NULL AND CAST({qident(c)} AS VARCHAR) <> ''" if negate else cond
                )
        # COL <comparator> NUMBER
        for pattern, op in COMPARATORS:
            for m in re.finditer(rf"\b({IDENT}(?:\s{IDENT})?)\s+{pattern}\s+\$?({NUMBER})", clause, re.I):
                c = cols.find(m.group(1), numeric=True) or self.last_numeric_word(m.group(1), cols)
                said = m.group(1).split()[-1].lower()
                if c is None or (c.lower().endswith("_id") and said != c.lower()):
                    # "orders over 250": the entity word is not a key to compare; the money column is
                    c = self.only_measure(cols) or c
                if c:
                    out.append(f"{qident(c)} {op} {m.group(2)}")
        between = re.search(rf"\b({IDENT})\s+(?:is\s+)?between\s+({NUMBER})\s+and\s+({NUMBER})", clause, re.I)
        if between and cols.find(between.group(1)):
            out.append(
                f"{qident(cols.find(between.group(1)) or '')} BETWEEN {between.group(2)} "
                f"AND {between.group(3)}"
            )
        # COL is (not) V1 (or V2 ...)
        for m in re.finditer(
            rf"\b({IDENT})\s+(?:is|are|equals?|=)\s+(not\s+)?([\w'\"-]+(?:\s*(?:,|or)\s*[\w'\"-]+)*)",
            clause,
            re.I,
        ):
            c = cols.find(m.group(1))
            values = [v.strip("'\" ") for v in re.split(r"\s*(?:,|\bor\b)\s*", m.group(3)) if v.strip("'\" ")]
            values = [v for v in values if v.lower() not in ("empty", "blank", "missing", "null", "never")]
            if (
                not c
                or not values
                or any(
                    re.fullmatch(r"(over|above|under|below|at|more|less|greater|between)", v, re.I)
                    for v in values
                )
            ):
                continue
            out.append(self.equals(c, values, cols, negated=bool(m.group(2)) != bool(negate)))
        # COL V1 or V2  ("with status cancelled or returned")
        for m in re.finditer(rf"\b({IDENT})\s+([\w-]+(?:\s*(?:,|or)\s*[\w-]+)+)\b", clause, re.I):
            c = cols.find(m.group(1))
            values = [v for v in re.split(r"\s*(?:,|\bor\b)\s*", m.group(2)) if v]
            if c and cols.domain(c) and all(v.lower() in {d.lower() for d in cols.domain(c)} for v in values):
                cond = self.equals(c, values, cols, negated=bool(negate))
                if cond not in out:
                    out.append(cond)
        # Bare category values ("shipped orders") add a condition on a column not yet constrained.
        constrained = {
            c.lower() for c in cols.names if any(re.search(rf"\b{re.escape(qident(c))}\b", o) for o in out)
        }
        out += [
            d
            for d in self.domain_words(cols, negate=bool(negate))
            if d.split()[0].strip('"').lower() not in constrained
        ]
        return list(dict.fromkeys(out))

    def only_measure(self, cols: Columns) -> str | None:
        """'orders over 250': the one numeric column that is not a key, if there is exactly one."""
        measures = [
            c for c in cols.names if cols.is_numeric(c) and not re.search(r"(_id|_key|id)$", c.lower())
        ]
        return measures[0] if len(measures) == 1 else None

    def last_numeric_word(self, phrase: str, cols: Columns) -> str | None:
        words = phrase.split()
        return cols.find(words[-1], numeric=True) if words else None

    def equals(self, column: str, values: list[str], cols: Columns, *, negated: bool) -> str:
        numeric = cols.is_numeric(column)
        lits = [
            v if numeric and re.fullmatch(NUMBER, v) else quote(cols.canonical_value(column, v))
            for v in values
        ]
        if len(lits) == 1:
            return f"{qident(column)} {'<>' if negated else '='} {lits[0]}"
        return f"{qident(column)} {'NOT IN' if negated else 'IN'} ({', '.join(lits)})"

    def domain_words(self, cols: Columns, *, negate: bool) -> list[str]:
        """Bare values that belong to one categorical column: 'shipped orders' -> status = 'shipped'."""
        found: dict[str, list[str]] = {}
        for word in re.findall(r"(?<![\w.])([A-Za-z][\w-]*)(?![\w.])", self.text):
            if word.lower() in STOP or cols.find(word) == word:
                continue
            c = cols.value_column(word)
            if c and word not in found.setdefault(c, []):
                found[c].append(word)
        return [self.equals(c, vs, cols, negated=negate) for c, vs in found.items()]

    def time_conditions(self, cols: Columns) -> list[str]:
        date_col = cols.date_column()
        if date_col is None:
            return []
        out = []
        # Names such as orders_2026 or orders_2026.csv are not years.
        words = re.sub(r"\S*[_./]\S*", " ", self.low)
        year = re.search(
            r"\b(?:placed|made|created|in|during|from|of|for)\s+(?:in\s+)?(?:the\s+year\s+)?"
            r"((?:19|20)\d\d)\b",
            words,
        )
        if year:
            out.append(f"year({qident(date_col)}) = {year.group(1)}")
        last = re.search(
            r"\b(?:in the |within the |over the )?(?:last|past) (\d+) (day|week|month|year)s?\b", self.low
        )
        if last:
            out.append(
                f"{qident(date_col)} >= current_date - INTERVAL {int(last.group(1))} {last.group(2).upper()}"
            )
        for word, op in (("since", ">="), ("after", ">"), ("before", "<"), ("until", "<=")):
            m = re.search(rf"\b{word} (\d{{4}}-\d\d-\d\d)\b", self.low)
            if m:
                out.append(f"{qident(date_col)} {op} DATE '{m.group(1)}'")
        return out

    # ------------------------------------------------------------ columns
    def derive(self, current: str, cols: Columns) -> str:
        m = re.search(
            rf"\badd(?:ing)?\s+(?:a\s+)?(?:new\s+)?column\s+({IDENT})\s+(?:equal to|as|=|that is|"
            rf"computed as|defined as|with)\s+(.+?)(?:,|$)",
            self.text,
            re.I,
        )
        if not m:
            return current
        expr = m.group(2)
        for words, op in (
            ("multiplied by", "*"),
            ("times", "*"),
            ("divided by", "/"),
            ("plus", "+"),
            ("minus", "-"),
        ):
            expr = re.sub(rf"\b{words}\b", op, expr, flags=re.I)
        expr = re.sub(rf"\b({IDENT})\b", lambda w: cols.find(w.group(1)) or w.group(1), expr)
        return self.add("derived", "derive", {"input": current, "columns": {m.group(1): expr.strip()}})

    def select_columns(self, current: str, cols: Columns) -> str:
        m = re.search(r"\b(?:only|just)\s+(?:the\s+)?(.+?)\s+columns?\b", self.text, re.I) or re.search(
            r"\bcolumns?\s+((?:[\w]+(?:,\s*|\s+and\s+))+[\w]+)", self.text, re.I
        )
        if m:
            picked = [
                c for w in re.findall(IDENT, m.group(1)) if (c := cols.find(w)) and w.lower() not in STOP
            ]
            if picked:
                return self.add(
                    "selected", "select", {"input": current, "columns": list(dict.fromkeys(picked))}
                )
        d = re.search(
            r"\b(?:drop(?:ping)?|remov(?:e|ing)|without)\s+(?:the\s+)?columns?\s+(.+?)(?:,|$)",
            self.text,
            re.I,
        )
        if d:
            dropped = [
                c for w in re.findall(IDENT, d.group(1)) if (c := cols.find(w)) and w.lower() not in STOP
            ]
            if dropped:
                return self.add("trimmed", "select", {"input": current, "exclude": dropped})
        return current

    def rename(self, current: str, cols: Columns) -> str:
        renames = {}
        for m in re.finditer(
            rf"\brenam\w*\s+(?:the\s+)?(?:column\s+)?({IDENT})\s+(?:to|as|into)\s+({IDENT})", self.text, re.I
        ):
            c = cols.find(m.group(1))
            if c:
                renames[c] = m.group(2)
        return self.add("renamed", "rename", {"input": current, "columns": renames}) if renames else current

    def dedupe(self, current: str, cols: Columns) -> str:
        said = re.search(r"\b(duplicates?|de-?dup\w*|distinct rows|unique rows)\b", self.low)
        if not said:
            return current
        m = re.search(rf"\b(?:by|on|per)\s+(?:the\s+)?({IDENT})", self.low[said.end() :])
        key = cols.find(m.group(1)) if m else None
        body: dict[str, Any] = {"input": current}
        if key:
            body["keys"] = [key]
        return self.add("deduped", "dedupe", body)

    # ------------------------------------------------------------ aggregates
    def aggregate(self, current: str, cols: Columns, sources: list[Source]) -> tuple[str, bool]:
        dims = self.dimensions(cols)
        measures = self.measures(cols, sources)
        top_entity = self.top_entity(cols, sources)
        if top_entity and top_entity not in dims:
            dims = [*dims, top_entity]
        if not measures or (
            not dims and not re.search(r"\b(count|number of|how many|total|sum|average)\b", self.low)
        ):
            return current, False
        derived = {}
        group_by: list[str] = []
        for d in dims:
            if d.startswith("__"):
                unit, col = d[2:].split(":", 1)
                name = unit
                derived[name] = (
                    f"date_trunc('{unit}', {qident(col)})" if unit != "year" else f"year({qident(col)})"
                )
                group_by.append(name)
            else:
                group_by.append(d)
        if derived:
            current = self.add("bucketed", "derive", {"input": current, "columns": derived})
        body = {"input": current, "group_by": [*group_by], "measures": measures}
        return self.add("aggregated", "aggregate", body), True

    def dimensions(self, cols: Columns) -> list[str]:
        dims: list[str] = []
        for m in re.finditer(
            r"\b(?:per|for each|for every|grouped by|group by|broken down by|by)\s+"
            r"((?:[a-z_][\w]*)(?:\s+[a-z_][\w]*)?)",
            self.low,
        ):
            phrase = m.group(1)
            words = phrase.split()
            if words[0] in ("month", "day", "week", "year", "quarter") or (
                len(words) > 1 and words[1] in ("month", "day", "week", "year")
            ):
                unit = words[0] if words[0] in ("month", "day", "week", "year", "quarter") else words[1]
                col = cols.date_column()
                if col:
                    dims.append(col if unit == "day" else f"__{unit}:{col}")
                continue
            # "by total amount" ranks; it is not a dimension
            if words[0] in ("total", "sum", "amount", "average") or words[0] in AGG_WORDS:
                continue
            c = cols.find(phrase) or (cols.find(words[-1]) if len(words) > 1 else None)
            if c is None and len(words) > 1:
                c = cols.find(words[0])
            if c and c not in dims and (not cols.is_numeric(c) or c.lower().endswith("_id")):
                dims.append(c)
        return dims

    def measures(self, cols: Columns, sources: list[Source]) -> dict[str, str]:
        out: dict[str, str] = {}
        entity = singular(sources[0].stem) if sources else ""
        for m in re.finditer(
            r"\b(?:count(?:s)?|number|how many)\s+(?:of\s+)?(distinct\s+|unique\s+|different\s+)?"
            r"((?:[a-z_][\w]*)(?:\s+[a-z_][\w]*)?)",
            self.low,
        ):
            distinct, phrase = m.group(1), m.group(2)
            word = phrase.split()[0]
            if distinct:
                c = cols.find(word, numeric=None)
                c = cols.find(singular(word) + "_id") or c
                if c:
                    out[f"distinct_{c}"] = f"count(DISTINCT {qident(c)})"
                    continue
            if (
                singular(word) in (entity, "row", "record", "order", "event", "line", "item")
                or cols.find(word) is None
            ):
                out["count"] = "count(*)"
        for word, fn in AGG_WORDS.items():
            for m in re.finditer(
                rf"\b{word}\s+(?:of\s+)?(?:the\s+)?((?:[a-z_][\w]*)(?:\s+[a-z_][\w]*)?)", self.low
            ):
                phrase = m.group(1)
                c = None
                for w in reversed(phrase.split()):
                    c = cols.find(w, numeric=True)
                    if c:
                        break
                if c is None:
                    continue
                alias = "total" if re.search(r"\bthe total\b", self.low) and fn == "sum" else f"{fn}_{c}"
                if fn == "sum" and alias != "total":
                    alias = f"total_{c}"
                out[alias] = f"{fn}({qident(c)})"
        return out

    def top_entity(self, cols: Columns, sources: list[Source]) -> str | None:
        """'Top 5 customers by total amount' over orders: group by the customer key."""
        m = re.search(r"\btop\s+\d+\s+([a-z_]+)\s+by\s+(?:total|sum|average)\b", self.low)
        if not m:
            return None
        entity = singular(m.group(1))
        if sources and entity == singular(sources[0].stem):
            return None
        return cols.find(entity + "_id") or cols.find(entity)

    def top_n(self, current: str, cols: Columns, aggregated: bool) -> str:
        self.low = re.sub(r"\bmost recent\b", "latest", self.low)
        m = re.search(
            r"\b(?:top|first|the)\s+(\d+)\s+(largest|biggest|highest|smallest|lowest|most|least|latest|"
            r"newest|oldest|earliest)?\s*([a-z_]+)?(?:\s+by\s+((?:[a-z_]+)(?:\s+[a-z_]+)?))?",
            self.low,
        )
        if not m:
            m2 = re.search(
                r"\b(\d+)\s+(largest|biggest|highest|smallest|lowest|latest|newest|oldest|earliest)\s+"
                r"([a-z_]+)(?:\s+by\s+((?:[a-z_]+)(?:\s+[a-z_]+)?))?",
                self.low,
            )
            if not m2:
                return current
            m = m2
        n = int(m.group(1))
        adjective = m.group(2) or ""
        by_phrase = m.group(4) or ""
        ascending = adjective in ("smallest", "lowest", "least", "oldest", "earliest")
        column = None
        if aggregated:
            agg = self.steps[-1]["aggregate"]["measures"] if "aggregate" in self.steps[-1] else {}
            for alias, expr in agg.items():
                if any(w in expr.lower() or w in alias for w in by_phrase.split() if w not in STOP):
                    column = alias
            column = column or (next(iter(agg)) if agg else None)
        else:
            for w in reversed(by_phrase.split()):
                column = cols.find(w)
                if column:
                    break
            if column is None and adjective in ("latest", "newest", "oldest", "earliest"):
                column = cols.date_column()
            if column is None:
                numeric = [c for c in cols.names if cols.is_numeric(c) and not c.lower().endswith("_id")]
                column = numeric[0] if len(numeric) == 1 else None
        if column is None:
            raise PlannerQuestion(f"Top {n} by which column?", hint="say 'by <column>'")
        ordered = self.add(
            "sorted", "sort", {"input": current, "by": [f"{qident(column)} {'ASC' if ascending else 'DESC'}"]}
        )
        return self.add("top", "limit", {"input": ordered, "n": n})

    # ------------------------------------------------------------ checks
    def checks(self, current: str, cols: Columns) -> None:
        m = re.search(
            r"\b(?:make sure|ensure|check that|verify that|validate that|assert that)\s+(.+)$",
            self.text,
            re.I,
        )
        if not m:
            return
        rules: list[dict[str, Any]] = []
        clause = m.group(1)
        for part in re.split(r"\s*(?:,|;)\s*(?:and\s+)?|\s+and\s+(?=[a-z_]+\s+is\b)", clause, flags=re.I):
            cm = re.match(rf"\s*(?:the\s+)?({IDENT})\s+(?:column\s+)?(?:is|are)\s+(.*)$", part, re.I)
            subject = cm.group(1) if cm else None
            c = cols.find(subject) if subject else None
            if c is None:
                continue
            rest = cm.group(2).lower() if cm else ""
            if re.search(r"\bunique\b", rest):
                rules.append({"unique": [c]})
            if re.search(r"\b(never|not)\s+(empty|blank)\b|\balways (?:filled|set)\b", rest):
                rules.append({"not_empty": [c]})
            elif re.search(r"\b(never|not)\s+(null|missing)\b|\brequired\b|\balways present\b", rest):
                rules.append({"not_null": [c]})
            rng = re.search(rf"\bbetween\s+({NUMBER})\s+and\s+({NUMBER})", rest)
            if rng:
                rules.append({"range": {"column": c, "min": float(rng.group(1)), "max": float(rng.group(2))}})
            if re.search(r"\b(positive|non-negative|not negative)\b", rest):
                rules.append({"range": {"column": c, "min": 0}})
        if rules:
            self.add("checked", "check", {"input": current, "rules": rules})
