"""Read a request into the intermediate form (`ir.Request`), or ask a question.

The words are linked to the catalog first (sources, columns, values, dates, numbers); the
clause rules then match over that linked sequence, where a column is `C3` and a value `V5`
whatever they are called, so one rule covers every table. A rule that matches consumes its
words; a content word nobody consumed either names nothing (reported as unused) or names a
column, value, file, number or date that the reading ignores — then the planner asks.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from ..context import PlannerContext, Source
from ..draft import PlannerQuestion
from . import ir
from .dates import DateMatch, Part, Period, Rolling, find_dates
from .lexicon import (
    AGGREGATES,
    COMPARATORS,
    FILLERS,
    NUMBER_WORDS,
    RANKING,
    TRAILING_COMPARATORS,
    UNITS,
    words,
)
from .link import ColumnRef, ValueRef, Vocabulary, is_numeric_type, is_temporal_type
from .tokens import Token, phrases, singular, tokenize

FUNCTION_WORDS = words(
    """
    a an the of and or nor with from into to in on at by for as is are was were be been being it its
    this that these those there their them they i we you me us my our your which who whom whose what
    where when how than then so if but do does did has have had having can could would should will
    shall may might must please just also only very all any some each every per
    """
)
TARGET_STOP = {
    "end",
    "column",  # "into a new column": a column of the result, never the table
    "columns",
    "field",
    "fields",
    "existing",
    "warehouse",
    "database",
    "db",
    "table",
    "tables",
    "a",
    "an",
    "the",
    "new",
    "it",
    "them",
    "this",
    "that",
    "result",
    "results",
    "output",
    "one",
    "each",
    "every",
    "all",
    "my",
    "our",
    "there",
    "here",
    "schema",
    "separate",
    "production",
    "prod",
    "catalog",
    "catalogue",
}
NAME = r"([a-z_][a-z0-9_]*)"
DATABASE_FILES = (".sqlite", ".sqlite3", ".db", ".duckdb")
DESTRUCTIVE = re.compile(
    r"^\s*(?:(?:please|kindly|can you|could you|would you|will you|i want to|i'd like to|i would like to|"
    r"i need to|we need to|let's|lets|go ahead and|just|now|then|also|ok|okay|hey)[\s,]+)*"
    r"(delete|drop|truncate|wipe|erase|purge|destroy|clear|empty|update|alter|remove|modify|change|"
    r"fix|correct|set|rename|clean up|clean)\b",
    re.I,
)
STRONG = {"delete", "drop", "truncate", "wipe", "erase", "purge", "destroy", "update", "alter", "modify"}


@dataclass
class Item:
    kind: str  # word num quoted src col val date op punct path clock
    text: str
    tokens: list[Token]
    ref: Any = None
    alts: list[Any] = field(default_factory=list)  # other readings (a column for an entity word)
    used: bool = False


class Parser:
    def __init__(self, request: str, ctx: PlannerContext) -> None:
        self.request = " ".join(request.strip().split())
        self.ctx = ctx
        self.tokens = tokenize(self.request.rstrip(".!"))
        self.correct_typos()
        self.norm = " ".join(t.norm if t.kind != "quoted" else "Q" for t in self.tokens)
        self.offsets: list[int] = []
        pos = 0
        for t in self.tokens:
            self.offsets.append(pos)
            pos += len(t.norm if t.kind != "quoted" else "Q") + 1
        self.used: set[int] = set()  # token indices consumed
        self.notes: list[str] = []
        self.readings: list[str] = []

    def correct_typos(self) -> None:
        """Words no vocabulary knows, one or two letters off a known one: 'undr' → 'under'."""
        vocab = known_words(self.ctx)
        data_words = frozenset(catalog_words(self.ctx))  # once per request, not once per word
        for t in self.tokens:
            if t.kind != "word" or len(t.norm) < 4 or t.norm in vocab or singular(t.norm) in vocab:
                continue
            if "_" in t.norm or any(ch.isdigit() for ch in t.norm):
                continue  # a name, not a misspelt word
            from .clauses import is_english, zipf_frequency

            english = is_english(t.norm, broad=False)
            if len(t.norm) == 4 and (english or is_english(t.norm) or zipf_frequency(t.norm) >= 2):
                continue  # a short word is a typo only when no dictionary knows it: 'clik', 'yaer
            if t.raw[:1].isupper() and t.index > 0:
                continue  # a proper noun is not a typo ('Mars')
            before = self.tokens[t.index - 1].norm if t.index > 0 else ""
            if before in ("into", "to", "as", "called", "named", "call", "table", "name", "titled"):
                continue  # a destination's name is the user's to choose ('orderz')
            if zipf_frequency(t.norm) >= COMMON_WORD:
                continue  # a word this common is meant ('spain' is no misspelt 'span')
            hit = closest_keyword(t.norm, keywords(self.ctx), prefer=data_words)
            if hit and english and zipf_frequency(hit) - zipf_frequency(t.norm) < RARE_GAP:
                continue  # 'worth' is a word of its own, not a misspelt 'worst'; 'frist' is a typo
            if hit:
                t.norm = hit
        self.tokens = phrases(self.tokens, self.request)
        for k, t in enumerate(self.tokens):
            t.index = k
        self.norm = " ".join(t.norm if t.kind != "quoted" else "Q" for t in self.tokens)
        self.offsets = []
        pos = 0
        for t in self.tokens:
            self.offsets.append(pos)
            pos += len(t.norm if t.kind != "quoted" else "Q") + 1

    # ------------------------------------------------------------ token spans
    def tokens_in(self, start: int, end: int) -> list[int]:
        """Token indices whose text lies in [start, end) of `self.norm`."""
        return [
            i for i, off in enumerate(self.offsets) if off >= start and off < end and i < len(self.tokens)
        ]

    def use_span(self, start: int, end: int) -> None:
        self.used.update(self.tokens_in(start, end))

    # ------------------------------------------------------------ refusals
    def refuse_in_place(self, has_target: bool) -> None:
        embedded = re.search(
            r"(?:\bthen|\band|\balso|\bafterwards|\bafter that|[,;])\s+(?:please\s+)?(?:also\s+)?"
            r"(delete|drop|truncate|wipe|erase|purge|destroy|update|alter|empty|clear)\s+"
            r"(?:all\s+|every\s+|the\s+|any\s+)*(?:rows|records|data|table|contents|everything|it|them|"
            r"\w+\s+table)\b",
            self.request,
            re.I,
        )
        # "..., and after that remove the returned rows from orders.csv": a change to a source, after
        embedded = embedded or re.search(
            r"(?:\bthen|\bafterwards|\bafter that|\bafter this|\bonce (?:that is|that's|it is|it's) done|"
            r"\band also|\balso)\s+(?:please\s+)?(remove|delete|drop|strip|purge|erase|clean)\b"
            r"[^.;]*?\bfrom\s+"
            r"(?:the\s+)?(?:[\w./-]+\.(?:csv|tsv|ndjson|jsonl|json|parquet|sqlite3?|db|duckdb)\b|\w+\s+(?:table|file)\b)",
            self.request,
            re.I,
        )
        if embedded:
            raise PlannerQuestion(
                f"I can't {embedded.group(1).lower()} data: a pipeline reads its sources and loads its "
                f"result into "
                "a target table, and never deletes, drops or updates a table",
                hint="leave that part out; what a pipeline writes is only its own destination",
                refusal=True,
            )
        m = DESTRUCTIVE.match(self.request)
        if not m:
            return
        verb = m.group(1).lower()
        if (
            verb in ("update", "modify", "change", "set")
            and re.search(
                r"\b(?:from|with|using)\b.*\b(?:by|on|using|keyed (?:on|by)|matching)\s+(?:the\s+)?\w*(?:_id|"
                r"_key|id)\b",
                self.request,
                re.I,
            )
            and any(t.kind == "file" for t in self.tokens)
        ):
            return  # "update the orders table from orders_updates.csv by order_id": an upsert
        changes = ("update", "modify", "change", "set", "alter", "fix", "correct", "rename")
        if has_target and verb not in ("truncate", "alter", "wipe", "destroy", "purge", *changes):
            return  # "drop the cancelled rows and save the rest into x" is a filter into a new table
        if verb in changes:
            raise PlannerQuestion(
                f"I can't {verb} data in place: a pipeline reads its sources and loads its result into a "
                "target table, and never deletes, drops or updates a table",
                hint="to change rows, merge a file of new versions into the table on its key ('merge "
                "updates.csv into orders on order_id'), or load the corrected rows into a new table",
                refusal=True,
            )
        if verb in STRONG or not has_target:
            raise PlannerQuestion(
                f"I can't {verb} data in place: a pipeline reads its sources and loads its result into a "
                "target table, and never deletes, drops or updates a table",
                hint="say what to keep and where to put it, e.g. 'Load customers where active is true "
                "into active_customers'",
                refusal=True,
            )

    def refuse_foreign_target(self, target: str | None, span: tuple[int, int] | None) -> None:
        """A destination that is a source file, or a table of another database, is not ours to write.

        'write them back into orders.csv' and 'into the accounts table of legacy.sqlite' would either
        overwrite data the pipeline reads or land somewhere other than the user asked; a question,
        never a new warehouse table of that name.
        """
        files = "|".join(re.escape(t.norm) for t in self.tokens if t.kind == "file")
        if not files:
            return
        spot = re.search(
            # "write them back into orders.csv", "store it in orders.csv", "save as orders.csv"
            r"\b(?:write|save|store|put|export|dump|output|land)\w* (?:them |it |this |that |those |these "
            r"|the results? |the output |everything |all |the rows )?(?:back )?(?:into|to|in|as|over|onto) "
            rf"(?:the )?(?:file )?({files})(?![\w.])"
            # "overwrite orders.csv", "back to customers.csv", "into orders.csv"
            r"|\b(?:overwrite|overwriting|replace|replacing|back (?:into|to|in)|into|onto) "
            rf"(?:the )?(?:file )?({files})(?![\w.])"
            rf"|\binto (?:the )?(?:new |existing )?(?:table )?{NAME} table (?:of|in|inside) ({files})",
            self.norm,
        )
        if spot is None and span is not None:
            # "into the accounts table of legacy.sqlite", "into accounts in legacy.sqlite"
            tail = self.norm[span[1] :]
            owner = re.match(rf" (?:table )?(?:of|in|inside) (?:the )?({files})(?![\w.])", tail)
            if owner and any(
                t.norm == owner.group(1) and t.norm.endswith(DATABASE_FILES) for t in self.tokens
            ):
                spot = owner
        if spot is None:
            return
        where = next(g for g in spot.groups() if g and "." in g)
        raise PlannerQuestion(
            f"You asked to write the result into {where}, but a pipeline writes only to a table of the "
            f"warehouse ({self.ctx.target_connection}); it never writes back into a file or another "
            "database it reads",
            hint=f"name a new table for the result, e.g. 'into {target or 'a_new_table'}_result'",
            candidates=[f"into {target}_result" if target else "into a new table"],
        )

    # ------------------------------------------------------------ target and mode
    def target(self) -> tuple[str | None, tuple[int, int] | None]:
        text = self.norm
        quoted = [t for t in self.tokens if t.kind == "quoted"]
        patterns = [
            rf"\b(?:table|tabled) (?:called|named|titled) {NAME}",
            rf"\b(?:call|name|title) (?:it|them|this|that|the (?:new )?(?:table|result|output))(?: as)? "
            rf"{NAME}",
            rf"\blet'?s call (?:it|them|this|the result) {NAME}",
            rf"\b(?:called|named|titled) {NAME}",
            rf"^(?:please )?(?:update|upsert into|merge into|refresh|append to) (?:the )?(?:existing "
            rf")?(?:table )?{NAME}",
            rf"(?:- >|= >|→|⇒) (?:the |a |an )?(?:new )?(?:table )?{NAME}",
            rf"\b(?:a|an|new) (?:new )?table {NAME}\b",
            rf"\b(?:a|an|the|new) (?:new )?table {NAME} (?:with|of|that|which|containing|holding|listing|"
            rf"showing|from|"
            rf"for|where|having|:|,)",
            rf"\b(?:into|in|to|as) (?:the |a |an )?(?:new |separate )?(?:warehouse |database |db )?"
            rf"(?:as |under )?(?:the |a |an )?(?:new )?table {NAME}",
            rf"\b(?:into|to|in) (?:the |a |an )?(?:new |existing )?{NAME} table\b",
            rf"\binto (?:the |a |an )?(?:new |existing )?{NAME}",
            rf"\b(?:save|saved|saving|store|stored|storing|write|written|writing|put|dump|land|persist|"
            rf"keep|output|place|materiali[sz]e|publish|export|append|add|insert|upsert|merge|load|copy|"
            rf"copied|"
            rf"move|moved|send|sent|transfer|clone|duplicate|dump|push|get|bring|import|stash)\w*\b"
            rf"(?:[^;]*?)\b(?:onto the end of|to the end of|into|onto|under|as|to|in) (?:the |a |an )?(?:new "
            rf"|"
            rf"existing )?(?:table )?{NAME}",
            rf"\bas (?:the |a |an )?(?:new )?(?:table )?{NAME}$",
            rf"^(?:(?:please|could you|can you|would you|will you|i want to|i'd like to|let's|lets|now) )*"
            rf"(?:create|build|make|produce|generate|prepare|compute|derive|populate|fill|refresh|rebuild)"
            rf" (?:me )?(?:a |the |an )?(?:new )?(?:table )?{NAME} (?:table )?(?:from|with|that|containing|"
            rf"using|by|of|out of|based on|listing|holding|showing|:|,)",
        ]

        def identifier(name: str) -> bool:
            return "_" in name or bool(re.search(r"\d", name))

        for i, pattern in enumerate(patterns):
            found = list(re.finditer(pattern, text))
            if i >= len(patterns) - 3:
                # the broad verb patterns: an identifier-like name wins, then the last one said
                # ("bring the file in unchanged and save it as clients")
                found.sort(key=lambda m: (not identifier(m.group(1)), -m.start()))
            for m in found:
                name = m.group(1)
                if name == "q" and quoted:  # a quoted name: into "big orders"
                    tok = next((t for t in self.tokens if t.kind == "quoted"), None)
                    name = re.sub(r"\W+", "_", tok.norm.strip().lower()) if tok else name
                if name in TARGET_STOP or name in FUNCTION_WORDS or re.fullmatch(r"\d.*", name):
                    continue
                if text[m.end(1) : m.end(1) + 1] == ".":
                    continue  # "placed in orders.csv": a file named, not a table to write
                if (
                    i in (8, 9)
                    and re.match(r"in\b", m.group(0))
                    and self._is_source_word(name)
                    and re.search(r"\b(?:into|as|save|store|call|called|named)\b", text[m.end() :])
                ):
                    continue  # "by status in the orders table; save as x": the table read, not the target
                prior = text[: m.start()].split()
                if (
                    i == 5
                    and prior
                    and self._is_column_word(prior[-1])
                    and re.search(r"\b(?:into|as|save|store|call|called|named)\b", text[m.end() :])
                ):
                    continue  # "price -> unit_price, into products_x": a rename, the table comes later
                after, before = text[m.end(1) :], text[: m.start(1)]
                if (
                    re.match(r" (?:column|field)s?\b| of Q\b", after)
                    or re.search(r"\b(?:column|field|one|col)s? (?:called|named|titled) $", before)
                ) and name != "q":
                    continue  # "a column called net_amount", "into a price_band of 'budget'": not the table
                if i == len(patterns) - 1 and "_" not in name and not re.search(r"\d", name):
                    # "create a report from ..." names no table; only identifier-like names count
                    continue
                if self._is_source_word(name) and i >= 6 and not re.search(r"\btable\b", m.group(0)):
                    # "put orders from 2026 in orders_2026": the first name is a source, keep looking
                    pass
                return name, (m.start(1), m.end(1))
        # last resort: one identifier-like word that names nothing, right after a word that
        # introduces a destination ("a table we'll call archive_2025", "to product_catalogue, as is")
        known = known_words(self.ctx)
        cands = [
            m
            for m in re.finditer(
                rf"\b(?:as|in|into|to|call|called|named|it|table|save|store)(?: ,)? {NAME}\b", text
            )
            if identifier(m.group(1))
            and m.group(1) not in known
            and not any(t.kind == "file" and t.norm.startswith(m.group(1)) for t in self.tokens)
        ]
        if len({m.group(1) for m in cands}) == 1:
            return cands[0].group(1), (cands[0].start(1), cands[0].end(1))
        return None, None

    def _is_column_word(self, word: str) -> bool:
        return any(word == c.lower() for s in self.ctx.sources for c in s.column_names)

    def _is_source_word(self, word: str) -> bool:
        return any(singular(word) == singular(s.stem.lower()) for s in self.ctx.sources)

    def mode(self, target: str | None) -> tuple[str, bool, list[str]]:
        """The write mode and, for a merge, its keys; the words that say so are consumed."""
        low = self.norm
        merge = re.search(
            r"\b(upsert|upserting|upserted|merge|merging|merged|update existing|sync|synchroni[sz]e)\b|"
            r"^update\b",
            low,
        )
        if merge and re.match(
            r"(?: [^;]{0,80}?)? (?:(?:them|it|both|all|these|those|the (?:two|files|tables)) )?(?:together )?"
            r"(?:in|into|to) "
            r"(?:one|a single|single|one single|a new|one new|one big|a combined)(?: new)? "
            r"(?:table|dataset|file)\b",
            low[merge.end() :],
        ):
            merge = None  # "merged into one table": the files are stacked, not upserted on a key
        if merge:
            self.use_span(merge.start(), merge.end())
            m = re.search(
                rf"\b(?:on|by|using|keyed (?:on|by)|key|matching (?:on )?|match on) (?:the )?(?:key "
                rf")?(?:column )?{NAME}",
                low[merge.end() :],
            )
            if m:
                self.use_span(merge.end() + m.start(), merge.end() + m.end())
            return "merge", True, [m.group(1)] if m else []
        append = re.search(r"\b(append|appending|appended)\b", low)
        if append is None and target:
            append = re.search(
                rf"\b(?:add|adding|added|insert|inserting|inserted)\b(?! up\b)(?:(?! column| field)[^;])*"
                rf"\b(?:to|into|"
                rf"onto) "
                rf"(?:the )?(?:end of )?(?:the )?(?:existing )?(?:table )?{re.escape(target)}\b",
                low,
            )
        if (
            append
            and append.group(0).split()[0].startswith("add")
            and re.search(r" into (?:the )?(?:existing )?(?:table )?\S+$", append.group(0))
            and re.search(r" (?:to|onto) (?:each |every |all |the )*\w+", append.group(0))
        ):
            append = None  # "add the price from products.csv to every order ... into x": columns, not rows
        if append:
            self.use_span(append.start(), append.start() + len(append.group(0).split()[0]))
            return "append", True, []
        # "replace missing emails with 'unknown'" fills values; a table is replaced only when the
        # words point at it (or at "it", the result's destination)
        what = (
            rf"(?:the )?(?:existing |current |old )?(?:table )?(?:{re.escape(target)}\b|it\b|its\b|them\b|"
            rf"the table\b|table\b|contents?\b)"
            if target
            else r"(?:it|its|the table|table)\b"
        )
        explicit = re.search(
            rf"\b(?:replac(?:e|ing)|overwrit(?:e|ing)|refresh(?:ing)?|rebuild(?:ing)?|recreat(?:e|ing)|"
            rf"reload(?:ing)?|truncate and load) {what}|\b(?:overwrite|overwriting|start over|replacing it|"
            rf"replace it|full refresh|full reload)\b",
            low,
        )
        if explicit:
            self.use_span(explicit.start(), explicit.end())
        return "replace", bool(explicit), []

    # ------------------------------------------------------------ sources
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
        # a typo in the letters, never in the digits: customers_2027.csv is not customers.csv
        digits = re.findall(r"\d+", base)
        same_ext = {
            n: s
            for n, s in names.items()
            if n.rsplit(".", 1)[-1] == base.rsplit(".", 1)[-1] and re.findall(r"\d+", n) == digits
        }
        match = process.extractOne(base, list(same_ext), scorer=fuzz.ratio, score_cutoff=80)
        if match:
            self.notes.append(f"read {same_ext[match[0]].path} for '{mention}' (closest file name)")
            return same_ext[match[0]]
        return None

    def sources(self, target: str | None) -> list[tuple[int, Source]]:
        """(token index, source) of every source the request names, in order of mention."""
        found: list[tuple[int, Source]] = []
        self.explicit: list[Source] = []
        for t in self.tokens:
            if t.kind != "file":
                continue
            self.used.add(t.index)
            if t.norm.endswith((".sqlite", ".sqlite3", ".db", ".duckdb")):
                found.append((t.index, self._database_table(t)))
                continue
            source = self.resolve_file(t.norm)
            if source is None:
                near = process.extract(
                    t.norm.rsplit("/", 1)[-1],
                    [s.path.rsplit("/", 1)[-1] for s in self.ctx.files() if s.path],
                    scorer=fuzz.ratio,
                    limit=3,
                )
                raise PlannerQuestion(
                    f"I can't find a file called {t.raw} in {self.ctx.data_dir}/",
                    hint="put the file in the workspace's data folder, or name one that is there",
                    candidates=[n for n, score, _ in near if score >= 50],
                )
            found.append((t.index, source))
            self.explicit.append(source)
        # tables: "the orders table", "from orders", "crm.customers"
        tables = self._table_names()
        for i, t in enumerate(self.tokens):
            if i in self.used or t.kind != "word":
                continue
            name = t.norm
            dotted = None
            if (
                i + 2 < len(self.tokens)
                and self.tokens[i + 1].raw == "."
                and self.tokens[i + 2].kind == "word"
            ):
                dotted = f"{name}.{self.tokens[i + 2].norm}"
            key = dotted if dotted and dotted in tables else name
            if key not in tables or key == target:
                continue
            said_table = (i + 1 < len(self.tokens) and self.tokens[i + 1].norm == "table") or (
                i > 0 and self.tokens[i - 1].norm == "table"
            )
            before = self.tokens[i - 1].norm if i > 0 else ""
            if said_table or before in ("from", "of", "using", "read", "join", "with") or not found:
                if found and not said_table and before not in ("from", "join", "using", "with"):
                    continue
                self.used.add(i)
                if dotted and key == dotted:
                    self.used.update({i + 1, i + 2})
                if said_table and i + 1 < len(self.tokens) and self.tokens[i + 1].norm == "table":
                    self.used.add(i + 1)
                if tables[key] not in [s for _, s in found]:
                    found.append((i, tables[key]))
        return found

    def _table_names(self) -> dict[str, Source]:
        """Table names a request may use: the warehouse's own, then connection.table of others."""
        out: dict[str, Source] = {}
        for s in self.ctx.tables():
            if s.path:
                continue  # a table inside a database file is named with its file
            if s.connection == self.ctx.target_connection and s.table:
                out[s.table.lower()] = s
        others = [s for s in self.ctx.tables() if s.connection and s.connection != self.ctx.target_connection]
        for s in others:
            out.setdefault(s.name.lower(), s)
            if s.table and sum((o.table or "").lower() == s.table.lower() for o in others) == 1:
                out.setdefault(s.table.lower(), s)
        return out

    def _database_table(self, tok: Token) -> Source:
        mention = tok.norm
        db = [s for s in self.ctx.tables() if s.path and s.path.lower().endswith(mention.rsplit("/", 1)[-1])]
        names = {(s.table or "").lower(): s for s in db}
        for j in (tok.index - 2, tok.index - 1, tok.index + 1, tok.index + 2, tok.index - 3):
            if 0 <= j < len(self.tokens) and self.tokens[j].norm in names:
                self.used.add(j)
                for k in (j - 1, j + 1):
                    if 0 <= k < len(self.tokens) and self.tokens[k].norm == "table":
                        self.used.add(k)
                return names[self.tokens[j].norm]
        said = re.search(
            rf"\b(?:the )?([a-z_][a-z0-9_]*) table (?:from|in|of) {re.escape(mention)}|"
            rf"{re.escape(mention)}(?:'s)? (?:table )?([a-z_][a-z0-9_]*) table|\btable ([a-z_][a-z0-9_]*) "
            rf"(?:from|in|of) "
            rf"{re.escape(mention)}",
            self.norm,
        )
        if said:
            name = next(g for g in said.groups() if g)
            raise PlannerQuestion(
                f"{tok.raw} has no table called {name}",
                hint="its tables are: " + ", ".join(sorted(names)),
                candidates=sorted(names),
            )
        if len(db) == 1:
            self.notes.append(f"read the only table of {tok.raw}, {db[0].table}")
            return db[0]
        raise PlannerQuestion(
            f"Which table of {tok.raw} should I read?",
            hint=f"name it: 'the <table> table from {tok.raw}'",
            candidates=sorted(names),
        )

    def entity_sources(self) -> list[tuple[int, Source]]:
        """Sources named by what they hold: 'customers' → customers.csv (files before tables)."""
        out: list[tuple[int, Source]] = []
        for i, t in enumerate(self.tokens):
            if i in self.used or t.kind != "word" or t.norm in FUNCTION_WORDS:
                continue
            hit = self.entity_source(t.norm)
            if hit is not None:
                out.append((i, hit))
        return out

    def entity_source(self, word: str) -> Source | None:
        w = singular(word)
        verbs = {"ordered": "order", "purchased": "order", "bought": "order", "sold": "order"}
        w = verbs.get(word, w)
        cands = [s for s in self.ctx.sources if singular(s.stem.lower()) == w]
        if not cands:
            return None
        explicit = [*getattr(self, "explicit", []), *getattr(self, "said", [])]  # files, then tables too
        named = [s for s in explicit if s in cands] or [
            s for s in explicit if any(s.column_names == c.column_names for c in cands)
        ]
        if named:
            # "products.parquet ... the product price", "the 10 smallest orders in orders_2025.csv":
            # the file the request named, also when it holds the same rows under another name
            return named[0]
        rank = {"csv": 0, "parquet": 1, "ndjson": 2, "jsonl": 2, "json": 3}
        files = sorted(
            (s for s in cands if s.kind == "file"),
            key=lambda s: rank.get((s.path or "").rsplit(".", 1)[-1].lower(), 5),
        )
        return (files or cands)[0]


_VOCAB: dict[int, frozenset[str]] = {}


def catalog_words(ctx: PlannerContext) -> set[str]:
    """The words this catalog spells: source stems, column names and their parts, text values."""
    out: set[str] = set()
    for s in ctx.sources:
        stem = s.stem.lower()
        out |= {stem, singular(stem)}
        for c in s.column_names:
            out |= {c.lower(), *c.lower().split("_")}
        for values in s.domains.values():
            out |= {v.lower() for v in values if v.isalpha()}
    return out


def known_words(ctx: PlannerContext) -> frozenset[str]:
    """Every word the parser knows for this catalog: the lexicon, column names and parts, values, sources."""
    key = id(ctx)
    if key in _VOCAB:
        return _VOCAB[key]
    from .clauses import KNOWN_WORDS, STRUCTURE_WORDS
    from .lexicon import MONTHS, NEGATIONS, PRICE_WORDS

    out: set[str] = set(FILLERS) | set(FUNCTION_WORDS) | set(KNOWN_WORDS) | set(STRUCTURE_WORDS)
    out |= set(MONTHS) | set(NEGATIONS) | PRICE_WORDS | set(NUMBER_WORDS) | set(UNITS)
    for phrase, _ in COMPARATORS:
        out |= set(phrase.split())
    out |= catalog_words(ctx)
    out |= {
        "shipped",
        "expensive",
        "cheapest",
        "biggest",
        "largest",
        "smallest",
        "highest",
        "lowest",
        "least",
    }
    frozen = frozenset(w for w in out if w.isalpha() or "_" in w)
    if len(_VOCAB) > 32:
        _VOCAB.clear()
    _VOCAB[key] = frozen
    return frozen


def keywords(ctx: PlannerContext) -> frozenset[str]:
    """What a misspelt word may be corrected to: words with a meaning here, never filler."""
    key = ("keywords", id(ctx))
    if key not in _KEYWORDS:
        if len(_KEYWORDS) > 32:
            _KEYWORDS.clear()
        _KEYWORDS[key] = _keywords(ctx)
    return _KEYWORDS[key]


_KEYWORDS: dict[tuple[str, int], frozenset[str]] = {}


def _keywords(ctx: PlannerContext) -> frozenset[str]:
    from .clauses import KNOWN_WORDS
    from .lexicon import MONTHS, PRICE_WORDS

    out: set[str] = set(KNOWN_WORDS) | set(MONTHS) | PRICE_WORDS | set(NUMBER_WORDS) | set(UNITS)
    for phrase, _ in COMPARATORS:
        out |= set(phrase.split())
    out |= catalog_words(ctx)
    out |= {"distinct", "unique", "duplicates", "cancelled", "shipped", "category", "customer", "customers"}
    out |= set(RANKING) | {"column", "columns", "quarter", "percentage"} | rule_words()
    return frozenset(w for w in out if w.isalpha() and len(w) >= 4)


# How much rarer (in Zipf units, a factor of ten each) a dictionary word must be than the keyword
# one edit away to be read as its typo: 'frist' (2.4) for 'first' (6.3), never 'worth' for 'worst'.
RARE_GAP = 2.5
# Typos are rare strings ('frist' 2.4, 'amont' 1.4, 'clik' 1.6); a word at least this common is a word.
COMMON_WORD = 3.5


def closest_keyword(word: str, targets: frozenset[str], prefer: frozenset[str] = frozenset()) -> str | None:
    """The one keyword a misspelt word is a slip away from: one edit or swap, two in long words.

    Optimal string alignment counts a swapped pair as one edit ('frist', 'mulitple', 'retruned'),
    which a plain ratio scores as two. Two keywords equally close make no correction, unless just
    one of them is a word of the data (`prefer`): 'amont' is 'amount', a column, not 'among'.
    """
    limit = 1 if len(word) < 8 else 2
    best: list[tuple[int, str]] = []
    for w in targets:
        if w[:1] != word[:1] and w[:2] != word[:2][::-1]:
            continue
        if abs(len(w) - len(word)) > limit:
            continue
        d = OSA.distance(word, w, score_cutoff=limit)
        if d <= limit:
            best.append((d, w))
    if not best:
        return None
    best.sort()
    tied = [w for d, w in best if d == best[0][0]]
    if len({singular(w) for w in tied}) > 1:
        data = [w for w in tied if w in prefer]
        return data[0] if len({singular(w) for w in data}) == 1 else None
    return best[0][1]


def rule_words() -> frozenset[str]:
    """Every word the clause and date rules spell in their patterns: what a typo may be meant as.

    Read once from the rule modules' string constants, so a word a rule starts to match is also
    one a misspelling is corrected to, with no second list to keep in step.
    """
    if _RULE_WORDS:
        return _RULE_WORDS[0]
    import sys

    from . import clauses, dates, lexicon, tokens

    found: set[str] = set()
    for module in (clauses, dates, lexicon, tokens, sys.modules[__name__]):
        for text in module_strings(module):
            text = re.sub(r"\\[a-zA-Z]", " ", text)
            # whole words only: 'categori' of r"categori[sz]e" is a pattern's fragment
            found |= set(re.findall(r"(?<![a-z])[a-z]{4,}(?![a-z\[(?*+{])", text))
    from .lexicon import SPELLING

    _RULE_WORDS.append(frozenset(found - set(SPELLING)))
    return _RULE_WORDS[0]


_RULE_WORDS: list[frozenset[str]] = []


def module_strings(module: types.ModuleType) -> set[str]:
    """The string constants of a module's code (its functions, methods and values), not its docstrings.

    Read from the compiled code objects, which costs milliseconds where parsing the source costs
    half a second.
    """
    out: set[str] = set()
    docs: set[str] = {module.__doc__ or ""}
    names: set[str] = set()  # attribute, variable and keyword names: code, not words
    seen: set[int] = set()

    def walk(obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, str):
            out.add(obj)
        elif isinstance(obj, types.CodeType):
            names.update(obj.co_names, obj.co_varnames)
            for c in obj.co_consts:
                walk(c)
        elif isinstance(obj, (types.FunctionType, type)):
            if getattr(obj, "__module__", None) != module.__name__:
                return
            docs.add(obj.__doc__ or "")
            if isinstance(obj, types.FunctionType):
                walk(obj.__code__)
            else:
                for v in vars(obj).values():
                    walk(v)
        elif isinstance(obj, (staticmethod, classmethod)):
            walk(obj.__func__)
        elif isinstance(obj, property):
            walk(obj.fget)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(k)
                walk(v)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for v in obj:
                walk(v)

    for name, value in vars(module).items():
        if not name.startswith("_"):  # private values are caches (word lists, drafts), not rules
            walk(value)
    return out - docs - names


def parse(request: str, ctx: PlannerContext) -> ir.Request:
    return Reader(request, ctx).read()


class Reader(Parser):
    """The clause rules over the linked sequence."""

    def read(self) -> ir.Request:
        target, span = self.target()
        self.refuse_in_place(target is not None)
        self.refuse_foreign_target(target, span)
        if span:
            self.use_span(*span)
            self._use_target_words(span)
        mode, mode_said, keys = self.mode(target)
        named = self.sources(target)
        self.said = [s for _, s in named]  # named in so many words, not inferred
        entities = self.entity_sources()
        if not named:
            named = self.infer_sources(entities)
        if not named:
            raise PlannerQuestion(
                "Which file or table should I read?",
                hint=f"name a file in {self.ctx.data_dir}/ (e.g. {self.ctx.data_dir}/orders.csv) or a table "
                "('from the orders table')",
                candidates=[s.name for s in self.ctx.sources][:8],
            )
        self.named = [s for _, s in named]
        self.named_at = dict(named)  # token index → the source named there
        self.entities = entities
        self.mode_info = (mode, mode_said, keys)
        self.target_name = target
        from .clauses import Clauses

        return Clauses(self).build()

    def secondary(self, i: int) -> bool:
        """An entity word that groups, owns or is excluded is not what the request is about."""
        tok = self.tokens[i]
        if tok.tags.get("possessive"):
            return True
        j = i - 1
        while j >= 0 and self.tokens[j].norm in ("the", "a", "an", "their", "its"):
            j -= 1
        before = " ".join(t.norm for t in self.tokens[max(0, j - 1) : j + 1])
        return bool(
            re.search(
                r"(?:^| )(?:per|each|every|by|no|without|never|across|of each|of every|for each|for every|in "
                r"each)$",
                before,
            )
        )

    def infer_sources(self, entities: list[tuple[int, Source]]) -> list[tuple[int, Source]]:
        """No file or table named: the sources the words point at, the one that joins them all first."""
        from .link import Vocabulary

        score: dict[int, float] = {}
        first: dict[int, int] = {}
        by_id = {id(s): s for s in self.ctx.sources}
        for i, src in entities:
            score[id(src)] = score.get(id(src), 0) + (1 if self.secondary(i) else 3)
            first.setdefault(id(src), i)
        for i, t in enumerate(self.tokens):
            if i in self.used or t.kind != "word" or t.norm in FUNCTION_WORDS or self.entity_source(t.norm):
                continue
            from .clauses import KNOWN_WORDS

            if t.norm in KNOWN_WORDS or t.norm in FILLERS:
                continue
            for s in self.ctx.sources:
                if s.kind == "table" and s.path:
                    continue
                refs = [r for r in Vocabulary([s]).columns(t.norm) if r.score >= 80]
                vals = Vocabulary([s]).values(t.norm)
                if refs or vals:
                    numeric = any(r.numeric and not r.keyish for r in refs)
                    score[id(s)] = score.get(id(s), 0) + (2 if numeric else 1)
                    first.setdefault(id(s), i)
        if not score:
            return []
        leads = [s for i, s in entities if not self.secondary(i)] or [s for _, s in entities]
        if leads:
            from .clauses import Clauses as _C

            for sid in list(score):
                s = by_id[sid]
                if any(s is e for _, e in entities):
                    continue
                if not any(_C.shared_keys(e, s) or e.column_names == s.column_names for e in leads):
                    del score[sid]
        # one source per shape: orders.csv over orders.parquet, and over orders_2025.csv when the
        # words name "orders" (the same columns under another name are other slices of the data)
        named_stems = {singular(s.stem.lower()) for _, s in entities}
        rank = {"csv": 0, "parquet": 1, "ndjson": 2, "jsonl": 2, "json": 3}

        def preference(sid: int) -> tuple[int, float, int, int, int]:
            s = by_id[sid]
            ext = (s.path or "").rsplit(".", 1)[-1].lower()
            return (
                0 if singular(s.stem.lower()) in named_stems else 1,
                -score[sid],
                len(s.stem),
                rank.get(ext, 5),
                first[sid],
            )

        picked: dict[tuple[str, ...], int] = {}
        for sid in sorted(score, key=preference):
            shape = tuple(c.lower() for c in by_id[sid].column_names)
            picked.setdefault(shape, sid)
        cands = [by_id[k] for k in picked.values()]
        from .clauses import Clauses

        hubs = {id(s): sum(bool(Clauses.shared_keys(s, o)) for o in cands if o is not s) for s in cands}
        lead = {id(s) for i, s in entities if not self.secondary(i)}
        cands.sort(key=lambda s: (-hubs[id(s)], id(s) not in lead, first[id(s)], -score[id(s)]))
        return [(first[id(s)], s) for s in cands]

    def _use_target_words(self, span: tuple[int, int]) -> None:
        """The words that introduce the target ('into the new table called') are part of it."""
        first = self.tokens_in(*span)
        if not first:
            return
        i = first[0] - 1
        intro = {
            "into",
            "in",
            "to",
            "as",
            "the",
            "a",
            "an",
            "new",
            "table",
            "called",
            "named",
            "titled",
            "warehouse",
            "database",
            "db",
            "call",
            "it",
            "name",
            "let",
            "lets",
            "save",
            "store",
            "under",
            "separate",
            "existing",
        }
        while i >= 0 and self.tokens[i].norm in intro:
            self.used.add(i)
            i -= 1
        j = first[-1] + 1
        if j < len(self.tokens) and self.tokens[j].norm == "table":
            self.used.add(j)


__all__ = [
    "AGGREGATES",
    "COMPARATORS",
    "FILLERS",
    "NUMBER_WORDS",
    "RANKING",
    "TRAILING_COMPARATORS",
    "UNITS",
    "ColumnRef",
    "DateMatch",
    "Item",
    "Part",
    "Period",
    "Rolling",
    "ValueRef",
    "Vocabulary",
    "find_dates",
    "is_numeric_type",
    "is_temporal_type",
    "parse",
]
