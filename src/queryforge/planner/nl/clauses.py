"""The clause rules: over the linked sequence of a request, build the intermediate form.

The sequence is rendered as symbols — `C4` a column, `V2` a value, `N7` a number, `D3` a time
expression, `S1` a source named by what it holds, `Q5` a quoted text — and the rules are regular
expressions over those symbols and the remaining words. A rule consumes what it matched (its
symbols turn into `~`), so no word is read twice and the leftovers are known.
"""

from __future__ import annotations

import itertools
import re
from datetime import date
from typing import TYPE_CHECKING, Any

from ..context import Source
from ..draft import PlannerQuestion
from . import ir
from .compile import measure_words
from .dates import Part, Period, Rolling, find_dates
from .lexicon import (
    AGGREGATES,
    COMPARATORS,
    FILLERS,
    NEGATIONS,
    NUMBER_WORDS,
    PRICE_WORDS,
    RANKING,
    UNITS,
)
from .link import ColumnRef, ValueRef, Vocabulary, is_numeric_type
from .render import literal, qident, shown
from .tokens import singular

if TYPE_CHECKING:
    from .parse import Item, Reader

ARTICLES = {"the", "a", "an"}
C, V, N, S, D, Q = (rf"{k}(\d+)" for k in "CVNSDQ")
CMP_WORDS = "|".join(re.escape(w) for w, _ in sorted(COMPARATORS, key=lambda x: -len(x[0])))
CMP = rf"(?P<cmp>{CMP_WORDS})"
NEG = (
    r"(?:outside(?: of)?|not in|not from|neither|nor|not|no|non|never|isn't|aren't|wasn't|weren't|don't|"
    r"doesn't|didn't|hasn't|haven't|hadn't|excluding|"
    r"except(?: for)?|other than|besides|but|"
    r"without|ignoring|ignore|omit(?:ting)?|skip(?:ping)?|leave out|leaving out|filter out|filtering out|"
    r"drop(?:ping)?|remov(?:e|ing)|exclude|excludes|minus|apart from|aside from)"
)
IS = r"(?:is|are|was|were|=|==|equals|equal to|of|:|being|set to|with|has|have|having)"
UNIT_WORDS = "|".join(sorted(UNITS, key=len, reverse=True))
RANK_WORDS = "|".join(sorted(RANKING, key=len, reverse=True))
GROUP_INTRO = (
    r"(?:per|by|for each|for every|in each|in every|of each|of every|across|grouped by|group by|"
    r"grouping by|broken down by|broken out by|break down by|split by|split out by|bucketed by|"
    r"aggregated by|summari[sz]ed by|counted by|totaled by|for all|within each|each)"
)


# "ignoring the year", "across all years", "both years together": a calendar part, not a period
ANY_YEAR = (
    r"\b(?:ignoring|regardless of|irrespective of|across|over|whatever) (?:the |all |all the |every )?"
    r"years?\b"
    r"|\b(?:(?:the|both|all) )?years? (?:combined|together|merged|pooled)\b"
)


class Clauses:
    def __init__(self, p: Reader) -> None:
        self.p = p
        self.ctx = p.ctx
        self.items: list[Item] = []
        self.sym = ""
        self.spans: list[tuple[int, int]] = []
        self.uses: dict[int, ir.SourceUse] = {}  # id(Source) -> use
        main = p.named[0]
        self.req = ir.Request(sources=[])
        self.use(main)
        for s in p.named[1:]:
            self.use(s)
        self.vocab_named = Vocabulary(list(p.named))
        self.vocab_all = Vocabulary(list(self.ctx.sources))
        self.group_said = False
        self.keep_unmatched = False  # "including products with no orders": a left join

    # ------------------------------------------------------------ sources in use
    def use(self, source: Source) -> ir.SourceUse:
        if id(source) in self.uses:
            return self.uses[id(source)]
        base = re.sub(r"\W+", "_", source.stem.lower()).strip("_") or "source"
        if base[0].isdigit():
            base = "t_" + base
        alias, n = base, 2
        while any(u.alias == alias for u in self.req.sources):
            alias, n = f"{base}_{n}", n + 1
        u = ir.SourceUse(source=source, alias=alias, step=alias)
        self.req.sources.append(u)
        self.uses[id(source)] = u
        return u

    def col(self, ref: ColumnRef) -> ir.Col:
        return ir.Col(self.use(ref.source).alias, ref.column)

    def make_main(self, source: Source) -> None:
        """The source whose rows are counted or summed is the main one (the fact); others join it."""
        u = self.use(source)
        self.req.sources.remove(u)
        self.req.sources.insert(0, u)

    @property
    def main(self) -> ir.SourceUse:
        return self.req.sources[0]

    # ------------------------------------------------------------ linking
    def link(self) -> None:
        from .parse import Item

        p = self.p
        date_at: dict[int, tuple[int, Any]] = {}
        self.in_dates: set[int] = set()
        for d in find_dates(p.norm):
            idx = [i for i in p.tokens_in(d.start, d.end) if i not in p.used]
            if idx and len(idx) == len(p.tokens_in(d.start, d.end)):
                date_at[idx[0]] = (idx[-1], d.spec)
                self.in_dates.update(idx)
        i = 0
        toks = p.tokens
        while i < len(toks):
            t = toks[i]
            if i in p.used:
                i += 1
                continue
            if i in date_at:
                last, spec = date_at[i]
                self.items.append(Item("date", p.norm, toks[i : last + 1], ref=spec))
                i = last + 1
                continue
            if t.kind == "number" or (t.kind == "word" and t.norm in NUMBER_WORDS and t.norm != "one"):
                self.items.append(Item("num", t.norm, [t], ref=t.value))
                i += 1
                continue
            if t.kind in ("quoted", "path"):
                vals = self.values(t.norm)
                if vals:
                    self.items.append(Item("val", t.norm, [t], ref=vals))
                else:
                    self.items.append(Item("quoted", t.norm, [t], ref=t.norm))
                i += 1
                continue
            if t.norm == "/" and self.lone_slash(i):
                self.items.append(Item("val", t.norm, [t], ref=self.values("/")))
                i += 1
                continue
            if t.kind in ("op", "punct", "clock", "date", "slashdate"):
                self.items.append(Item("op" if t.kind == "op" else "punct", t.norm, [t]))
                i += 1
                continue
            item = self.link_words(i)
            prev = self.items[-1] if self.items else None
            if (
                prev is not None
                and prev.kind == item.kind == "col"
                and {r.column for r in prev.ref} == {r.column for r in item.ref}
            ):
                prev.tokens += item.tokens  # "amount spent", "revenue amount": one column
            else:
                self.items.append(item)
            i += len(item.tokens)
        self.render()

    def lone_slash(self, i: int) -> bool:
        """'views of / only': a slash that is a value of the data ('/', the root page), not a separator
        between two values ('shipped / pending')."""
        if not self.values("/"):
            return False
        toks = self.p.tokens
        around = [toks[k] for k in (i - 1, i + 1) if 0 <= k < len(toks)]
        return not any(t.kind in ("word", "quoted", "path") and self.values(t.norm) for t in around)

    def link_words(self, i: int) -> Item:
        from .parse import FUNCTION_WORDS, Item

        toks = self.p.tokens
        for n in (3, 2, 1):
            chunk = toks[i : i + n]
            if len(chunk) < n or any(
                t.kind != "word" or t.index in self.p.used or t.index in self.in_dates for t in chunk
            ):
                continue
            words = [t.norm for t in chunk]
            if n == 1 and words[0] in FUNCTION_WORDS:
                # "US", "IT": a code the data holds, written as a code; "us"/"it" only beside other codes
                code = self.code_value(i)
                if code is not None:
                    return code
                continue
            if words[0] in FUNCTION_WORDS or words[-1] in FUNCTION_WORDS:
                continue
            if n > 1 and (words[0] in NEGATIONS or words[0] in ("no", "non", "never")):
                continue  # "no cancelled": the negation stays a word of its own, never part of a value
            phrase = " ".join(words)
            if n == 1 and phrase in RANKING_ONLY:
                break
            if n == 2:
                owner = self.p.entity_source(words[0])
                if owner is not None:
                    own = [r for r in Vocabulary([owner]).columns(words[1]) if r.score >= 80]
                    if own and (self.joinable(owner) or owner is self.main.source):
                        return Item("col", phrase, chunk, ref=own[:1])
            cols = self.columns(phrase, exact_only=n > 1)
            if n == 1 and phrase in KNOWN_WORDS:
                # a keyword ("total", "count", "first") names a column only when a source read has it
                cols = [
                    r for r in cols if r.score >= 100 and any(r.source is u.source for u in self.req.sources)
                ]
            vals = self.values(phrase)
            src = self.p.entity_source(phrase) if n == 1 else None
            if src is not None and (phrase.endswith("ed") or phrase == "order"):
                # "ordered by price", "order orders.csv by status": a sort, not the orders
                ahead = [
                    t
                    for t in toks[i + 1 : i + 5]
                    if t.kind != "file"
                    and t.norm not in ("the", "it", "them", "rows", "data", "table", "file")
                ]
                if ahead and ahead[0].norm in ("by", "on"):
                    return Item("word", phrase, chunk)
            if vals and (not cols or (vals[0].score >= 95 and cols[0].score < 100)):
                return Item("val", phrase, chunk, ref=vals, alts=cols)
            if src is not None and not (cols and cols[0].score >= 100):
                return Item("src", phrase, chunk, ref=src, alts=cols)
            if cols:
                return Item("col", phrase, chunk, ref=cols, alts=vals)
        t = toks[i]
        return Item("word", t.norm, [t])

    def code_value(self, i: int) -> Item | None:
        from .parse import Item

        toks = self.p.tokens
        t = toks[i]
        vals = [v for v in self.values(t.norm) if v.score >= 100 and v.value.upper() == v.value]
        if not vals:
            return None
        if t.raw.isupper() and len(t.raw) >= 2:
            return Item("val", t.norm, [t], ref=vals)
        near = [toks[j] for j in (i - 2, i - 1, i + 1, i + 2) if 0 <= j < len(toks)]
        neighbours = any(n.kind == "word" and n.raw.isupper() and self.values(n.norm) for n in near) or (
            i > 0 and toks[i - 1].norm in ("non", "outside", "excluding", "except", "from")
        )
        return Item("val", t.norm, [t], ref=vals) if neighbours else None

    def columns(self, phrase: str, *, exact_only: bool = False) -> list[ColumnRef]:
        refs = self.vocab_named.columns(phrase)
        if not refs or refs[0].score < 70:
            # another source's column joins in only when named as such ('country'), not by synonym
            more = [r for r in self.vocab_all.columns(phrase) if r.score >= 95 and self.joinable(r.source)]
            refs = sorted(refs + more, key=lambda r: -r.score) if more else refs
        refs = [r for r in refs if r.score >= (95 if exact_only else 65)]
        if not refs:
            return []
        best = refs[0].score
        return [r for r in refs if r.score == best]

    def values(self, phrase: str) -> list[ValueRef]:
        vals = self.vocab_named.values(phrase)
        if not vals:
            vals = [v for v in self.vocab_all.values(phrase) if self.joinable(v.source)]
        if not vals:
            return []
        best = vals[0].score
        return [v for v in vals if v.score == best]

    def joinable(self, source: Source) -> bool:
        return any(u.source is source for u in self.req.sources) or bool(
            self.join_keys(self.main.source, source)
        )

    @staticmethod
    def shared_keys(a: Source, b: Source) -> list[tuple[str, str]]:
        """Shared key columns of two sources: the same name, ending in _id/_key/_code."""
        names = {c.lower(): c for c in b.column_names}
        keys = [
            (c, names[c.lower()])
            for c in a.column_names
            if c.lower() in names and re.search(r"(_id|_key|_code|_no)$", c.lower())
        ]
        return keys

    def join_keys(self, a: Source, b: Source) -> list[tuple[str, str]]:
        """The key columns two sources join on: those the request pairs ('user_id is the customer_id'),
        then those of the same name."""
        said = [(x, y) for sa, x, sb, y in self.key_map if sa is a and sb is b]
        said += [(y, x) for sa, x, sb, y in self.key_map if sa is b and sb is a]
        return said + self.shared_keys(a, b)

    def rule_key_mapping(self) -> None:
        """'(user_id is the customer_id)', 'joined on user_id = customer_id', 'matching user_id to
        customer_id': two key columns of two sources said to hold the same thing."""
        for m in self.find(
            r"\b(?P<verb>(?:joined|join|joining|matched|matching|match|linked|link|linking)(?: on| by)? )?"
            r"(?:the )?(C\d+)(?: column)? (?P<conn>is|=|==|equals|matches|match|corresponds to|"
            r"is the same as|to|with|against|and) (?:the )?(C\d+)\b"
        ):
            if m.group("conn") in ("to", "with", "against", "and") and not m.group("verb"):
                continue  # "customer_id and user_id": two columns, not a pairing
            a, b = self.item(m.group(2)), self.item(m.group(4))
            read = [u.source for u in self.req.sources]
            pairs = [
                (ra, rb)
                for ra in a.ref
                for rb in b.ref
                if ra.source in read
                and rb.source in read
                and ra.source is not rb.source
                and ra.keyish
                and rb.keyish
                and ra.column != rb.column
            ]
            if len({(ra.source.name, rb.source.name) for ra, rb in pairs}) != 1:
                continue
            ra, rb = pairs[0]
            self.key_map.append((ra.source, ra.column, rb.source, rb.column))
            self.take(m)
        self.render()

    def render(self) -> None:
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for k, it in enumerate(self.items):
            if it.used:
                s = "~"
            elif it.kind == "word":
                s = "" if it.text in ARTICLES else it.text
            else:
                s = {"col": "C", "val": "V", "num": "N", "src": "S", "date": "D", "quoted": "Q"}.get(
                    it.kind, ""
                )
                s = f"{s}{k}" if s else it.text
            spans.append((pos, pos + len(s)))
            if s:
                parts.append(s)
                pos += len(s) + 1
        self.sym = " ".join(parts)
        self.spans = spans

    def at(self, start: int, end: int) -> list[int]:
        """Items whose symbol overlaps [start, end) of the current rendering."""
        return [k for k, (a, b) in enumerate(self.spans) if b > a and a < end and b > start]

    def take(self, m: re.Match[str], group: int | str = 0) -> list[int]:
        ks = self.at(m.start(group), m.end(group))
        for k in ks:
            self.items[k].used = True
        return ks

    def find(self, pattern: str) -> list[re.Match[str]]:
        return list(re.finditer(pattern, self.sym))

    def item(self, k: str | int) -> Item:
        """An item by index or by its symbol ('C12' or '12')."""
        if isinstance(k, str) and k[:1].isalpha():
            k = k[1:]
        return self.items[int(k)]

    def colref(self, k: str | int, *, numeric: bool | None = None, temporal: bool | None = None) -> ColumnRef:
        """The column an item names; a question when it could be several."""
        it = self.item(k)
        refs: list[ColumnRef] = list(it.ref) if it.kind == "col" else list(it.alts)
        if it.kind == "src" and not refs:
            refs = self.entity_key(it.ref)
        if numeric is not None:
            refs = [r for r in refs if r.numeric == numeric] or refs
        if temporal is not None:
            refs = [r for r in refs if r.temporal == temporal] or refs
        names = {r.column.lower() for r in refs}
        read = [r for r in refs if any(r.source is u.source for u in self.req.sources)]
        owners = {id(r.source) for r in read}
        if len(names) > 1 or len(owners) > 1:
            main = [r for r in refs if r.source is self.main.source]
            if len({r.column.lower() for r in main}) == 1:
                return main[0]
            if len(names) == 1 and len(owners) > 1:
                # "whose name starts with K" over orders, customers and products: whose name?
                shown_refs = sorted(f"{r.source.stem}.{r.column}" for r in read)
                raise PlannerQuestion(
                    f"'{it.text}' is a column of several sources: {', '.join(shown_refs)}. Which one?",
                    candidates=shown_refs,
                )
            raise PlannerQuestion(
                f"'{it.text}' could mean several columns: {', '.join(sorted(names))}. Which one?",
                candidates=sorted(names),
            )
        if not refs:
            raise PlannerQuestion(f"'{it.text}' names no column of {self.main.source.name}")
        return refs[0]

    def num(self, *values: float) -> str:
        """A pattern for the number symbols whose value is one of `values` ('N7' for 'one' or '1')."""
        ks = [
            f"N{k}"
            for k, it in enumerate(self.items)
            if it.kind == "num" and not it.used and it.ref is not None and float(it.ref) in values
        ]
        return "(?:" + "|".join(ks) + r")(?!\d)" if ks else "(?!x)x"

    def entity_key(self, source: Source) -> list[ColumnRef]:
        """'per customer' over orders: the key of that entity in the main source (customer_id)."""
        stem = singular(source.stem.lower())
        out = []
        for s in [u.source for u in self.req.sources]:
            for c in s.column_names:
                if c.lower() in (f"{stem}_id", f"{stem}_key", f"{stem}_code", f"{stem}id"):
                    out.append(ColumnRef(s, c, 80))
        return out[:1]

    # ------------------------------------------------------------ the rules
    def build(self) -> ir.Request:
        self.key_map: list[tuple[Source, str, Source, str]] = []  # keys paired by the request
        self.pending_having: tuple[str, float] | None = None  # "only the ones with 10+ orders"
        self.change: tuple[int, int, bool] | None = None  # (from year, to year, in percent)
        self.pending_window: tuple[str, int, ir.Col | None] | None = None  # a moving (func, rows, column)
        self.link()
        self.join_on: str | None = None
        self.share_of_total: str | None = None
        self.rule_hints()
        self.rule_checks()
        self.rule_key_mapping()
        self.rule_join_on()
        self.rule_bucket_format()
        self.rule_fill()
        self.rule_window()
        self.rule_derive()
        self.rule_text_parts()
        self.rule_text_case()
        self.rule_cohort()
        self.rule_sequence()
        self.rule_day_counts()
        self.rule_bins()
        self.rule_statistics()
        self.rule_rename()
        self.rule_columns()
        self.rule_dedupe()
        self.rule_distinct_values()
        self.rule_overlay()
        self.rule_union()
        self.rule_name_parts()
        self.rule_versus_aggregate()
        self.rule_running()
        self.rule_sort()
        self.rule_change()
        self.rule_share()
        self.rule_keep_unmatched()
        self.rule_anti()
        self.rule_not_in()
        self.rule_conditional_counts()
        self.rule_having()
        self.rule_limit()
        self.rule_span()
        self.rule_rank()
        self.rule_measures()
        self.measure_remarks()
        self.rule_spread()
        self.rule_ratio()
        self.rule_rounding()
        self.rule_group()
        if self.share_of_total and self.req.measures:
            m0 = self.req.measures[0]
            m0.share = self.share_of_total
            m0.alias = f"{self.share_of_total}_{m0.col.name if m0.col else 'rows'}"
        self.rule_measure_filter()
        self.rule_limit()
        self.rule_output_columns()
        self.rule_conditions()
        self.finish()
        return self.req

    # ---- checks: "make sure email is never empty"
    def rule_checks(self) -> None:
        m = re.search(
            r"\b(?:make sure|ensure|check that|checking that|verify that|validate that|assert that|"
            r"and check|making sure|ensuring)\b(.*)$",
            self.sym,
        )
        if not m:
            return
        clause = m.group(1)
        rules: list[dict[str, Any]] = []
        for cm in re.finditer(rf"{C} (?:column )?(?:is|are|values are|has|have)? ?([^C]*)", clause):
            ref = self.colref(cm.group(1))
            rest = cm.group(2)
            if re.search(r"\bunique\b|\bno duplicates\b|\bdistinct\b", rest):
                rules.append({"unique": [ref.column]})
            if re.search(
                r"\b(?:never|not|no) (?:empty|blank)\b|\balways (?:filled|set)\b|\bnon empty\b", rest
            ):
                rules.append({"not_empty": [ref.column]})
            elif re.search(
                r"\b(?:never|not|no) (?:null|missing)\b|\brequired\b|\balways present\b|\bnull\b", rest
            ):
                rules.append({"not_null": [ref.column]})
            rng = re.search(rf"\bbetween {N} and {N}", rest)
            if rng:
                lo, hi = self.item(rng.group(1)).ref, self.item(rng.group(2)).ref
                rules.append({"range": {"column": ref.column, "min": lo, "max": hi}})
            if re.search(r"\b(?:positive|non negative|not negative|nonnegative|above zero|>= 0)\b", rest):
                rules.append({"range": {"column": ref.column, "min": 0}})
        if not rules:
            return
        start = m.start()
        for k, (a, _) in enumerate(self.spans):
            if a >= start:
                self.items[k].used = True
        self.req.checks = rules
        self.render()

    # ---- join keys said in words: "join orders with products on product_id"
    def rule_join_on(self) -> None:
        if len(self.req.sources) < 2:
            return
        for m in self.find(
            r"\b(?:joined |join |joining |matched |matching |linked |link )?(?:on|using|via|by|through) "
            r"(?:the )?(?:shared |common )?(C\d+)(?: (?:column|key|field))?"
        ):
            ref = self.colref(m.group(1))
            if all(
                ref.column.lower() in {c.lower() for c in u.source.column_names} for u in self.req.sources[:2]
            ):
                self.join_on = ref.column
                self.take(m)
        self.render()

    # ---- "month as the first day of the month": how a bucket is shown
    def rule_bucket_format(self) -> None:
        first = rf"(?:first|1st|{self.num(1)} st|start|beginning)"
        for m in self.find(
            rf"\b(?:(?:(?:{UNIT_WORDS}) )?(?:shown|given|keyed|labell?ed|written|displayed|as|being) (?:"
            rf"as |by )?)?"
            rf"(?:the |its )?{first} (?:day |date )?of (?:the |each |every |its |that )?(?:{UNIT_WORDS})\b"
        ):
            self.take(m)
        self.render()
        for m in self.find(
            rf"\b(?:(?:shown|given|keyed|labell?ed|written|displayed) (?:as|by) )?(?:the )?(?:{UNIT_WORDS} "
            rf"'s )?"
            rf"(?:first|1st|start|starting|opening) (?:day|date)(?: of (?:the |each |every "
            rf")?(?:{UNIT_WORDS}))?"
        ):
            self.take(m)
        self.render()
        for m in self.find(
            rf"\b(?:with |and )?(?:the )?(?:{UNIT_WORDS}) (?:shown |given |displayed |written )?(?:as|being) "
            rf"(?:the |its )?(?:first|start|starting|1st) (?:day|date)(?: of (?:the |each "
            rf")?(?:{UNIT_WORDS}))?"
        ):
            self.take(m)
        self.render()

    # ---- fill: "replace missing emails with 'unknown'"
    def rule_fill(self) -> None:
        self.rule_fill_said()
        # "put 'unknown' wherever the email is missing", "empty email values filled in as 'unknown'"
        nulls = r"(?:missing|empty|null|blank|absent|unknown|no)"
        quoted = [k for k, it in enumerate(self.items) if it.kind == "quoted" and not it.used]
        hit = re.search(
            rf"\b{nulls} (C\d+)|\b(C\d+)s? (?:values? )?(?:is |are |that are |which are )?{nulls}\b", self.sym
        )
        if (
            len(quoted) == 1
            and hit
            and re.search(r"\b(?:fill|filled|set|put|replace|replaced|use|default|as|with|to)\b", self.sym)
        ):
            ref = self.colref(hit.group(1) or hit.group(2))
            self.req.fills[ref.column] = self.items[quoted[0]].ref
            self.items[quoted[0]].used = True
            self.take(hit)
            for m in self.find(
                r"\b(?:fill(?:ed)?(?: in)?|set|put|replac(?:e|ed)|default(?:ed)?|wherever|where|when)\b"
            ):
                self.take(m)
            self.render()
        # "contact: the email, or the name when the email is missing", "coalesce(email, name)"
        fb = re.search(
            r"\b(?:coalesce \( (C\d+) , (C\d+) \))|(C\d+)(?: address)?(?: ,)? (?:if (?:present|set|there|"
            r"available|known)"
            r"(?: ,)? )?(?:or|otherwise|else|falling back to|and if missing|or else)(?: (?:to|with))? (?:the "
            r")?(?:S\d+ )?"
            r"(C\d+)",
            self.sym,
        )
        if fb:
            first = self.colref(fb.group(1) or fb.group(3))
            second = self.colref(fb.group(2) or fb.group(4))
            named = re.search(
                r"\b(?:column|field) (?:called |named )?([a-z_][a-z0-9_]*)|\b([a-z_][a-z0-9_]*) (?:column|"
                r"field)\b"
                r"|\b([a-z_][a-z0-9_]*) (?:=|:) ",
                self.sym,
            )
            new = (
                next((g for g in (named.groups() if named else ()) if g and g not in FILLERS), None)
                or "value"
            )
            a = qident(first.column)
            self.req.derived[new] = f"coalesce(NULLIF({a}, ''), {qident(second.column)})"
            self.take(fb)
            if named:
                self.take(named)
            for m in self.find(
                rf"\b{nulls}\b|\bwhen (?:C\d+ )?(?:is )?{nulls}|\bfor (?:people|rows|customers) with no C\d+"
            ):
                self.take(m)
            self.render()

    def rule_fill_said(self) -> None:
        pats = [
            rf"\b(?:replace|replacing|fill|filling|fill in|set|default|defaulting|substitute) (?:any |all |"
            rf"the )?"
            rf"(?:missing|empty|null|blank|absent|unknown|nulls in|blanks in|gaps in)? ?(?:values? )?(?:in |"
            rf"of |for )?"
            rf"(?:the )?{C}(?: column)?(?: values?)?(?: that are| which are| if| when| where)?(?: is| are)?"
            rf"(?: missing| empty| null| blank)?(?: (?:in|of|from)(?: the)?(?: S\d+)?)? (?:with|by|to|as) "
            rf"(Q\d+|V\d+|[a-z_][\w/-]*)",
            rf"\b(?:use|using|put) (Q\d+|V\d+|[a-z_][\w/-]*) (?:for|where|when|as|in place of|instead of)"
            rf" (?:the |a |any )?(?:missing|empty|null|blank|no)? ?{C}",
        ]
        for n, pat in enumerate(pats):
            for m in self.find(pat):
                ck, vk = (m.group(1), m.group(2)) if n == 0 else (m.group(2), m.group(1))
                ref = self.colref(ck)
                raw = vk
                if re.fullmatch(r"[QV]\d+", vk):
                    it = self.item(vk[1:])
                    value: Any = it.ref if it.kind == "quoted" else it.tokens[0].norm
                    if it.kind == "val":
                        value = it.ref[0].value
                else:
                    value = raw
                self.req.fills[ref.column] = value
                self.take(m)
                self.p.readings.append(f"missing {ref.column} filled with {shown(value)}")
        self.render()

    # ---- derive: "add a column amount_eur equal to amount times 0.9"
    def rule_derive(self) -> None:
        ops = {
            "times": "*",
            "multiplied by": "*",
            "x": "*",
            "*": "*",
            "divided by": "/",
            "over": "/",
            "/": "/",
            "plus": "+",
            "+": "+",
            "minus": "-",
            "-": "-",
            "less": "-",
        }
        opw = "|".join(re.escape(o) for o in sorted(ops, key=len, reverse=True))
        term = r"(?:\( )*(?:C\d+|N\d+)(?: \))*"
        expr = rf"({term}(?: (?:{opw}) {term})+|{term})"
        name = r"([a-z_][a-z0-9_]*|C\d+)"
        intro = (
            r"(?:add|adding|with|plus|including|include|and|compute|computing|calculate|calculating|"
            r"create|creating)"
        )
        pats = [
            rf"\b{intro} (?:a |an |one )?(?:new |extra |computed |derived )?(?:column|field|one) (?:called |"
            rf"named )?{name}(?: (?:to|in|on|for)(?: S\d+)?)?"
            rf"(?: ,)? (?:equal to|equals|that is|which is|as|=|computed as|calculated as|defined as|with|"
            rf"being|"
            rf"set to|holding|containing|:|\() (?:the )?{expr}",
            rf"\b{intro}? ?{name} (?:=|as|:|\() (?:the )?{expr}(?= |$|,|\))",
            rf"\b{intro} {expr} (?:as|called|named) (?:a )?(?:new )?(?:column )?{name}",
            rf"\b{intro} (?:a |an )?(?:new |extra |computed |derived )?{name} (?:column|field) "
            rf"(?:equal to|equals|"
            rf"that is|which is|as|=|computed as|calculated as|defined as|being|set to|holding|containing|:) "
            rf"(?:the )?{expr}",
        ]
        for n, pat in enumerate(pats):
            for m in self.find(pat):
                col_name, text = (m.group(1), m.group(2)) if n != 2 else (m.group(2), m.group(1))
                if n == 1 and (
                    col_name in FILLERS
                    or col_name in KNOWN_WORDS
                    or not re.search(rf"{opw}", text)
                    or ("_" not in col_name and re.search(r"(?:ed|ing)$", col_name))
                ):
                    continue  # "the amount with tax added (amount * 1.2)": 'added' names no column
                if not re.search(rf"(?:{opw})", text) and re.match(
                    rf"[^;()]*\( {term}(?: (?:{opw}) {term})+ \)", self.sym[m.end() :]
                ):
                    continue  # "net_amount, which is the amount without VAT (amount / 1.19)": the formula
                if re.fullmatch(r"C\d+", col_name):
                    said = col_name
                    col_name = self.colref(said[1:]).column
                    if re.search(r"\b(?:extra|new|additional|another) (?:column|field)\b", self.p.norm):
                        # "an extra column for the gross amount (amount * 1.21)": a new column, never
                        # the source's own amount overwritten
                        before = self.sym[: m.start(1)].split()
                        word = (
                            before[-1]
                            if before and before[-1].isalpha() and before[-1] not in FILLERS
                            else "new"
                        )
                        col_name = f"{word}_{col_name}"
                        self.take_word_before(m.start(1))
                text_sql = self.formula_sql(text, opw, ops)
                while text_sql.count(")") > text_sql.count("(") and text_sql.endswith(")"):
                    text_sql = text_sql[:-1].rstrip()
                while text_sql.count("(") > text_sql.count(")") and text_sql.startswith("("):
                    text_sql = text_sql[1:].lstrip()
                self.req.derived[col_name] = text_sql
                self.take(m)
        self.render()
        self.formula_in_brackets(term, opw, ops)
        # a part of a date as a column: "adding a column with the year of order_date", "+ year(order_date)"
        part = r"(?P<u>year|month|quarter|hour|day|weekday|week)"
        for m in self.find(
            rf"(?:\b{intro}|\+) (?:a |an |one )?(?:new |extra )?(?:(?:column|field) )?(?:called |named "
            rf")?(?P<n>[a-z_][a-z0-9_]*)? ?"
            rf"(?:(?:column|field) )?(?:with |for |holding |containing |of |from )?(?:the )?(?:S\d+ )?{part}"
            rf"(?: (?:of|from|in) (?:the )?(?P<c>C\d+)| \( (?P<f>C\d+) \)|(?P<none>))(?: as (?:a )?(?:new "
            rf")?(?:column )?(?P<n2>[a-z_][a-z0-9_]*))?"
        ):
            c = m.group("c") or m.group("f")
            if m.group("none") is not None and not re.search(r"\b(?:column|field)\b", m.group(0)):
                continue
            if (
                not re.search(
                    r"\b(?:column|field|add|adding|plus|new|extra|create|creating|compute|computing|calculate|"
                    r"calculating|include|including)\b|\+",
                    m.group(0),
                )
                and not m.group("f")
                and not re.match(
                    r" (?:added |included |put |kept |stored )?(?:as|in|into) (?:a |an )?"
                    r"(?:new |extra |separate )?(?:column|field)",
                    self.sym[m.end() :],
                )
            ):
                continue  # "by status and by year of order_date": a grouping, not a new column
            ref = self.colref(c) if c else self.date_column()
            unit = m.group("u")
            fn = {"weekday": "dayname", "day": "day"}.get(unit, unit)
            new = m.group("n2") or (
                m.group("n")
                if m.group("n")
                and m.group("n")
                not in ("column", "field", "for", "with", "of", "from", "holding", "containing")
                and m.group("n") not in FILLERS
                else None
            )
            new = new or f"{ref.column.split('_')[0]}_{unit}" if "_" in ref.column else new or unit
            self.req.derived[new] = f"{fn}({qident(ref.column)})"
            self.take(m)
        self.render()
        # "the year each order was placed as a new column", "the month of signup in a column of its own"
        for m in self.find(
            rf"\b(?:{intro}|with|put|store|keep|show) (?:the |a |an )?{part}(?: (?:that |in which |when "
            rf")?(?:each "
            rf"|every |the |an? )?S\d+)?(?: (?:was|were|is|got|has been|had been))?(?: (?:of |from |in )?"
            rf"(?P<c>C\d+))?(?: (?:as|in|into|to) (?:a |an |its |their )?(?:new |extra |separate |additi"
            rf"onal )?"
            rf"(?:column|field)(?: (?:of (?:its|their) own))?)(?: (?:called|named) (?P<n2>[a-z_][a-z0-9_]*))?"
        ):
            ref = self.colref(m.group("c")[1:]) if m.group("c") else self.date_column()
            if not ref.temporal:
                continue
            unit = m.group("u")
            fn = {"weekday": "dayname", "day": "day"}.get(unit, unit)
            new = m.group("n2") or (f"{ref.column.split('_')[0]}_{unit}" if "_" in ref.column else unit)
            self.req.derived[new] = f"{fn}({qident(ref.column)})"
            self.take(m)
        self.render()
        for m in self.find(
            rf"\b(?:a |an |one )?(?:new |extra |additional )?(?:column|field) (?:for|with|holding|containing|"
            rf"showing|of) (?:the |its |their )?(?:S\d+ )?{part}(?: (?:of|from|in) (?:the )?(?P<c>C\d+))?"
        ):
            ref = self.colref(m.group("c")[1:]) if m.group("c") else self.date_column()
            unit = m.group("u")
            fn = {"weekday": "dayname", "day": "day"}.get(unit, unit)
            new = f"{ref.column.split('_')[0]}_{unit}" if "_" in ref.column else unit
            self.req.derived[new] = f"{fn}({qident(ref.column)})"
            self.take(m)
        self.render()
        # a new column named for a part of a date: "an order_year column (taken from the order date)"
        for m in self.find(
            rf"\b(?:(?:{intro}|with) )?(?:a |an |one )?(?:new |extra |additional )?(?:(?:column|field) "
            rf"(?:called |named )?)?(?P<n>(?:[a-z][a-z0-9]*_)?{part})(?: (?:column|field))?"
            rf"(?: (?:taken |derived |computed |calculated |extracted |pulled )?(?:from|of|out of|based on) "
            rf"(?:the )?(?P<c>C\d+))?"
        ):
            if not re.search(r"\b(?:column|field)\b", m.group(0)) and (
                not m.group("c") or "_" not in m.group("n")
            ):
                continue
            ref = self.colref(m.group("c")[1:]) if m.group("c") else self.date_column()
            if not ref.temporal:
                continue
            unit = m.group("u")
            fn = {"weekday": "dayname", "day": "day"}.get(unit, unit)
            self.req.derived[m.group("n")] = f"{fn}({qident(ref.column)})"
            self.take(m)
        self.render()
        # a formula in brackets after a new name: "net_amount, the amount without VAT (amount / 1.19)"
        for m in self.find(
            rf"\b(?:{intro} )?(?:a |an |one )?(?:new |extra |computed |derived )?(?:(?:column|field|one) )?"
            rf"(?:called |named )?(?P<n>[a-z][a-z0-9]*_[a-z0-9_]+)(?: (?:column|field))?(?: ,)? "
            rf"(?P<mid>(?:[a-z]+ |C\d+ |N\d+ |, ){{0,14}}?)\( (?P<e>{term}(?: (?:{opw}) {term})+) \)"
        ):
            if m.group("n") in self.req.derived:
                continue
            self.req.derived[m.group("n")] = self.formula_sql(m.group("e"), opw, ops)
            self.take(m)
        self.render()
        # a rank as a column: "a price_rank column, 1 for the most expensive", "rank all products by price"
        one = self.num(1)
        top = r"(?:most expensive|priciest|dearest|highest|largest|biggest|top|best|cheapest|least expensive|"
        top += r"lowest|smallest)"
        means = r"(?:=|for|is|being|means|meaning|is for|represents|goes to|stands for)"
        for m in self.find(
            r"\b(?:rank|ranking|ranked|number|numbered)(?: all| every| each)?(?: S\d+)?(?: (?:in|of|from))?"
            r"(?: column)? (?:by|on|according to|in order of) (?:the |their |its )?(C\d+)"
            r"|\b(?:a |an )?([a-z_]*rank[a-z_]*) (?:column |field )?(?:by|on|according to) (?:the )?(C\d+)"
            r"|\b(?:a |an )?(?:new |extra )?(?:(?P<rn>[a-z_]*rank[a-z_]*)(?: column| field)?|"
            r"(?P<rn2>[a-z][a-z0-9]*_[a-z0-9_]+) (?:column|field)|column|field)"
            rf"(?=(?: to| in| for| of)?(?: S\d+)? (?:,|where|with|for|in which|:|\() ?(?:{one}|rank {one}) "
            rf"{means} (?:the )?{top})"
        ):
            named = m.group("rn") or m.group("rn2") or ""
            if m.group(1) or m.group(3):
                ref = self.colref(m.group(1) or m.group(3), numeric=True)
            else:
                refs = [
                    r
                    for part in named.split("_")
                    if part and "rank" not in part
                    for r in self.vocab_named.columns(part)
                    if r.numeric and r.score >= 85
                ]
                ref = refs[0] if refs else self.price_column()
            asc = re.search(
                rf"\b(?:ascending|lowest first|cheapest first|smallest first|(?:1|one) {means} (?:the )?"
                r"(?:cheapest|lowest|smallest|least expensive))"
                r"|\b(?:cheapest|lowest|smallest|least expensive)(?: \w+)? (?:being|is|=|gets|ranked) "
                r"(?:1|one)\b",
                self.p.norm,
            )
            new = m.group(2) or named or f"{ref.column}_rank"
            self.req.derived[new] = f"rank() OVER (ORDER BY {qident(ref.column)} {'ASC' if asc else 'DESC'})"
            self.take(m)
            for x in self.find(
                rf"\b(?:highest first|descending|ascending|lowest first|cheapest first|(?:rank )?{one} "
                rf"{means} (?:the )?(?:most |least )?[a-z]*(?: S\d+)?|(?:the )?(?:most |least )?"
                rf"(?:expensive|priciest|"
                rf"cheapest|highest|lowest|largest|smallest)(?: S\d+)? (?:being|is|=|gets|ranked) {one}|"
                r"(?:as|in|into) (?:a |an )?(?:new |extra |separate )?(?:column|field)|where|"
                r"(?:a |an )?rank column|(?:a |an )?[a-z_]*rank[a-z_]* column)"
            ):
                self.take(x)
        self.render()
        self.rule_label()

    # ---- window columns: "price rank within its category", "the same user's previous event time"
    def rule_text_parts(self) -> None:
        """'by the first letter of their name', 'the part of the email before the @', 'email domain':
        a part of a text column, as a group key after 'per'/'by', else as a new column."""
        from .compile import TEXT_PARTS

        col = r"(?:of |from |in )?(?:the |their |its |each |every )?(?:S\d+ )?(?:'s )?(?P<c>C\d+)"
        pats = [
            (
                "initial",
                rf"\binitials? \( (?:the )?(?:first|initial) (?:letter|character|char) (?:of )?{col} \)",
            ),
            (
                "initial",
                rf"\b(?:the )?(?:first|initial|starting|opening|leading) (?:letter|character|char)s?"
                rf"(?: of)? {col}",
            ),
            ("initial", rf"\binitials? (?:letter )?(?:of )?{col}"),
            (
                "email_user",
                rf"\b(?:(?:the )?(?:local part|username|user name|mailbox name) \( )?"
                rf"(?:the )?(?:part|text|bit|portion|everything|local part|username|user name|"
                rf"mailbox name|name)s? (?:of {col} )?(?:before|in front of|preceding) (?:the )?"
                rf"(?:Q\d+|@|at sign)"
                rf"(?: \))?(?: (?:of|in|from) {col.replace('P<c>', 'P<c2>')})?",
            ),
            (
                "email_user",
                rf"\b(?:the )?{col.replace('P<c>', 'P<c3>')}(?: address)? ?(?:local part|username|user "
                rf"name|mailbox name)s?\b",
            ),
            (
                "email_domain",
                rf"\b(?:(?:the )?domain \( )?(?:the )?(?:part|text|bit|portion|everything|domain)s? "
                rf"(?:of {col} )?"
                rf"(?:after|following|behind) (?:the )?(?:Q\d+|@|at sign)(?: \))?(?: (?:of|in|from) "
                rf"{col.replace('P<c>', 'P<c2>')})?",
            ),
            (
                "email_domain",
                r"\b(?:the )?(?:(?:e ?mail|C\d+) )?domains? (?:name )?(?:of |from )?(?:the |their |"
                r"its |each )?(?P<c4>C\d+)?",
            ),
        ]
        for unit, pat in pats:
            for m in self.find(pat):
                said = next((g for g in (m.groupdict().get(k) for k in ("c", "c2", "c3", "c4")) if g), None)
                ref = self.colref(said[1:]) if said else None
                if unit.startswith("email"):
                    ref = ref or next(
                        (
                            ColumnRef(self.main.source, c, 80)
                            for c in self.main.source.column_names
                            if "mail" in c
                        ),
                        None,
                    )
                if ref is None or ref.numeric or ref.temporal:
                    continue
                before = self.sym[: m.start()]
                if re.search(
                    rf"{GROUP_INTRO} (?:the |their |its )?$|\b(?:grouped|group|bucketed) (?:on|by) "
                    rf"(?:the )?$",
                    before,
                ):
                    self.req.group.append(ir.GroupKey(self.col(ref), unit))
                    intro = re.search(
                        rf"{GROUP_INTRO} (?:the |their |its )?$|\b(?:grouped|group|bucketed) "
                        rf"(?:on|by) (?:the )?$",
                        before,
                    )
                    if intro:
                        for k in self.at(intro.start(), intro.end()):
                            self.items[k].used = True
                else:
                    expr = TEXT_PARTS[unit].format(c=self.col(ref).sql(False))
                    self.req.derived[f"{ref.column}_{unit.split('_')[-1]}"] = expr
                self.take(m)
            self.render()

    def rule_cohort(self) -> None:
        """'number of customers by the month of their first order', 'how many customers placed their very
        first order in each month': each entity once, at the period of its first row, counted per period."""
        text = self.p.norm
        count = (
            r"\b(?:number|count|how many|tally|nr)(?: of)? (?:the )?"
            r"(?:distinct |unique |new )?(?P<ent>[a-z]+)\b"
        )
        first = r"\b(?:their|its|his|her) (?:very )?(?:first|earliest)\b"
        unit = r"(?P<u>month|week|year|quarter|day)"
        m = re.search(
            rf"{count}.*?\b(?:by|per|in each|for each|each|in) (?:the )?{unit}\b.{{0,20}}?{first}", text
        ) or re.search(rf"{count}.*?{first} [a-z]+ (?:in|by|per|during) (?:each |every |the )?{unit}\b", text)
        if m is None:
            return
        owner = self.p.entity_source(m.group("ent"))
        if owner is None:
            return
        key = [c for c in self.main.source.column_names if c.lower() == f"{singular(owner.stem.lower())}_id"]
        if not key:
            return
        when = self.date_column()
        self.req.cohort = (ir.Col(self.main.alias, key[0]), self.col(when), m.group("u"))
        for k in self.p.tokens_in(m.start(), m.end()):
            for it in self.items:
                if any(t.index == k for t in it.tokens) and it.kind != "val":
                    it.used = True
        # "month as its first day", "(month = 1st of month)": how the month is shown, the cohort's way
        for x in self.find(
            r"\b(?:month|week|year|quarter) (?:as|=|shown as|given as) (?:its |the )?~(?: ~)*"
        ):
            self.take(x)
        self.render()

    def rule_statistics(self) -> None:
        """'the 90th percentile of amount', 'p90 amount', 'standard deviation of price', 'variance of x'."""
        for m in self.find(
            r"\b(?:the )?(?P<p>N\d+) ?(?:th |st |nd |rd )?percentile (?:of )?(?:the )?(?P<c>C\d+)"
            r"|\b(?:the )?(?P<f>standard deviation|std dev|stddev|std|variance) (?:of )?(?:the )?(?P<c2>C\d+)"
        ):
            ref = self.colref((m.group("c") or m.group("c2"))[1:], numeric=True)
            if m.group("p"):
                q = float(self.item(m.group("p")[1:]).ref)
                if not 0 < q < 100:
                    continue
                measure = ir.Measure("quantile", self.col(ref), alias=f"p{q:g}_{ref.column}", arg=q / 100)
            else:
                func = "var_samp" if m.group("f") == "variance" else "stddev_samp"
                measure = ir.Measure(func, self.col(ref), alias=f"{func.split('_')[0]}_{ref.column}")
            self.add_measure(measure)
            self.take(m)
            self.render()

    def rule_day_counts(self) -> None:
        """'the number of days from signup_date to 2026-12-31', 'days between opened and 2025-01-01': a new
        column of whole days between two dates."""
        for m in self.find(
            r"\b(?:(?:the )?(?:number of )?days?|how many days) (?:from|between|since) (?:the |their |its )?"
            r"(?P<a>C\d+) (?:to|and|until|till|up to) (?:the |their |its )?(?P<b>C\d+|D\d+)"
        ):
            first = self.colref(m.group("a")[1:])
            if not first.temporal:
                continue
            if m.group("b").startswith("C"):
                other = self.colref(m.group("b")[1:])
                if not other.temporal:
                    continue
                end = f"CAST({self.col(other).sql(False)} AS DATE)"
                name = f"days_{first.column}_to_{other.column}"
            else:
                spec = self.item(m.group("b")[1:]).ref
                if not isinstance(spec, Period) or not isinstance(spec.lo, date):
                    continue
                end = f"DATE '{spec.lo.isoformat()}'"
                name = f"days_since_{first.column}"
            self.req.derived[name] = f"date_diff('day', CAST({self.col(first).sql(False)} AS DATE), {end})"
            self.take(m)
            self.render()

    def rule_bins(self) -> None:
        """'per amount bucket of 100', 'in buckets of 50 of price': a number grouped by ranges of a width."""
        for m in self.find(
            r"\b(?:per|by|in|into|for each) (?:the |each )?(?P<c>C\d+) "
            r"(?:buckets?|bins?|bands?|ranges?|brackets?) "
            r"(?:of|of width|with a width of|sized) (?P<n>N\d+)"
            r"|\b(?:in|into|per|by) (?:buckets?|bins?|bands?|ranges?|brackets?) of (?P<n2>N\d+) "
            r"(?:of|in|for|by) "
            r"(?:the )?(?P<c2>C\d+)"
        ):
            ref = self.colref((m.group("c") or m.group("c2"))[1:])
            width = self.item((m.group("n") or m.group("n2"))[1:]).ref
            if not ref.numeric or not width or width <= 0:
                continue
            self.req.group.append(ir.GroupKey(self.col(ref), f"bin_{width:g}"))
            self.take(m)
            self.render()

    def rule_sequence(self) -> None:
        """'users with a signup event followed later by a purchase event', 'who made a purchase after signing
        up': the keys that have a row of one value and a later row of another."""
        m = re.search(
            r"\b(?P<a>V\d+)(?: S\d+)? (?:(?:that was|that is|which was|was|is) )?(?:(?:followed|succeeded)"
            r"(?: later| afterwards)? by|(?:and )?(?:then|later)(?: (?:a|an|by))?)(?: a| an)? (?P<b>V\d+)"
            r"(?: S\d+)?"
            r"|\b(?P<b2>V\d+)(?: S\d+)? (?:(?:at some point|some time|sometime|later) )?after "
            r"(?:a |an |their "
            r"|the )?(?P<a2>V\d+)(?: S\d+)?"
            r"|\b(?P<b3>V\d+)(?: S\d+)? with (?:a )?later C\d+ than (?:one of |any of |the )?(?:their |its )?"
            r"(?P<a3>V\d+)(?: S\d+)?",
            self.sym,
        )
        if m is None:
            return
        a = m.group("a") or m.group("a2") or m.group("a3")
        b = m.group("b") or m.group("b2") or m.group("b3")
        ra, rb = self.value_refs(a), self.value_refs(b)
        if not ra or not rb or ra[0].column != rb[0].column:
            return
        when = self.date_column()
        own = f"{singular(self.main.source.stem.lower())}_id"
        keys = [c for c in self.main.source.column_names if c.lower().endswith("_id") and c.lower() != own]
        if len(keys) != 1:
            return
        self.req.sequence = (
            self.in_cond(ra),
            self.in_cond(rb),
            ir.Col(self.main.alias, keys[0]),
            self.col(when),
        )
        self.take(m)
        for x in self.find(
            r"\b(?:each|every) (?:C\d+|S\d+) once\b|\bonce each\b|\b(?:distinct|unique) C\d+\b"
            r"|\bwho converted\b|\bconverted\b|\blater on\b|\blater\b|\bonce\b"
        ):
            self.take(x)
        for it in self.items:  # "the user_ids", "users": the key, which is the output
            if it.kind == "col" and any(r.column == keys[0] for r in it.ref):
                it.used = True
        self.render()

    def rule_text_case(self) -> None:
        """'the name in upper case', 'upper-cased emails', 'country in lowercase as a new column'."""
        case = r"(?P<f>upper|lower|uppercase|lowercase|upper case|lower case|capitals|capital letters|caps)"
        for m in self.find(
            rf"\b(?:the )?(?P<c>C\d+)s? (?:in|to|as|into|converted to|turned into) (?:all )?{case}"
            rf"(?: letters)?\b"
            rf"|\b(?P<f2>upper|lower) ?cased? (?:the )?(?P<c2>C\d+)s?\b"
        ):
            ref = self.colref(m.group("c") or m.group("c2"))
            if ref.numeric or ref.temporal:
                continue
            fn = "lower" if (m.group("f") or m.group("f2") or "").startswith("lower") else "upper"
            new = re.search(r"\b(?:new|extra|additional|another) (?:column|field)\b", self.p.norm)
            name = f"{ref.column}_{fn}" if new else ref.column
            self.req.derived[name] = f"{fn}({self.col(ref).sql(False)})"
            self.take(m)
            self.render()

    def formula_sql(self, text: str, opw: str, ops: dict[str, str]) -> str:
        """A formula over linked symbols ('C3 times N5') as SQL ('amount * 1.21')."""
        sql = []
        for tok in re.findall(rf"C\d+|N\d+|\(|\)|{opw}", text):
            if re.fullmatch(r"C\d+", tok):
                sql.append(self.col(self.colref(tok[1:])).sql(False))
            elif re.fullmatch(r"N\d+", tok):
                sql.append(repr(self.item(tok[1:]).ref).removesuffix(".0"))
            else:
                sql.append(ops.get(tok, tok))
        return " ".join(sql).replace("( ", "(").replace(" )", ")")

    def take_word_before(self, pos: int) -> None:
        """The plain word just before `pos` in the symbol string, consumed (it names something)."""
        before = re.search(r"([a-z]+) $", self.sym[:pos])
        if before:
            for k in self.at(before.start(1), before.end(1)):
                self.items[k].used = True

    def formula_in_brackets(self, term: str, opw: str, ops: dict[str, str]) -> None:
        """'add a column with the amount including 21% VAT (amount times 1.21)': a new column described
        in words and defined by the formula in brackets; the words name it."""
        if not re.search(r"\b(?:column|colum|field|add|adding)\b", self.p.norm):
            return
        for m in self.find(
            rf"\b(?:add|adding|with|plus|including|and)\b(?P<d>(?: [^()]+?)?) \( (?P<e>{term}(?: (?:{opw}) "
            rf"{term})+) \)"
        ):
            if not re.search(r"C\d+", m.group("e")):
                continue
            words = [
                self.item(w[1:]).text if re.fullmatch(r"[CVNS]\d+", w) else w
                for w in m.group("d").split()
                if w not in FILLERS
                and w not in ("a", "an", "the", "column", "colum", "field", "new", "extra")
            ]
            name = "_".join(re.sub(r"\W+", "_", w).strip("_") for w in words[-4:] if re.sub(r"\W+", "", w))
            self.req.derived[(name or "value").lower()[:60]] = self.formula_sql(m.group("e"), opw, ops)
            self.take(m)
        self.render()

    def rule_window(self) -> None:
        group = (
            r"(?:within|inside|in|per|for|across|among|by) (?:each |every |its own |their own |its |their |"
            r"the same |that |the )?(?P<g>C\d+|S\d+)"
        )
        m = re.search(rf"\b(?P<c1>C\d+) (?:rank|ranking|position) {group}", self.sym) or re.search(
            r"\b(?:rank|ranks|ranking|ranked|number|numbers|numbered)(?: (?:all|every|each|the))?(?: S\d+)?"
            r"(?: (?:of|in|from))? (?:by|on|according to) (?:the |their |its )?(?P<c2>C\d+)"
            rf"(?: (?:descending|ascending|desc|asc|highest first|lowest first))?(?: ,)? {group}",
            self.sym,
        )
        if m:
            ref = self.colref(m.groupdict().get("c1") or m.group("c2"))
            part = self.group_key_for(self.item(m.group("g")))
            if (ref.numeric or ref.temporal) and part is not None and part.unit is None:
                asc = re.search(
                    r"\b(?:ascending|lowest first|cheapest first|smallest first|oldest first|earliest first|"
                    r"(?:1|one) (?:=|is|means|for) (?:the )?(?:cheapest|lowest|smallest|least expensive|"
                    r"oldest|earliest))\b|\b(?:cheapest|lowest|smallest|least expensive)(?: \w+)? "
                    r"(?:being|is|=|gets|getting|ranked) (?:1|one)\b",
                    self.p.norm,
                )
                self.req.derived[f"{ref.column}_rank"] = (
                    f"rank() OVER (PARTITION BY {qident(part.col.name)} ORDER BY {qident(ref.column)} "
                    f"{'ASC' if asc else 'DESC'})"
                )
                self.take(m)
                self.take_window_words()
        lag = re.search(r"\b(?P<w>previous|preceding|prior|next|following|subsequent|lag|lead)\b", self.sym)
        if lag is None:
            return
        after = re.match(r" (?:\( )?(?:S\d+ )?(?P<c>C\d+)", self.sym[lag.end() :])
        before = re.search(
            r"(?P<c>C\d+) (?:of|for|from) (?:the |that |each |every )?(?:same )?\S+ $",
            self.sym[: lag.start()],
        )
        said = after or before
        if said is None:
            return
        ref = self.colref(said.group("c"))
        # whose previous value: the owner said nearest before the word ("for every order ... that
        # customer's preceding order" is the customer's), else the one after ("per user_id")
        owners = list(
            re.finditer(
                r"\b(?:same|each|every|that|per|for each|for every|by|partitioned by) (C\d+|S\d+)", self.sym
            )
        )
        before_lag = [o for o in owners if o.start() < lag.start()]
        part_m = before_lag[-1] if before_lag else (owners[0] if owners else None)
        part = self.group_key_for(self.item(part_m.group(1))) if part_m else None
        if part is None or part.unit is not None or part.col.name == ref.column:
            return
        order_m = re.search(r"\b(?:ordered|sorted|order) by (?:the )?(C\d+)|\bin (C\d+) order\b", self.sym)
        order = self.colref(order_m.group(1) or order_m.group(2)) if order_m else self.date_column()
        ahead = lag.group("w") in ("next", "following", "subsequent", "lead")
        fn, word = ("lead", "next") if ahead else ("lag", "previous")
        window = f"PARTITION BY {qident(part.col.name)} ORDER BY {qident(order.column)}"
        self.req.derived[f"{word}_{ref.column}"] = f"{fn}({qident(ref.column)}) OVER ({window})"
        for x in (lag, part_m, order_m):
            if x is not None:
                self.take(x)
        for k in self.at(
            (lag.end() + said.start("c")) if said is after else said.start("c"),
            (lag.end() + said.end("c")) if said is after else said.end("c"),
        ):
            self.items[k].used = True
        self.take_window_words()

    def take_window_words(self) -> None:
        """The words around a window column that only say it is one: 'as an extra column', '1 = priciest'."""
        self.render()
        for x in self.find(
            r"\b(?:highest first|descending|ascending|lowest first|cheapest first|(?:the )?(?:most |least )?"
            r"(?:expensive|priciest|cheapest|highest|lowest|largest|smallest|biggest|greatest|newest|oldest|"
            r"latest|earliest)(?: S\d+| one)? "
            r"(?:being|is|=|gets|getting|ranked|ranks) (?:rank )?N\d+|\(? ?(?:rank )?N\d+ (?:=|is|means|for) "
            r"(?:the )?(?:most |least )?"
            r"[a-z]+(?: S\d+)? ?\)?|(?:as|in|into) (?:a |an |one )?(?:new |extra |separate |additional )?"
            r"(?:column|field)|(?:a |an |one )?(?:new |extra |separate |additional )?(?:column|field))"
        ):
            self.take(x)
        self.render()

    # ---- a label from a condition: "price_band 'budget' when the price is under 50 and 'standard' otherwise"
    def rule_bands(self) -> bool:
        """Labels for ranges of a number, two or more: "small under 50, medium from 50 to 200, large
        above 200", "'low' if amount < 100, 'mid' if amount < 300, otherwise 'high'" (first match wins,
        as in SQL's CASE)."""
        band = (
            r"(?P<lab>Q\d+|[a-z][a-z_-]*) (?:\( )?(?:if |when |for |where |: |= |means |is |meaning )?"
            r"(?:(?:the |its |it )?(?P<c>C\d+) (?:is |are )?)?"
            rf"(?:{CMP} (?P<n>N\d+)|(?:from |between )(?P<lo>N\d+) (?:to|and|-|up to|through|till|until) "
            r"(?:and including )?(?P<hi>N\d+)(?: inclusive)?|(?P<lo2>N\d+) (?:-|to) (?P<hi2>N\d+)"
            r"(?: inclusive)?"
            r"|(?P<n3>N\d+) (?P<tc>or more|or less|or above|or below|or over|or under|and up|and above|plus))"
            r"(?: \))?"
        )
        found: list[re.Match[str]] = []
        for m in re.finditer(band, self.sym):
            if found and not re.fullmatch(
                r"[ ,;/~()]*(?:or|and|,)?[ ,;/~()]*", self.sym[found[-1].end() : m.start()]
            ):
                if len(found) >= 2:
                    break
                found = []
            lab = m.group("lab")
            if not lab.startswith("Q") and (
                lab in FILLERS or lab in STRUCTURE_WORDS or lab in ("and", "or", "if", "when", "is", "are")
            ):
                continue
            found.append(m)
        if len(found) < 2:
            return False
        said = next((m.group("c") for m in found if m.group("c")), None)
        ref = self.colref(said, numeric=True) if said else self.only_measure("the labels")
        col = qident(ref.column)
        whens: list[str] = []
        for m in found:
            label = self.textof(m.group("lab")) if m.group("lab").startswith("Q") else m.group("lab")
            if m.group("n"):
                test = f"{col} {self.cmp_op(m.group('cmp'))} {literal(self.item(m.group('n')).ref)}"
            elif m.group("n3"):
                op = "<=" if re.search(r"less|below|under", m.group("tc")) else ">="
                test = f"{col} {op} {literal(self.item(m.group('n3')).ref)}"
            else:
                lo, hi = (
                    self.item(m.group("lo") or m.group("lo2")).ref,
                    self.item(m.group("hi") or m.group("hi2")).ref,
                )
                test = f"{col} BETWEEN {literal(lo)} AND {literal(hi)}"
            whens.append(f"WHEN {test} THEN {literal(label)}")
        tail = re.match(
            r" ?[,;]? ?(?:and |or )?(?:otherwise|else|(?:for )?(?:the |all the )?(?:rest|others|remainder)|"
            r"anything else|everything else)(?: is| are| =| :| gets| becomes)? (?P<lab>Q\d+|[a-z][a-z_-]*)",
            self.sym[found[-1].end() :],
        )
        other = "NULL"
        if tail:
            lab = tail.group("lab")
            other = literal(self.textof(lab) if lab.startswith("Q") else lab)
        before = self.sym[: found[0].start()]
        named = (
            re.search(r"\b(?:column|field) (?:called |named |titled )?([a-z_][a-z0-9_]*|C\d+)", before)
            or re.search(r"\b(?!add\b|new\b|extra\b|one\b)([a-z_][a-z0-9_]*|C\d+) (?:column|field)\b", before)
            or re.search(r"\b([a-z_][a-z0-9_]*|C\d+) (?:=|:) $", before)
        )
        name = named.group(1) if named else "label"
        if name.startswith("C") and name[1:].isdigit():
            name = self.item(name).tokens[0].norm
        self.req.derived[name] = f"CASE {' '.join(whens)} ELSE {other} END"
        for m in found:
            self.take(m)
        if tail:
            for k in self.at(found[-1].end() + tail.start(), found[-1].end() + tail.end()):
                self.items[k].used = True
        self.take_label_words(named)
        return True

    def take_label_words(self, named: re.Match[str] | None) -> None:
        """After a label column is read: its name, and the words that only say it is a new column."""
        if named:
            for k in self.at(named.start(), named.end()):
                self.items[k].used = True
        self.render()
        for x in self.find(
            r"\b(?:(?:in|into|as) (?:a |an |one )?(?:new |extra |separate )?(?:column|field)|"
            r"(?:a |an |one )?(?:new |extra )?(?:column|field)|label(?:l?ed)?(?: it| them)?|"
            r"tag(?:ged)?(?: it| them)?|categori[sz]e|classify|bucket|either)\b"
        ):
            self.take(x)
        self.render()

    def rule_label(self) -> None:
        if self.rule_bands():
            return
        qs = [k for k, it in enumerate(self.items) if it.kind in ("quoted", "val") and not it.used]
        quoted = [k for k in qs if self.items[k].kind == "quoted"]
        if len(quoted) < 2:
            return
        ka, kb = quoted[0], quoted[1]
        rest = r"(?:otherwise|else|for the rest|the rest|rest|everything else|anything else|all others|"
        rest += r"all the others|"
        rest += r"the others|others|if not|for everything else|for all others|for all the rest|the remainder)"
        qa, qb = f"Q{ka}", f"Q{kb}"
        cond = r"(?:(?:the |its |it |their |they |anything |everything |items? |rows? |those |ones )?"
        cond += r"(?:(?:S\d+ )?(?P<c>C\d+) )?"
        cond += rf"(?:is |are |costs? |priced |of |with |has |have )?(?:{CMP} (?P<v>N\d+)|(?P<v2>N\d+) "
        cond += r"(?P<tc>or more|or over|or above|or higher|and up|and above|plus|or less|or under|or below|"
        cond += r"or lower|or fewer)))"
        forms = [
            # 'budget' when/if/for price < 50 [,] [and|or|else] 'standard' [otherwise]
            rf"{qa} (?:\( )?(?:when|if|for|where|meaning|:)? ?{cond}(?: \))?(?: ,)? (?:and |or |else |"
            rf"otherwise |, )*(?:(?:{rest}) (?:is |are |=|: |becomes |gets )?)?{qb}"
            rf"(?: \( (?:for )?{rest} \)| (?:for )?{rest})?",
            # anything under 50 is 'budget', everything else is 'standard'
            rf"(?:for |when |if |where )?{cond} (?:is |are |=|: |-|> |becomes |gets |as |labell?ed |tagg"
            rf"ed )*{qa}"
            rf"(?: ,)? (?:and |or |, |;)*(?:{rest}) (?:is |are |=|: |becomes |gets |as |labell?ed |tagge"
            rf"d )*{qb}",
        ]
        label_m = None
        for f in forms:
            label_m = re.search(f, self.sym)
            if label_m:
                break
        if not label_m:
            return
        if not re.search(rf"{rest}|\bor\b", label_m.group(0)):
            return
        c = label_m.group("c")
        ref = self.colref(c[1:], numeric=True) if c else self.only_measure("the condition")
        before = self.sym[: label_m.start()]
        named = re.search(
            r"\b(?:column|field) (?:called |named )?([a-z_][a-z0-9_]*_[a-z0-9_]*)|\b([a-z][a-z0-9]*_[a-z"
            r"0-9_]+)"
            r"(?: (?:column|field))?(?= |$)",
            before,
        ) or re.search(
            r"\b(?:column|field) (?:called |named )?([a-z_][a-z0-9_]*_[a-z0-9_]*)|\b([a-z][a-z0-9]*_[a-z"
            r"0-9_]+) "
            r"(?:column|field)",
            self.sym,
        )
        plain = (
            re.search(r"\b(?:column|field) (?:called |named )?([a-z][a-z0-9_]*)", before)
            or re.search(r"\b(?!new\b|extra\b|the\b|a\b|an\b)([a-z][a-z0-9_]*) (?:column|field)\b", before)
            or re.search(
                r"\b(?:plus|with|adding|add|into|as) (?:a |an )?(?:new )?([a-z][a-z0-9_]*) ?(?::|of)? ?$",
                before,
            )
        )
        if (
            named is None
            and plain
            and plain.group(1) not in FILLERS
            and plain.group(1) not in STRUCTURE_WORDS
        ):
            named = plain
        new = (
            named
            and (
                named.group(1) or named.group(2)
                if named.lastindex and named.lastindex > 1
                else named.group(1)
            )
        ) or "label"
        a, b = self.item(ka).ref, self.item(kb).ref
        if label_m.group("v"):
            value = self.item(label_m.group("v")).ref
            op = self.cmp_op(label_m.group("cmp"))
        else:
            value = self.item(label_m.group("v2")).ref
            op = "<=" if re.search(r"less|under|below|lower|fewer", label_m.group("tc")) else ">="
        self.req.derived[new] = (
            f"CASE WHEN {qident(ref.column)} {op} {literal(value)} THEN {literal(a)} ELSE {literal(b)} END"
        )
        self.take(label_m)
        self.take_label_words(named)

    # ---- rename: "rename amount to total", "amount renamed as total"
    def rule_rename(self) -> None:
        pats = [
            rf"\brenam\w* (?:the )?(?:column )?{C} (?:column )?(?:to|as|into) ([a-z_][a-z0-9_]*|C\d+|S\d+)",
            rf"\b{C} (?:column )?(?:\( )?renamed (?:to|as) ([a-z_][a-z0-9_]*|C\d+|S\d+)(?: \))?",
            rf"\bcall(?:ing)? (?:the )?(?:column )?{C} (?:column )?([a-z_][a-z0-9_]*)",
        ]
        pats += [
            # "the price column called unit_price instead", "price -> unit_price", "price becomes unit_price"
            rf"\b{C} (?:column |field )?(?:called|named|titled|relabell?ed|re named|labell?ed|shown as|-"
            rf" >|→|= >|"
            rf"becomes|turned into|changed to) ([a-z_][a-z0-9_]*)(?: instead)?",
        ]
        from .parse import FUNCTION_WORDS

        # SQL's alias, "owner AS holder, balance": only the alias is taken, so the column stays in a list
        pats.append(rf"\b{C} as ([a-z_][a-z0-9_]*|C\d+)(?! S\d| C\d| V\d)")
        for n, pat in enumerate(pats):
            for m in self.find(pat):
                new = m.group(2)
                if new in FILLERS or new in STRUCTURE_WORDS:
                    continue
                if n == len(pats) - 1 and (new in FUNCTION_WORDS or new in KNOWN_WORDS or new in VITAL_WORDS):
                    continue  # "amount as total" is a rename; "price as well", "status as a fraction" are not
                ref = self.colref(m.group(1))
                if re.fullmatch(r"[CS]\d+", new):
                    new = self.item(new[1:]).tokens[0].norm
                self.req.renames[ref.column] = new
                if n == len(pats) - 1:
                    for k in self.at(m.end(1), m.end()):
                        self.items[k].used = True
                else:
                    self.take(m)
                self.p.readings.append(f"{ref.column} renamed to {new}")
        self.render()

    # ---- column choice: "only the order_id, customer_id and amount columns", "drop the email column"
    def rule_columns(self) -> None:
        self.main_only = False
        for m in self.find(
            r"\b(?:with |keep(?:ing)? |and )?(?:only|just) (?:the |its |their )?(?:S\d+ )?columns?(?: of "
            r"(?:the )?S\d+)?\b"
            r"|\b(?:S\d+ )?columns? only\b|\bkeep(?:ing)? (?:only |just )?(?:the )?columns? of(?: S\d+)?\b"
            r"|\bkeep(?:ing)? (?:only |just )?(?:the )?S\d+ columns?\b"
        ):
            self.main_only = True
            self.take(m)
            # "keep the columns of orders.csv", "order columns only": the rows kept are that source's
            kept: Source | None = None
            srcs = re.findall(r"S(\d+)", m.group(0))
            if srcs:
                kept = self.item(srcs[0]).ref
            else:
                toks = self.p.tokens
                for k, t in enumerate(toks[:-2]):
                    if t.norm in ("column", "columns") and toks[k + 1].norm == "of":
                        at = k + 3 if toks[k + 2].norm == "the" else k + 2
                        kept = getattr(self.p, "named_at", {}).get(at, kept)
            if (
                kept is not None
                and kept is not self.main.source
                and any(u.source is kept for u in self.req.sources)
            ):
                self.make_main(kept)
        self.render()
        cols = r"((?:C\d+)(?:(?: ,| and| ,? and| &)? (?:C\d+))*)"
        keep = [
            rf"\b(?:only|just|keeping only|keep only|with only|select|selecting|pick|picking|keep|keeping|"
            rf"include only|retain|retaining|containing only|showing|show|with just|take) (?:the )?"
            rf"(?:columns? )?{cols}(?: columns?| fields?)?",
            rf"\b(?:columns?|cols?|fields?) {cols}",
            # "i just need order_id, amount and order_date out of orders_2026.csv": two or more columns
            rf"\b(?:need|want|give me|get me|fetch|extract|pull|pull out|grab) (?:only |just )?(?:the )?"
            rf"{cols}"
            rf"(?= (?:out of|from|of|in)\b| ,| ;|$| into| as| to| -)",
        ]
        drop = [
            rf"\b(?:drop|dropping|remove|removing|without|exclude|excluding|minus|except|omit|omitting|hide|"
            rf"hiding|"
            rf"leave out|leaving out|strip|stripping|discard|discarding) (?:the )?(?:columns? )?{cols} "
            rf"(?:columns?|fields?)",
            rf"\b(?:drop|dropping|remove|removing|exclude|excluding|omit|omitting|hide|hiding|discard|"
            rf"discarding) (?:the )?(?:columns?|fields?) {cols}",
            rf"\b(?:all|every) columns? (?:but|except|other than|apart from) {cols}",
            rf"\b(?:everything |all )?(?:minus|except(?: for)?|but not) (?:the )?{cols}"
            rf"(?= ,| ;| into| to| as|$)",
        ]
        drop += [
            # "drop product_id from orders.csv", "with product_id left out"
            rf"\b(?:drop|dropping|remove|removing|exclude|excluding|omit|omitting|strip|stripping|discard|"
            rf"discarding|leave out|leaving out|take out|taking out|cut|cutting) (?:the )?{cols}(?= (?:f"
            rf"rom|of|out of)"
            rf"\b)",
            rf"\b{cols} (?:columns? |fields? )?(?:left out|omitted|excluded|removed|dropped|stripped|str"
            rf"ipped out|"
            rf"taken out|cut out|not included|discarded)\b",
        ]
        for pat in drop:
            for m in self.find(pat):
                names = [self.colref(k).column for k in re.findall(r"[CS](\d+)", m.group(1))]
                self.req.exclude += [n for n in names if n not in self.req.exclude]
                self.take(m)
        self.render()
        for m in self.find(
            r"\b(?:keep(?:ing)?|with|all|every) (?:of )?(?:the )?(?:all )?(?:(S\d+) )?(?:columns?|fields?)\b"
        ):
            if m.group(1) is None or self.item(m.group(1)).ref is self.main.source:
                self.take(m)  # "keeping all order columns": the main source's columns stay
        self.render()
        # "add each customer's name and country (customers.csv) to the orders": another source's columns on
        # the rows of the source named after "to"
        for m in self.find(
            rf"\b(?:add|adding|attach|attaching|append|appending|bring|bringing|pull|pulling|put|putting)"
            rf"(?: in| over)? (?:each |every |the |their |its )?(?:S\d+ )?(?:[a-z]+ )?{cols}(?: \( \))?"
            rf"(?: (?:from|of|in)(?: the)?(?: S\d+)?)?(?: ,)? (?:to|onto|on) (?:the |each |every |all )?"
            rf"(?:S\d+ )?(?P<t>S\d+)"
        ):
            if self.req.measures:
                continue
            want = self.item(m.group("t")).ref
            rows = [
                u.source
                for u in self.req.sources
                if u.source is want or singular(u.source.stem.lower()) == singular(want.stem.lower())
            ]
            if not rows:
                continue
            if rows[0] is not self.main.source:
                self.make_main(rows[0])
            refs = [self.colref(k) for k in re.findall(r"C(\d+)", m.group(1))]
            if not refs or not all(r.source is not self.main.source for r in refs):
                continue
            for r in refs:
                c = self.col(r)
                if c not in self.req.extra:
                    self.req.extra.append(c)
            self.take(m)
        self.render()
        for m in self.find(
            rf"\b(?:(?:plus|along with|together with|adding|including|and also|as well as) |"
            rf"with (?=(?:their |its |each |that |those |the )?(?:S\d+ )?C\d+))(?:their |its |each |that "
            rf"|those |the )?(?:(?:S\d+) )?{cols}"
        ):
            refs = [self.colref(k) for k in re.findall(r"C(\d+)", m.group(1))]
            if not any(r.source is not self.main.source for r in refs) or self.req.measures:
                continue
            for r in refs:
                c = self.col(r)
                if c not in self.req.extra:
                    self.req.extra.append(c)
            self.take(m)
        self.render()
        if self.req.extra or len(self.req.sources) > 1:
            # "the order columns with those two extra columns": the added columns, said again
            for m in self.find(
                r"\b(?:with |and |plus )?(?:those|these|the|both) (?:N\d+ )?(?:extra|additional|added|new|"
                r"looked up|joined) (?:columns?|fields?)\b|\blook(?:s|ing|ed)? up\b"
                r"|\bto (?:get|fetch|obtain|pull in)\b"
            ):
                self.take(m)
            self.render()
        only = list(
            self.find(
                r"\b(?:with |and |but )?(?:no other|nothing else|no more|none of the other|no further) ?"
                r"(?:columns?|"
                r"fields?)?\b|\b(?:and )?nothing else\b"
            )
        )
        # a bare list of columns right after the source: "customers.csv name and email into mailing_list"
        listed = r"((?:C\d+(?: ~)*)(?:(?: ,| and| ,? and| &)? (?:C\d+(?: ~)*))*)"  # renamed ones too
        bare = re.match(
            rf"^(?:[,:;-] )?(?:the )?{listed}(?= (?:of|from|in|for) (?:every|each|all|the)?|(?: ,| ;)|$"
            rf"| should| into| to| -| where| whose| with| if)",
            self.sym,
        )
        if bare and (only or len(re.findall(r"C\d+", bare.group(1))) >= 2) and not self.req.select:
            refs = [self.colref(k) for k in re.findall(r"C(\d+)", bare.group(1))]
            if len(refs) >= 2 and all(r.source is self.main.source for r in refs):
                for r in refs:
                    self.req.select.append(self.col(r))
                for k in self.at(bare.start(1), bare.end(1)):
                    self.items[k].used = True
                for m in only:
                    self.take(m)
                tail = re.match(
                    r" (?:of|for) (?:every|each|all) (?:S\d+ )?(?:rows?|records?|entr(?:y|ies)|lines?)?",
                    self.sym[bare.end(1) :],
                )
                if tail:
                    for k in self.at(bare.end(1) + tail.start(), bare.end(1) + tail.end()):
                        self.items[k].used = True
                self.render()
        for n, pat in enumerate(keep):
            for m in self.find(pat):
                ks = re.findall(r"[CS](\d+)", m.group(1))
                if n == 0 and len(ks) < 2 and not re.search(r"columns?|fields?", m.group(0)):
                    continue  # "keeping only shipped rows" is a filter; "only amount" may be a measure
                if n == 2 and (len(ks) < 2 or self.grouped()):
                    continue  # "need country and amount per month": a grouping, read later
                if any(self.item(k).kind == "src" and not self.item(k).alts for k in ks):
                    continue
                refs = [self.colref(k) for k in ks]
                for r in refs:
                    c = self.col(r)
                    if c not in self.req.select:
                        self.req.select.append(c)
                self.take(m)
        self.render()

    # ---- duplicates
    def rule_dedupe(self) -> None:
        # "unique customers of customers.csv who ...": the main source's rows, each once
        for u in self.find(r"\b(?:unique|distinct) (S\d+)\b"):
            counted = re.search(
                r"\b(?:count|counts|counting|number of|numbers of|how many|tally|tallies|count of)"
                r"(?: the)? $",
                self.sym[: u.start()],
            )  # "tally the distinct customers": a count of distinct keys, read with the measures
            if counted:
                continue
            if self.item(u.group(1)).ref is self.main.source and not re.search(
                r"\b(?:count|number|how many|tally|per|by|each|every)\b", self.sym
            ):
                self.req.distinct = True
                self.take(u)
        self.render()
        m = re.search(
            r"\b(?:remov\w*|drop\w*|without|no|eliminat\w*|get rid of|strip\w*|excluding|dedup\w*|"
            r"de dup\w*|deduplicat\w*)? ?(?:any |all |the )?(?:exact )?(?:duplicates|duplicated|duplicate|"
            r"dupes|"
            r"dups|repeated|doubles?)(?: rows| records| entries| lines| customers| orders)?"
            r"|\b(?:de ?dup\w*|deduplicat\w*|distinct rows|unique rows|distinct records|unique records|"
            r"only distinct|only unique|each row once|every row once|without repeats|no repeats|"
            r"(?:identical|distinct|each|every|unique) (?:rows? |S\d+ |C\d+ )?(?:kept |listed |only |"
            r"appearing )*once|"
            r"once each|(?:listed|kept|appearing|shown) once|(?:duplicates|dupes|duplicate rows) (?:removed|"
            r"dropped|eliminated|excluded|taken out|stripped))\b",
            self.sym,
        )
        if not m:
            return
        self.take(m)
        self.req.distinct = True
        by = re.search(rf"^ ?(?:by|on|per|based on|using) (?:the )?{C}", self.sym[m.end() :])
        if by:
            ref = self.colref(by.group(1))
            self.req.distinct_keys = [self.col(ref)]
            for k in self.at(m.end() + by.start(), m.end() + by.end()):
                self.items[k].used = True
        self.render()

    # ---- "the distinct countries", "unique country values", "a list of countries without repeats"
    def rule_distinct_values(self) -> None:
        # "distinct user_id and page combinations", "unique (user_id, page)", "every unique pair of
        # user and page": the combinations that occur, each once
        combo = re.search(
            r"(?<!count )(?<!number of )(?<!many )(?<!count of )\b(?:distinct|unique|different) "
            r"(?:(?:combinations?|pairs?|combos?|tuples?) (?:of )?)?(?:\( )?"
            r"(?P<cols>(?:C\d+|S\d+)(?:(?: ,| and| ,? and| &| /| x) (?:C\d+|S\d+))+)(?: \))?"
            r"(?: (?:pairs?|combinations?|combos?|tuples?))?",
            self.sym,
        )
        if combo and not re.search(r"\b(?:count|number|how many)\b", self.sym):
            refs = [self.colref(k) for k in re.findall(r"[CS](\d+)", combo.group("cols"))]
            if all(r.source is self.main.source for r in refs):
                self.req.select = [self.col(r) for r in refs]
                self.req.distinct = True
                self.take(combo)
                self.render()
                return
        m = re.search(
            r"(?<!count )(?<!number of )(?<!many )(?<!count of )\b(?:distinct|unique|different) (C\d+)s?"
            r"(?: values?| names?)?|\b(?:every|each) (C\d+) (?:that (?:appears?|occurs?|exists?)|once)",
            self.sym,
        )
        if m is None and self.req.distinct and not self.req.distinct_keys:
            m = re.search(r"\b(?:list of|all|every|each|the) (C\d+)s?\b", self.sym)
        if m is None or re.search(r"\b(?:count|number|how many|per|by)\b", self.sym[: m.start()][-20:]):
            return
        if not re.search(r"\b(?:distinct|unique|different|once|repeats?|duplicates?)\b", self.p.norm):
            return
        if self.grouped() or re.search(r"\b(?:count|number|how many)\b", self.sym):
            return  # "distinct customers per country" counts; it does not list
        ref = self.colref(next(g for g in m.groups() if g))
        self.req.select = [self.col(ref)]
        self.req.distinct = True
        self.take(m)
        self.render()

    # ---- union of files with the same columns
    def rule_overlay(self) -> None:
        """'apply orders_updates.csv to orders.csv (updates win, new ids added)', 'upsert X onto a copy of
        Y keyed on order_id': a new table of the base rows with the update rows in place of those of
        the same key, and the update rows with new keys added."""
        uses = list(self.req.sources)
        if len(uses) != 2 or [c.lower() for c in uses[0].source.column_names] != [
            c.lower() for c in uses[1].source.column_names
        ]:
            return
        verbs = re.search(
            r"\b(?:apply|applying|applied|overlay|overlaid|overlaying|upsert|upserting|upserted|merge|merged|"
            r"merging|layer|layered)\b",
            self.sym,
        )
        wins = re.search(
            r"\b(?:replaces?|replacing|replaced|wins?|winning|overrides?|overriding|take precedence|takes "
            r"precedence|instead|on top of|over|onto|updated version|upsert\w*|overlaid)\b",
            self.sym,
        )
        if not verbs and not wins:
            return
        if not wins:
            return  # the updates must be said to win: 'replace', 'instead', 'on top of', 'over'
        changing = [
            u for u in uses if re.search(r"update|delta|change|patch|correction|new", u.source.stem.lower())
        ]
        if len(changing) != 1:
            raise PlannerQuestion(
                f"Which of {uses[0].source.name} and {uses[1].source.name} holds the newer rows?",
                hint="say 'apply <updates file> to <base file>'",
            )
        new = changing[0]
        base = next(u for u in uses if u is not new)
        keys = [a for a, _ in self.join_keys(base.source, new.source)]
        # the key: said with 'by'/'on' (read already as the join key), or the one key column named
        named = {r.column for it in self.items if it.kind == "col" for r in it.ref if r.column in keys}
        said_keys = [k for k in [self.join_on, *self.p.mode_info[2]] if k in keys]  # "by", "keyed on"
        key = said_keys[0] if said_keys else None
        key = key or (named.pop() if len(named) == 1 else keys[0] if len(keys) == 1 else None)
        if key is None:
            raise PlannerQuestion(
                f"On which key do the rows of {new.source.name} replace those of {base.source.name}?",
                hint="say 'by <key column>'",
                candidates=[f"by {a}" for a in keys],
            )
        if base is not self.main:
            self.make_main(base.source)
        self.req.sources = [self.main, *(u for u in self.req.sources if u is not self.main)]
        self.req.overlay_key = key
        for it in self.items:
            if it.kind == "col" and any(r.column == key or r.column.lower() == key.lower() for r in it.ref):
                it.used = True  # "new order_ids are added": the key, said again
        for m in self.find(
            r"\b(?:apply|applying|applied|overlay|overlaid|overlaying|upsert|upserting|upserted|merge|merged|"
            r"merging|layer|layered|replaces?|replacing|replaced|wins?|winning|overrides?|overriding|"
            r"precedence|instead|on top of|over|onto|updated|update|version|new|unseen|added|adding|"
            r"appended|appending|included|include|existing|old|original|ones|rows|copy|result|current|state|"
            r"takes?|exist|exists|only|also|appears?|keyed|keeping|kept|with|by|on|same|using)\b"
        ):
            self.take(m)
        self.render()

    def rule_union(self) -> None:
        files = list(self.req.sources)
        if len(files) < 2:
            return
        same = all(
            [c.lower() for c in u.source.column_names] == [c.lower() for c in files[0].source.column_names]
            for u in files[1:]
        )
        said = re.search(
            r"\b(combine|combined|combining|union|stack|stacked|stacking|concatenate|concatenated|concat|"
            r"together|merge the|merged|merging|append(?:ing)? .* and|both|all of)\b",
            self.sym,
        )
        if same and (said or not re.search(r"\bjoin", self.sym)):
            self.req.union = True
            if said:
                self.take(said)
            self.render()
            # how the files are described: "the two yearly files", "the 2025 and 2026 order files"
            stems = " ".join(u.source.stem.lower() for u in files)
            for m in self.find(
                r"\b(?:(?:N\d+|both|all) )?(?:(?:N\d+|D\d+)(?: ,| and| ,? and| &)? (?:N\d+|D\d+) )?"
                r"(?:yearly |"
                r"annual |monthly |quarterly |daily |separate |different |individual )?(?:S\d+ )?"
                r"(?:files?|csvs?|"
                r"exports?|extracts?|tables?)\b|\b(?:into |in )?(?:one|a single|single|one single) "
                r"(?:table|dataset)\b"
                r"|\bkeeping (?:all|every) (?:the )?(?:rows|records)\b"
            ):
                ok = True
                for k in re.findall(r"[ND](\d+)", m.group(0)):
                    it = self.items[int(k)]
                    word = it.tokens[-1].raw.lower()
                    if not (word in stems or (it.kind == "num" and it.ref == len(files))):
                        ok = False
                if ok:
                    self.take(m)
            self.render()

    # ---- running totals: "running total of amount by order_date"
    def rule_running(self) -> None:
        for ytd in self.find(r"(D\d+) (?=(?:running|cumulative|cumulated|accumulated)\b)"):
            if "to date" in " ".join(t.norm for t in self.item(ytd.group(1)).tokens):
                self.take(ytd)  # "a year-to-date running total": how the total runs, not a filter
        self.render()
        if self.moving_window():
            return
        m = re.search(
            rf"\b(?:running|cumulative|cumulated|accumulated|rolling sum|to date) ?(?:total|sum|count|"
            rf"totals)?(?: column| field| value)?"
            rf"(?: of| for)? ?(?:the )?(C\d+|S\d+)?(?: (?P<conn>over|by|ordered by|sorted by|along|across|"
            rf"per|in order of|through|as of) (?:the )?(C\d+|D\d+|{UNIT_WORDS}))?",
            self.sym,
        )
        if not m:
            return
        func = "count" if re.search(r"count", m.group(0)) else "sum"
        col = None
        before = re.search(
            r"(C\d+) (?:with|and|plus|including|together with|alongside) (?:a |an |the |its |their )?$",
            self.sym[: m.start()],
        )
        if m.group(1) and self.item(m.group(1)).kind != "src":
            col = self.col(self.colref(m.group(1), numeric=True))
        elif before is not None and self.colref(before.group(1)).numeric:
            # "daily revenue with a running total": the total runs over the measure said before
            col = self.col(self.colref(before.group(1), numeric=True))
            self.add_measure(ir.Measure("sum", col, alias=f"total_{col.name}"))
            for k in self.at(before.start(), before.end()):
                self.items[k].used = True
        elif func == "sum":
            col = self.col(self.only_measure("a running total"))
        order_ref = None
        said = m.group(3)
        if said and said.startswith("C"):
            order_ref = self.colref(said[1:])
        if order_ref is None:
            order_ref = self.date_column()
        self.take(m)
        self.render()
        om = re.search(
            r"\b(?:ordered|sorted|order|in order of|over|by|going through (?:the )?S\d+ by) (?:by )?(?:the "
            r")?(C\d+)"
            r"|\bin (C\d+) (?:order|S\d+)\b",
            self.sym,
        )
        if om and (om.group(1) or om.group(2)):
            om_col = om.group(1) or om.group(2)
        else:
            om_col = None
        part = []
        if (
            om
            and om_col
            and (self.colref(om_col).temporal or self.colref(om_col).keyish or "order" in om.group(0))
        ):
            if (
                m.group("conn") in ("by", "per")
                and order_ref is not None
                and order_ref.column != self.colref(om_col).column
            ):
                # "cumulative sum of amount by customer_id in order_id order": by the customer, in that order
                part = [self.col(order_ref)]
            order_ref = self.colref(om_col)
            self.take(om)
            self.render()
        pm = re.search(r"\b(?:per|for each|for every|by|within each|in each) (?:the )?(C\d+|S\d+)", self.sym)
        if pm and not part:
            part = [self.col(self.colref(pm.group(1)[1:]))]
            self.take(pm)
        measure = ir.Measure(func=func, col=col if func == "sum" else None)
        alias = "running_count" if func == "count" else f"running_{col.name if col else 'total'}"
        if re.search(r"\btotal\b", m.group(0)):
            alias = "running_total"
        self.req.running = ir.Running(measure, self.col(order_ref), part, alias)
        self.render()

    def moving_window(self) -> bool:
        """'a 3-month moving average of that total', 'rolling three-month mean', '7-day rolling average':
        the average (or sum) of this row and the ones before it, in date order."""
        unit = r"(?:months?|days?|weeks?|years?|quarters?|rows?|periods?)"
        m = re.search(
            rf"\b(?:(?P<n>N\d+) (?:- )?{unit} )?(?:moving|rolling|trailing|sliding) "
            rf"(?:(?P<n2>N\d+) (?:- )?{unit} )?(?P<f>average|avg|mean|sum|total)"
            rf"(?: of (?:the |that |this )?(?:monthly |daily |weekly |yearly |quarterly )?"
            rf"(?P<c>C\d+|total|sum|S\d+))?"
            rf"(?: over (?:the )?(?:last )?(?P<n3>N\d+) {unit})?",
            self.sym,
        )
        if m is None:
            return False
        n = m.group("n") or m.group("n2") or m.group("n3")
        if n is None:
            raise PlannerQuestion(
                "Over how many rows should the moving window run?", hint="say e.g. 'a 3-month moving average'"
            )
        frame = int(self.item(n[1:]).ref)
        func = "avg" if m.group("f") in ("average", "avg", "mean") else "sum"
        said = m.group("c")
        col = self.col(self.colref(said[1:], numeric=True)) if said and said.startswith("C") else None
        self.pending_window = (func, frame, col)
        self.take(m)
        self.render()
        return True

    # ---- shares: "share of revenue per country", "percentage of orders by status"
    def rule_share(self) -> None:
        if self.sum_rate():
            return
        of_total = re.search(
            r"\b(?:as |in )?(?:a |the )?(percentage|percent|pct|%|share|proportion|fraction)s? of (?:the )?"
            r"(?:overall |grand |whole |entire |total )?(?:total|sum|all|everything|whole)\b",
            self.sym,
        )
        if of_total is None and ({"percent", "fraction"} & set(self.hints)):
            # "status counts as percentages of all orders": the format word was read as a hint
            of_total = re.search(
                r"(?<=~ )(?P<w>of) (?:the )?(?:overall |grand |whole |entire |total )?"
                r"(?:total|sum|all|everything|whole)\b",
                self.sym,
            )
        if of_total:
            self.share_of_total = (
                "percent" if of_total.group(1) in ("percentage", "percent", "pct", "%", "of") else "fraction"
            )
            if "fraction" in self.hints:
                self.share_of_total = "fraction"
            elif "percent" in self.hints:
                self.share_of_total = "percent"
            self.take(of_total)
            # "percentage of total order amount", "share of all the money": the measure follows
            nxt = re.match(r" (?:the |our |its |their )?(C\d+)", self.sym[of_total.end() :])
            if nxt and self.colref(nxt.group(1)[1:]).numeric and not self.colref(nxt.group(1)[1:]).keyish:
                ref = self.colref(nxt.group(1)[1:], numeric=True)
                self.add_measure(ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}"))
                for k in self.at(of_total.end() + nxt.start(1), of_total.end() + nxt.end(1)):
                    self.items[k].used = True
            self.render()
            return
        rate_word = r"(percentage|percent|pct|%|share|proportion|fraction|ratio|rate)s?"
        rate = (
            re.search(
                rf"\b{rate_word}(?: ~)* (?:of|in|among) (?:the |all |its |their |those )?(?:(?:each|every) "
                rf"(?:C\d+|S\d+) )?(?:S\d+ )?(?:(?"
                rf":that |which |"
                rf"who )?(?:are|were|got|have been|had been|is|was|being|get|got) )?(?:(?:that|which|who) )?"
                rf"(?P<v>V\d+)(?: S\d+)?",
                self.sym,
            )
            or re.search(rf"\b(?P<v>V\d+)(?: S\d+)? {rate_word}", self.sym)
            or re.search(
                rf"\b(?:divide |divided |dividing )?(?:the )?(?:number of |count of )?(?P<v>V\d+)(?: S\d+)? "
                rf"(?:divided by|by|/|over|out of|to|relative to|against) "
                rf"(?:the )?(?:number of |count of |total |all )?(?:all )?(?:the )?(?:S\d+|rows|total)(?P<w> "
                rf"{rate_word})?",
                self.sym,
            )
            or re.search(
                rf"\b(?:number of |count of )?(?P<v>V\d+)(?: S\d+)? (?:divided by|/|over|out of|to|relative "
                rf"to) "
                rf"(?:the )?(?:number of |count of |total |all )?(?:all )?(?:S\d+|rows|total)(?P<w> "
                rf"{rate_word})?",
                self.sym,
            )
        )
        if rate is None and self.presence_rate(rate_word):
            return
        if rate:
            word = next((g for g in rate.groups() if g and not re.fullmatch(r"V\d+| .*", g)), "") or ""
            percent = self.percent_said(word)
            vref = self.value_refs(rate.group("v"))[0]
            cond = ir.Compare(ir.Col(self.use(vref.source).alias, vref.column), "=", vref.value)
            label = re.sub(r"\W+", "_", vref.value.lower()).strip("_")
            self.add_rate("count", None, cond, label, percent)
            self.take(rate)
            per = re.search(r"\b(?:each|every) ((?:C|S)\d+)", rate.group(0))
            if per:  # "the proportion of each category's orders that were returned": per category
                g = self.group_key_for(self.item(per.group(1)))
                if g is not None and g.col not in [x.col for x in self.req.group]:
                    self.req.group.append(g)
                    self.group_said = True
            self.render()
            # the same rate said again: "purchase ratio (purchases / all events)"
            for m in self.find(
                r"\b(?:the )?(?:number of |count of )?(V\d+)(?: S\d+)? (?:divided by|/|over|out of|by) "
                r"(?:the )?"
                r"(?:number of |count of |total |all )?(?:all )?(?:the )?(?:S\d+|rows|total)"
            ):
                again = self.value_refs(m.group(1))
                if again and again[0].value == vref.value and again[0].column == vref.column:
                    self.take(m)
            for m in self.find(r"\b(?:divide|compute|work out|calculate)\b"):
                self.take(m)
            self.render()
            return
        share_m = re.search(
            r"\b(percentage|percent|pct|%|share|proportion|fraction|ratio)s? (?:of (?:the |all )?)?(?:total |"
            r"all )?"
            r"(?:(C\d+|S\d+|count|number of S\d+|orders|rows))?",
            self.sym,
        )
        if not share_m:
            return
        percent = share_m.group(1) in ("percentage", "percent", "pct", "%") or "percent" in self.hints
        kind = "fraction" if "fraction" in self.hints or not percent else "percent"
        what = share_m.group(2) or ""
        prev = re.search(r"(C\d+) $", self.sym[: share_m.start()])
        if (
            not what
            and prev
            and self.colref(prev.group(1)[1:]).numeric
            and not self.colref(prev.group(1)[1:]).keyish
        ):
            what = prev.group(1)  # "revenue share per country"
            for k in self.at(prev.start(1), prev.end(1)):
                self.items[k].used = True
        if not what:  # "each country's percentage of total order amount": the measure follows
            nxt = re.match(
                r" ?(?:of |in )?(?:the |all |our |total |overall )*(C\d+)", self.sym[share_m.end() :]
            )
            if nxt:
                what = nxt.group(1)
                for k in self.at(share_m.end() + nxt.start(1), share_m.end() + nxt.end(1)):
                    self.items[k].used = True
        if what.startswith("C") and self.colref(what[1:]).numeric and not self.colref(what[1:]).keyish:
            ref = self.colref(what[1:], numeric=True)
            measure = ir.Measure("sum", self.col(ref), alias=f"{kind}_{ref.column}", share=kind)
        else:
            measure = ir.Measure("count", None, alias=f"{kind}_of_rows", share=kind)
        self.take(share_m)
        self.req.measures.append(measure)
        self.render()

    def percent_said(self, word: str) -> bool:
        """A rate as 0-100 when its word or a format note says so; '(0 to 1)' or 'as a fraction' wins."""
        if "fraction" in self.hints:
            return False
        return word in ("percentage", "percent", "pct", "%") or "percent" in self.hints

    def add_rate(self, func: str, col: ir.Col | None, where: ir.Cond, label: str, percent: bool) -> None:
        """A measure over the rows that match, as a share of the same measure over all the group's rows."""
        self.req.measures.append(
            ir.Measure(
                func,
                col,
                distinct=func == "count" and col is not None,
                where=where,
                alias=f"{label}_{'pct' if percent else 'ratio'}",
                share="rate_percent" if percent else "rate_fraction",
            )
        )

    def presence_rate(self, rate_word: str) -> bool:
        """'the percentage of customers with an email': the rows that have a value, out of all rows."""
        m = re.search(
            rf"\b{rate_word} of (?:the |all |our )?(?P<d>distinct |unique |different )?(?P<s>S\d+ )?"
            r"(?:(?:in|from|of) )?(?:(?:that|which|who) )?"
            r"(?P<how>without|with no|with|having|have|has|that have|missing|lacking)"
            r"(?: an?| any| some)? (?P<c>C\d+)",
            self.sym,
        )
        if m is None:
            return False
        ref = self.colref(m.group("c"))
        missing = m.group("how") in ("without", "with no", "missing", "lacking")
        percent = self.percent_said(m.group(1))
        counted: ir.Col | None = None
        if m.group("d"):  # "unique customers": each counted once
            keys = self.key_of(self.main.source)
            counted = self.col(keys[0]) if keys else None
        label = f"{'without' if missing else 'with'}_{ref.column}"
        self.add_rate("count", counted, ir.IsNull(self.col(ref), negated=not missing), label, percent)
        self.take(m)
        self.render()
        return True

    def sum_rate(self) -> bool:
        """'returned amount divided by total amount', 'the fraction of its amount from returned orders':
        a sum over the rows that match, out of the sum over all the group's rows."""
        words = r"(?P<w>percentage|percent|pct|%|share|proportion|fraction|ratio|rate)s?"
        m = (
            re.search(
                rf"\b(?:{words} of )?(?:the )?(?P<v>V\d+)(?: S\d+)? (?P<c>C\d+) (?:divided by|/|over|out of|"
                r"to|relative to|as a share of|as a fraction of|as a percentage of|compared to) "
                r"(?:the |all |its |their )?(?:total |overall |whole |entire )?(?:of )?(?:the |all )?"
                r"(?P<c2>C\d+)",
                self.sym,
            )
            or re.search(
                rf"\b{words} of (?:the |its |their )?(?:total |overall )?(?P<c>C\d+) (?:that |which )?"
                r"(?:comes? |coming |came |is |was )?(?:from|in|on|for|of|through) (?:the )?(?P<v>V\d+)"
                r"(?: S\d+)?",
                self.sym,
            )
            or re.search(
                rf"\b{words} of (?:the )?(?P<v>V\d+)(?: S\d+)? (?P<c>C\d+) (?:to|out of|over|in|of|against) "
                r"(?:the |all |its |their )?(?:total |overall )?(?P<c2>C\d+)",
                self.sym,
            )
        )
        if m is None:
            return False
        ref = self.colref(m.group("c"))
        if not ref.numeric or ref.keyish:
            return False
        if m.groupdict().get("c2") and self.colref(m.group("c2")).column != ref.column:
            return False
        vrefs = self.value_refs(m.group("v"))
        if not vrefs:
            return False
        label = re.sub(r"\W+", "_", vrefs[0].value.lower()).strip("_")
        self.add_rate(
            "sum",
            self.col(ref),
            self.in_cond(vrefs),
            f"{label}_{ref.column}",
            self.percent_said(m.group("w") or ""),
        )
        self.take(m)
        self.render()
        return True

    # ---- anti- and semi-joins: "customers with no order in 2026", "products never ordered"
    def rule_anti(self) -> None:
        zero = self.num(0)
        pat = (
            rf"\b(?:((?:with|had|have|has|having|got) {zero}|with no|without|with zero|that have no|who "
            rf"have no|which have no|having no|that never|"
            r"who never|which never|never|that have not|who have not|who haven't|that haven't|"
            r"that don't have|who don't have|which don't have|that do not have|who do not have|don't have|"
            r"do not have|"
            r"that doesn't have|which doesn't have|that does not have|that were "
            r"never|that was never|did not|didn't|does not|doesn't|has not|hasn't|have not|haven't|had no|"
            r"had zero|were not|was not|weren't|wasn't|nobody|no one|not|no)|(with|with at least one|who "
            r"have|"
            r"that have|which have|having|who|that))"
            r" (?:place |placed |make |made |have |had |receive |received |get |got |been |buy |bought |"
            r"(?P<vc>C\d+) )?"
            rf"(?:at least )?(?:any |a |an |single |one |zero |{self.num(0)} )?(?:placed |made |had |"
            r"received |got |been )?(?P<y>(?:N\d+|D\d+) )?(?P<v>(?:V\d+ )+)?(?P<s>S\d+)"
            r"(?: at all| anything| whatsoever| ever)?"
            r"(?: (?:that|which|who)? ?(?:was|were|is|are|got|had been|has been|with status) (?P<v2>V\d+))?"
        )
        for m in self.find(pat):
            it = self.item(m.group("s"))
            other: Source = it.ref
            subject = re.search(r"(S\d+) $", self.sym[: m.start()])
            if other is self.main.source and subject:
                # "customers who have not ordered in orders.csv, from customers.csv": the rows kept are
                # the subject's, whichever file was named first
                owner: Source = self.item(subject.group(1)).ref
                if owner is not other and any(u.source is owner for u in self.req.sources):
                    self.make_main(owner)
            if other is self.main.source:
                continue
            if m.group("vc") and self.item(m.group("vc")).text not in ("placed", "made", "ordered", "bought"):
                continue  # "who have never placed an order": 'placed' says what was (not) done
            keys = self.join_keys(self.main.source, other)
            if not keys:
                continue
            negated = bool(m.group(1))
            if not negated and self.join_said():
                continue  # "orders joined with customers" is a join, not a filter
            year = m.group("y")
            if year and self.item(year[:-1]).kind == "num":
                n = self.item(year[:-1]).ref
                if not (float(n).is_integer() and 1990 <= n <= 2100):
                    continue
            qualifiers = re.findall(r"V\d+", (m.group("v") or "") + " " + (m.group("v2") or ""))
            refs = [r for k in qualifiers for r in self.item(k).ref if r.source is other]
            if len(refs) < len(qualifiers):
                continue  # "without a cancelled order": the value must be one of the other source's
            use = self.uses.get(id(other)) or self.use(other)
            self.take(m)
            self.render()
            # conditions on the other source's rows: "no cancelled order", "no order in 2026"
            where: list[ir.Cond] = [self.in_cond(refs)] if refs else []
            tail = self.sym[self.spans[int(m.group("s")[1:])][1] :]
            dm = re.match(
                r"(?: ~)*(?: (?:in|from|of|at|according to)(?= (?:D|~)))?(?: ~)* ?(?:placed |made |ordered |"
                r"bought )?(?:during |within |for )?(D\d+)",
                tail,
            )
            year = m.group("y")
            if year and self.item(year[:-1]).kind == "date":
                dm = re.match(r" ?(D\d+)", " " + year)
            elif year and self.item(year[:-1]).kind == "num":
                n = self.item(year[:-1]).ref
                col = self.date_column(other)
                where_y = self.date_cond(
                    ir.Col(use.alias, col.column),
                    Period(date(int(n), 1, 1), date(int(n) + 1, 1, 1), str(int(n))),
                )
                self.req.where.append(ir.Exists(use, keys, [*where, where_y], negated=negated))
                self.p.readings.append(f"{'without' if negated else 'with'} matching rows in {other.name}")
                continue
            if dm:
                col = self.date_column(other)
                spec = self.item(dm.group(1)).ref
                where.append(self.date_cond(ir.Col(use.alias, col.column), spec))
                self.item(dm.group(1)).used = True
            self.req.where.append(ir.Exists(use, keys, where, negated=negated))
            self.p.readings.append(f"{'without' if negated else 'with'} matching rows in {other.name}")
        self.render()

    def rule_keep_unmatched(self) -> None:
        """'including products with no orders', '0 for products with none', 'zeros included': the
        rows of the main source stay when nothing matches (a left join; counts of them are 0)."""
        zero = self.num(0)
        m = re.search(
            r"\b(?:including|incl|include|includes|even|also|as well as|keeping|keep|listing|plus)(?: also)?"
            r"(?: the| those| ones| any| all)*(?: S\d+)? (?:with|that have|who have|which have|having|"
            rf"that had) (?:no|zero|{zero}|none)(?: S\d+)?"
            rf"|\b(?:{zero}|zero) (?:for|if|when|where) (?:the |those |any )?(?:S\d+ |ones )?(?:with )?"
            r"(?:none|no S\d+|nothing|no match)"
            rf"|\b(?:zeros?|{zero}s?) (?:included|too|as well|allowed)"
            r"|\b(?:incl|including|include|with) zeros?"
            r"|\bnot (?:just|only) (?:the )?(?:ones|S\d+) (?:that|which|who) \w+",
            self.sym,
        )
        if m is None:
            return
        self.keep_unmatched = True
        self.take(m)
        # "how many orders (orders.csv) does each customer in customers.csv have, including ...": the
        # rows kept are those of the source every row of which is listed, whichever was named first
        for e in re.finditer(r"\b(?:each|every|all|all the) (S\d+)", self.sym):
            owner = self.item(e.group(1)).ref
            if owner is not self.main.source and owner in self.p.said:
                self.make_main(owner)
                break
        self.render()

    def rule_not_in(self) -> None:
        """'rows whose order_id is not in orders.csv', 'minus any order_id already present in orders.csv':
        the rows of the main source whose key the other named file does (or does not) hold."""
        toks = self.p.tokens
        for j, other in sorted(getattr(self.p, "named_at", {}).items()):
            if other is self.main.source:
                continue
            before = " ".join(t.norm for t in toks[max(0, j - 9) : j])
            m = re.search(
                r"\b(?P<col>[a-z_]+) (?:(?:is|are|does|do|did|that|which|who) )*(?P<neg>not|n't|never) "
                r"(?:already )?(?:(?:exist|exists|appear|appears|occur|occurs|present|found|listed|seen|"
                r"included|contained|there) )?in(?: the)?$"
                r"|\b(?P<neg2>minus|except|excluding|without|other than) (?:any |the |those |all |every )?"
                r"(?P<col2>[a-z_]+) (?:(?:that|which) (?:is |are )?)?(?:already )?(?:present|found|existing|"
                r"listed|seen|exist|exists|appearing|there) in(?: the)?$"
                r"|\b(?P<col3>[a-z_]+) (?:(?:is|are|that|which) )*(?:also |already )?(?:present|found|listed|"
                r"seen|appearing|existing|exists|exist) in(?: the)?$",
                before,
            )
            if m is None:
                continue
            after = re.match(
                r",? ?(?:by|on|using|matching on|matched on) (?:the )?([a-z_]+)",
                " ".join(t.norm for t in toks[j + 1 : j + 6]),
            )
            said = m.group("col") or m.group("col2") or m.group("col3")
            mine = [r for r in self.columns(said, exact_only=True) if r.source is self.main.source]
            if not mine and after is not None:
                said = None  # "orders that do not appear in orders.csv by order_id": the key comes after
                mine = [
                    r for r in self.columns(after.group(1), exact_only=True) if r.source is self.main.source
                ]
            theirs = [c for c in other.column_names if mine and c.lower() == mine[0].column.lower()]
            if not mine or not theirs:
                continue
            negated = bool(m.group("neg") or m.group("neg2"))
            use = self.uses.get(id(other)) or self.use(other)
            self.req.where.append(ir.Exists(use, [(mine[0].column, theirs[0])], [], negated=negated))
            self.p.readings.append(
                f"{'without' if negated else 'with'} a matching {mine[0].column} in {other.name}"
            )
            start = j - len(before[m.start() :].split())
            end = j + 1 + (len(after.group(0).split()) if after and said is None else 0)
            for it in self.items:
                if any(start <= t.index < end for t in it.tokens):
                    it.used = True
        self.render()

    def _fresh_alias(self, source: Source) -> str:
        base = re.sub(r"\W+", "_", source.stem.lower())
        alias, n = base, 2
        while any(u.alias == alias for u in self.req.sources):
            alias, n = f"{base}_{n}", n + 1
        return alias

    # ---- conditional counts: "number of shipped and cancelled orders per country"
    def rule_hints(self) -> None:
        """Format notes that shape the output: '(0-100)', 'as two columns', 'side by side'."""
        zero, one, hundred = self.num(0), self.num(1), self.num(100)
        value = "".join(
            f"C{k}|" for k, it in enumerate(self.items) if it.kind == "col" and it.text == "value"
        )
        pats = {
            "percent": rf"(?:\( ?)?(?:{zero} (?:-|to) {hundred}|(?:in|as) percent(?:s|ages?)?\b(?! of)|"
            rf"as (?:a )?percentages?(?! of)|in per cent|(?:on|from) (?:a )?{zero} (?:-|to) {hundred} "
            rf"scale)(?: ?\))?",
            "fraction": rf"(?:\( ?)?(?:{zero} (?:-|to) {one}|(?:a |as a )?(?:value|{value}fraction|number|"
            rf"decimal|"
            rf"ratio) (?:between|from) {zero} (?:and|to) {one}|between {zero} and {one}|from {zero} to {one}|"
            rf"as a (?:fraction|decimal)(?! of))(?: ?\))?",
            "separate": rf"\b(?:(?:as|in) )?(?:{self.num(2, 3, 4)}|separate) (?:separate )?columns|"
            r"\bside by side|\bseparately|\bnext to each other|"
            r"\bnext to each other|\bin columns of their own|\beach in (?:its|their) own column",
            "label": rf"\( ?{self.num(0, 1)} (?:-|to) {self.num(4, 7, 12, 23, 24, 31, 52, 53)} ?\)"
            r"|\bas (?:a )?numbers? (?:from )?N\d+ (?:-|to) N\d+|"
            rf"\b(?:(?:as )?(?:a )?numbers? )?(?:from |between )?{self.num(0, 1)} (?:-|to|through|and) "
            rf"{self.num(4, 7, 12, 23, 24, 31, 52, 53)}\b",
        }
        self.hints: set[str] = set()
        for name, pat in pats.items():
            for m in self.find(pat):
                self.hints.add(name)
                self.take(m)
            self.render()
        if re.search(r"\b(?:percent|percentage|pct)\b", self.sym) and "fraction" not in self.hints:
            self.hints.add("percent")

    # ---- conditional measures: "number of shipped and cancelled orders per country" (two columns)
    def rule_conditional_counts(self) -> None:
        if not re.search(GROUP_INTRO, self.sym) and "separate" not in self.hints:
            return
        vals = [k for k, it in enumerate(self.items) if it.kind == "val" and not it.used]
        by_col: dict[str, list[int]] = {}
        for k in vals:
            by_col.setdefault(self.items[k].ref[0].column, []).append(k)
        for _column, ks in by_col.items():
            if len(ks) < 2:
                continue
            between = " ".join(self.items[j].text for j in range(ks[0] + 1, ks[-1]) if not self.items[j].used)
            if re.search(r"\bor\b", between) or not re.search(r"\band\b|,|\bvs\b|\bversus\b", between):
                continue
            plural = all(
                self.items[k].text.endswith("s") and not self.items[k].ref[0].value.lower().endswith("s")
                for k in ks
            )  # "views, purchases per page": the events counted
            if not plural and not re.search(
                r"\b(?:count|counts|counting|counted|number|numbers|how many|how often|tally|total|sum|"
                r"amount)\b",
                self.sym,
            ):
                continue
            money = re.search(
                r"\b(?:total|sum|revenue|amount|spend)\b",
                " ".join(
                    self.items[j].text for j in range(max(0, ks[0] - 4), min(len(self.items), ks[-1] + 3))
                ),
            )
            for k in ks:
                r = self.items[k].ref[0]
                col = ir.Col(self.use(r.source).alias, r.column)
                alias = re.sub(r"\W+", "_", r.value.lower()).strip("_") or "value"
                cond = ir.Compare(col, "=", r.value)
                if money and not re.search(r"\b(?:count|number|how many)\b", self.sym):
                    ref = self.only_measure("the total")
                    self.req.measures.append(
                        ir.Measure("sum", self.col(ref), where=cond, alias=f"{alias}_{ref.column}")
                    )
                else:
                    self.req.measures.append(ir.Measure("count", None, where=cond, alias=f"{alias}_count"))
                self.items[k].used = True
            for m in self.find(
                r"\b(?:(?:one |a |another |second |other )?(?:columns? )?(?:count|counts|counting|number"
                r"|numbers|"
                r"how many|how often|tally)(?: of)?|(?:and )?(?:another|one) (?:columns? )?"
                r"(?:counting|for)?)\b"
            ):
                self.take(m)
            self.render()
            return
        if self.value_and_overall(vals):
            return
        # two periods: "total amount in 2025 and total amount in 2026 per product"
        # (or "2025 sales and 2026 sales")
        dates = [k for k, it in enumerate(self.items) if it.kind == "date" and not it.used]
        years = [
            k
            for k, it in enumerate(self.items)
            if it.kind == "num"
            and not it.used
            and it.ref is not None
            and float(it.ref).is_integer()
            and 1990 <= it.ref <= 2100
            and len(it.tokens) == 1
            and re.fullmatch(r"\d{4}", it.tokens[0].raw)
        ]
        if len(dates) < 2 and len(years) >= 2 and not dates:
            dates = years
        if len(dates) >= 2 and (
            "separate" in self.hints or re.search(r"\b(?:columns?|each|side)\b", self.sym)
        ):
            cols = [
                k
                for k, it in enumerate(self.items)
                if it.kind == "col" and not it.used and self.colref(k).numeric and not self.colref(k).keyish
            ]
            names = {self.colref(k).column for k in cols}
            ref = self.colref(cols[0]) if len(names) == 1 else self.only_measure("the total")
            money_said = re.search(
                r"\b(?:total|totals|sum|sums|revenue|amount|spend|sales|turnover|C\d+)\b", self.sym
            ) and not re.search(r"\b(?:count|counts|number|how many)\b", self.sym)
            for k in cols:
                if self.colref(k).column == ref.column:
                    self.items[k].used = True
            for k in dates:
                spec = self.items[k].ref
                if self.items[k].kind == "num":
                    year = int(self.items[k].ref)
                    spec = Period(date(year, 1, 1), date(year + 1, 1, 1), str(year))
                dcol = self.col(self.date_column())
                period = self.date_cond(dcol, spec)
                label = re.sub(r"\W+", "_", self.items[k].tokens[-1].norm).strip("_")
                if money_said:
                    self.req.measures.append(
                        ir.Measure("sum", self.col(ref), where=period, alias=f"{ref.column}_{label}")
                    )
                else:
                    self.req.measures.append(ir.Measure("count", None, where=period, alias=f"count_{label}"))
                self.items[k].used = True
            self.render()
            for m in self.find(
                r"\b(?:total|totals|sum|sums|revenue|count|number)(?: of)?(?: C\d+)?\b|\b"
                r"(?:next to|beside) each "
                r"other\b|\b(?:in |as )?(?:separate |their own |own )?columns\b"
            ):
                self.take(m)
            self.render()

    def value_and_overall(self, vals: list[int]) -> bool:
        """'the total amount of shipped orders and the total amount of all orders', 'sum amount where
        shipped, sum amount overall': one measure said twice, once for a value and once for all rows."""
        if len(vals) != 1:
            return False
        aggs = re.findall(r"\b(?:total|sum|count|number|average|avg|mean)\b", self.sym)
        overall = self.find(
            r"\b(?:of |for |over |across )?(?:all|every)(?: the)?(?: S\d+| rows| C\d+)?\b"
            r"|\b(?:overall|altogether|in total|regardless of C\d+|whatever the C\d+)\b"
        )
        if len(aggs) < 2 or not overall:
            return False
        k = vals[0]
        r = self.items[k].ref[0]
        cond = ir.Compare(ir.Col(self.use(r.source).alias, r.column), "=", r.value)
        label = re.sub(r"\W+", "_", r.value.lower()).strip("_") or "value"
        func = (
            AGGREGATES.get(next(a for a in aggs if a not in ("count", "number")), "sum")
            if any(a not in ("count", "number") for a in aggs)
            else "count"
        )
        if func == "count":
            self.req.measures.append(ir.Measure("count", None, where=cond, alias=f"{label}_count"))
            self.add_measure(ir.Measure("count", None, alias="count"))
        else:
            ref = self.only_measure("the total")
            self.req.measures.append(
                ir.Measure(func, self.col(ref), where=cond, alias=f"{label}_{ref.column}")
            )
            self.add_measure(ir.Measure(func, self.col(ref), alias=measure_alias(func, ref.column)))
        self.items[k].used = True
        for m in overall:
            self.take(m)
        for m in self.find(
            r"\b(?:total|sum|count|number|average|avg|mean)(?: of)?(?: the)?(?: C\d+)?(?: of| where| for)?"
        ):
            self.take(m)
        self.render()
        return True

    # ---- having: "countries with more than 20 customers", "customers who spent over 1000 in total"
    def rule_having(self) -> None:
        m = re.search(
            rf"\b(C\d+|S\d+)(?: in| from| of)? (?:with|having|that have|which have|who have|that had|who had|"
            rf"whose|"
            rf"have|has) (?:a |an )?(?P<agg>total|average|avg|mean|median|combined|overall|sum|maximum|"
            rf"minimum|max|min)? ?"
            rf"(?:(C\d+) )?{CMP} (N\d+) ?(?:(?:in|of|for) (?:total |combined |overall )?)?(?:distinct |"
            rf"unique |"
            rf"different )?(S\d+|C\d+|orders|rows|records)?",
            self.sym,
        )
        m2 = re.search(
            rf"\b(S\d+|C\d+)(?: in| from| of)? (?:(?:who|that|which|whose) )?(?:have |has |had )?"
            rf"(?:spent|spend|bought|ordered|paid|generated|made|placed|purchased|C\d+|S\d+)"
            rf"(?: a total of| in total| overall)? {CMP} (N\d+)(?P<times> times| S\d+)?"
            rf"(?: in total| overall| total)?",
            self.sym,
        )
        if m2 is None:
            # "products that have totalled over 8000", "which products sold for more than 8000 in total"
            m2 = re.search(
                rf"\b(S\d+|C\d+) (?:(?:who|that|which) )?(?:have |has |had )?(?:sold|totaled|earned|"
                rf"generated|brought in|made|S\d+)(?: for)?(?: a total of| in total| overall)? {CMP} (N\d+)"
                rf"(?: in total| "
                rf"overall| total| combined| altogether| in sales)?",
                self.sym,
            )
        m3 = re.search(
            r"\b(S\d+|C\d+)(?: in| from| of)? (?:with|having|that have|which have|who have|who|that|which|"
            r"have|has|had) "
            r"(?:have |has )?(?:placed |made |ordered |bought |purchased |C\d+ |S\d+ |(?P<v1>V\d+) )?(N\d+) "
            r"(?:times? )?"
            r"(?P<t>or more|or fewer|or "
            r"less|"
            r"and more|and up|plus|or above|at least|at most)(?: (?P<v2>V\d+))?(?: (?P<s>S\d+|times))?",
            self.sym,
        )
        ones = re.search(
            r"\b(?:only )?(?:the )?(?:ones|those|groups)(?: with| having| that have| who have| which have|"
            r" that placed| who placed)? (N\d+) (?P<t>or more|or fewer|or less|and more|and up|plus|or above|"
            r"at least|at most)(?: (?:S\d+|times|rows|records))?",
            self.sym,
        )
        if ones and not m and not m2 and not m3:
            # "order count per customer_id, only the ones with 10+ orders": the groups read later
            op = "<=" if re.search(r"fewer|less|most", ones.group("t")) else ">="
            self.pending_having = (op, float(self.item(ones.group(1)).ref))
            self.take(ones)
            self.render()
            return
        if m3 and not m and not m2:
            key = self.item(m3.group(1))
            other = self.item(m3.group("s")).ref if (m3.group("s") or "").startswith("S") else None
            said = m3.group("v1") or m3.group("v2")
            if said:  # "users who purchased 3 or more times": the rows counted are those of that value
                self.req.where.append(self.in_cond(self.value_refs(said)))
            if key.kind == "src" and key.ref is self.main.source:
                facts = (
                    [other]
                    if other is not None and other is not key.ref
                    else [u.source for u in self.req.sources[1:] if self.join_keys(u.source, key.ref)]
                    + [
                        f
                        for f in self.ctx.files()
                        if self.join_keys(f, key.ref) and re.search("order", f.stem)
                    ]
                )
                if not facts:
                    return
                self.make_main(facts[0])
            group = self.group_key_for(key)
            if group is None:
                return
            op = "<=" if re.search(r"fewer|less|most", m3.group("t")) else ">="
            measure = self.count_of_main()
            if group.col not in [g.col for g in self.req.group]:
                self.req.group.append(group)
            self.add_measure(measure)
            self.req.having.append(ir.Having(measure.alias, op, float(self.item(m3.group(3)).ref)))
            self.take(m3)
            self.render()
            return
        if m2 and not m:
            key = self.item(m2.group(1))
            verb = re.search(r"\b(C\d+)\b", m2.group(0)[m2.group(0).find(m2.group(1)) + len(m2.group(1)) :])
            if verb is not None and self.colref(verb.group(1)).source is key.ref:
                return  # "orders that cost no more than 60": a column of the rows themselves, a filter
            if key.kind == "src" and key.ref is self.main.source:
                facts = [u.source for u in self.req.sources[1:] if self.join_keys(u.source, key.ref)]
                facts += [
                    s
                    for s in self.ctx.files()
                    if s not in facts
                    and self.join_keys(s, key.ref)
                    and any(
                        ColumnRef(s, c, 50).numeric and not ColumnRef(s, c, 50).keyish for c in s.column_names
                    )
                ]
                if not facts:
                    return
                self.make_main(facts[0])
            group = self.group_key_for(key)
            if group is None:
                return
            ref = self.only_measure("total spend")
            spoken = " ".join(self.items[k].text for k in self.at(m2.start(), m2.end()))
            verb = re.search(r"\b(ordered|placed|made|bought|purchased)\b", spoken)
            if verb or m2.groupdict().get("times"):  # "ordered more than once", "placed over 3 orders"
                measure = ir.Measure("count", None, alias="order_count")
            else:
                measure = ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}")
            op = self.cmp_op(m2.group("cmp"))
            self.req.group.append(group)
            self.req.measures.append(measure)
            self.req.having.append(ir.Having(measure.alias, op, float(self.item(m2.group(3)).ref)))
            self.take(m2)
            self.render()
            return
        if not m:
            return
        key = self.item(m.group(1))
        measured = m.group(6) or ""
        other = self.item(measured).ref if measured.startswith("S") else None
        if key.kind == "src" and key.ref is self.main.source:
            if other is None or other is key.ref or not self.join_keys(other, key.ref):
                return  # "orders with amount above 350": a row filter, each order is one row
            self.make_main(other)  # "customers with more than 5 orders": count the orders per customer
        group = self.group_key_for(key)
        if group is None:
            return
        value = float(self.item(m.group(5)).ref)
        op = self.cmp_op(m.group("cmp"))
        func = AGGREGATES.get(m.group("agg") or "total", "sum")
        if m.group(3) or (m.group("agg") and func != "sum"):
            if m.group(3):
                ref = self.colref(m.group(3), numeric=True)
                col = self.col(ref)
            else:  # "average price per category, only categories with an average above 100"
                words = "|".join(w for w, f in AGGREGATES.items() if f == func)
                said = re.search(rf"\b(?:{words}) (?:of )?(?:the )?(C\d+)", self.sym)
                col = self.col(self.colref(said.group(1), numeric=True)) if said else None  # type: ignore[assignment]
            if col is None:
                return
            alias = measure_alias(func, col.name)
            measure = ir.Measure(func, col, alias=alias)
        elif (
            measured.startswith("C")
            and self.colref(measured[1:]).numeric
            and not self.colref(measured[1:]).keyish
        ):
            ref = self.colref(measured[1:], numeric=True)
            measure = ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}")
        elif measured.startswith("S") and self.item(measured[1:]).ref is self.main.source:
            # "countries with more than 25 (distinct) customers": each customer once
            measure = self.count_of_main()
        elif measured.startswith("S") and self.item(measured[1:]).ref is not self.main.source:
            owner: Source = self.item(measured[1:]).ref
            ent = self.entity_key(owner) or list(self.key_of(owner))
            if ent:
                measure = ir.Measure(
                    "count", self.col(ent[0]), distinct=True, alias=f"{singular(owner.stem)}_count"
                )
            else:
                measure = ir.Measure("count", None, alias="count")
        else:
            measure = ir.Measure("count", None, alias="count")
        if group.col not in [g.col for g in self.req.group]:
            self.req.group.append(group)
        self.add_measure(measure)
        self.req.having.append(ir.Having(self.alias_of(measure), op, value))
        self.take(m)
        self.render()

    def key_of(self, source: Source) -> list[ColumnRef]:
        stem = singular(source.stem.lower())
        return [ColumnRef(source, c, 80) for c in source.column_names if c.lower() == f"{stem}_id"]

    def group_key_for(self, it: Item) -> ir.GroupKey | None:
        if it.kind == "col":
            return ir.GroupKey(self.col(self.colref(self.items.index(it))))
        if it.kind == "src":
            src: Source = it.ref
            if src is self.main.source:
                keys = self.key_of(src)
                return ir.GroupKey(self.col(keys[0])) if keys else None
            ent = self.entity_key(src)
            if ent:
                return ir.GroupKey(self.col(ent[0]))
        return None

    # ---- ranking: top N, N cheapest, latest per key
    def rule_rank(self) -> None:
        rank_words = r"most expensive|least expensive|most recent|least recent|fewest|" + RANK_WORDS
        pats = [
            r"\b(?:the |each |every )?(?:(?P<n>N\d+) )?(?P<w2>highest|largest|biggest|lowest|smallest|most "
            r"recent|"
            r"latest|earliest|newest|oldest) (?P<by>C\d+) (?P<what>S\d+)",
            r"\b(?:the |only |just )?(?:top |first )?(?:(?P<n>N\d+) )?(?P<what>S\d+|C\d+|"
            r"(?:hour|weekday|month|quarter|year)(?: of (?:the )?(?:day|week|year|C\d+))?)"
            r"(?: \( [^()]{0,30}\)| ~)*(?: of| in| from)? "
            r"(?:with|that have|which have|having|that had|with the|have|has|had) (?:the )?"
            r"(?P<w2>highest|lowest|largest|biggest|smallest|most|least|greatest|latest|earliest|newest|oldest|"
            r"most recent) (?P<agg>total |average |avg |mean |median )?(?P<v>V\d+ )?"
            r"(?P<by>C\d+|S\d+)",
            rf"\b(?:the )?(?P<w1>top|best|bottom|worst|first|last|highest|lowest|largest|biggest|smallest) "
            rf"(?P<n>N\d+) ?(?P<w2>{rank_words})? ?(?P<what>S\d+|C\d+)?(?: (?:by|on|in terms of|based on|"
            rf"ranked by|"
            rf"sorted by|ordered by|with the (?:highest|largest|biggest|most|lowest|smallest)) (?:the "
            rf")?(?P<agg>total |average |avg |mean |median )?(?:highest |largest )?"
            rf"(?P<by>C\d+|S\d+|total|count|number of S\d+|revenue|spend))?",
            rf"\b(?:the )?(?P<n>N\d+) (?P<w2>{rank_words}) (?P<what>S\d+|C\d+)?(?: (?:by|on) (?:the "
            rf")?(?:total )?"
            rf"(?P<by>C\d+|S\d+|total|count))?",
            r"\b(?:the |each |every )?(?P<w2>most expensive|least expensive|cheapest|priciest|most recent|"
            r"latest|"
            r"newest|oldest|earliest|first|last|biggest|largest|highest|smallest|lowest) (?P<what>S\d+)"
            r"(?: (?:by|on) (?:the )?(?P<by>C\d+))?",
            r"\b(?:the |each |every )?(?P<w2>most expensive|least expensive|cheapest|priciest|most recent|"
            r"latest|"
            r"newest|oldest|earliest|biggest|largest|highest|smallest|lowest) (?P<n>N\d+)? ?(?P<what>S\d+)",
        ]
        pats.insert(
            0,
            # "the 8 customers that spent the most", "the ten accounts that were opened earliest"
            r"\b(?:the )?(?:top )?(?P<n>N\d+) (?P<what>S\d+|C\d+) (?:that|who|which|whose)(?: S\d+)?"
            r"(?: (?:were|"
            r"was|have|had|did|got|has been|have been))? (?:(?P<by>C\d+)|(?P<verb>sold|earned|generated|made|"
            r"brought in|ordered|bought|purchased|S\d+)) (?:the )?(?P<w2>most|least|earliest|latest|"
            r"first|last|oldest|newest|longest ago|most recently)\b",
        )
        for _n_pat, pat in enumerate(pats):
            m = re.search(pat, self.sym)
            if not m:
                continue
            gd = m.groupdict()
            verb = gd.get("verb") or ""
            if (
                verb
            ):  # "the 5 products that sold the most": by money; "... that were ordered the most": by count
                if verb.startswith("S"):
                    verb = self.item(verb).text
                gd["by"] = "count" if verb in ("ordered", "bought", "purchased", "order") else "revenue"
            later = None
            if not gd.get("by"):
                later = re.match(
                    r" ?(?:(?:[a-z~,]+|D\d+|V\d+) ){0,3}?(?:by|on|based on|in terms of|ranked by|sorted by) "
                    r"(?:the |their |its )?(C\d+)",
                    self.sym[m.end() :],
                )
                if later and self.colref(later.group(1)).numeric:
                    gd["by"] = later.group(1)
                    for kk in self.at(m.end() + later.start(1) - 3, m.end() + later.end(1)):
                        self.items[kk].used = True
            n = int(self.item(gd["n"][1:]).ref) if gd.get("n") else 1
            words = " ".join(w for w in (gd.get("w1"), gd.get("w2")) if w)
            desc, temporal = True, False
            for w in re.findall(r"[a-z]+(?: [a-z]+)?", words):
                if w in ("most expensive", "priciest"):
                    desc, temporal = True, False
                elif w in ("least expensive", "cheapest"):
                    desc, temporal = False, False
                elif w == "most recent":
                    desc, temporal = True, True
                elif w in RANKING:
                    desc, temporal = RANKING[w]
                elif w == "fewest":
                    desc = False
            if gd.get("w1") in ("first", "last") and not gd.get("w2"):
                temporal = True
            if gd.get("w1") in ("bottom", "worst"):
                desc = False
            by = gd.get("by") or ""
            what = gd.get("what") or ""
            # the thing being ranked: an entity of another source means grouping first
            ent_item = self.item(what[1:]) if what.startswith("S") else None
            if what.startswith("C") and not self.colref(what[1:]).numeric:
                self.ranked_dims = [self.colref(what[1:])]
            per_group = re.search(
                r"\b(?:per|in each|for each|for every|of each|of every|within each|in every|each) (?:the "
                r")?"
                r"(C\d+|S\d+)|\b(S\d+|C\d+) (?:each|apiece)\b"
                r"|\b(?:per|in each|for each|for every|of each|of every|within each|in every|each) (?:the )?"
                r"(?P<unit>day|week|month|quarter|year)\b",
                self.sym[m.end() :],
            )
            possessive = re.search(
                r"\b(?:each|every|for each|for every|per|of each|in each|within each|within every) (S\d+|"
                r"C\d+)(?: (?:of|in|from)(?: the)?(?: S\d+| [a-z]+){0,2})?(?: ,)?"
                r"(?: (?:only|just|keep|keeping|kept|retain|"
                r"retaining|i|we|want|need|would|like|to|should|be|please|select|pick|show|take|get|find|list)){0,6}"
                r"(?: (?:their|its|"
                r"his|her|the))? ?$",
                self.sym[: m.start()],
            )
            if gd.get("n") and not what:
                self.unknown_after(m.end("n") if not gd.get("w2") else m.end("w2"))  # "first three sprints"
            if (
                not what
                and not by
                and gd.get("w1") in ("top", "bottom")
                and not self.req.order
                and not later
                and (
                    not self.has_measure_column()
                    or re.search(
                        r"\b(?:count|number|total|sum|average|avg|mean|median) (?:of )?(?:the )?(?:C\d+ )?"
                        r"(?:per|by|for each|for every|in each) (?:C|S)\d+",
                        self.sym,
                    )
                )
            ):
                continue  # "count per page, top 2": the measure read later ranks the groups; see rule_limit
            self.take(m)
            if self.rank_groups(what, by, gd.get("agg"), words, n, desc, bool(per_group or possessive)):
                if gd.get("v"):  # "the page with the most purchase events": the rows counted
                    self.req.where.append(self.in_cond(self.value_refs(gd["v"].strip())))
                return
            if by.startswith("C"):
                order_col: ir.Col | None = self.col(self.colref(by[1:]))
            else:
                order_col = None
            fact = None
            nm = re.match(r"number of S(\d+)", by)
            if nm and self.item(nm.group(1)).ref is not (ent_item.ref if ent_item else None):
                fact = self.item(nm.group(1)).ref
            elif (
                by.startswith("C") and ent_item is not None and self.colref(by[1:]).source is not ent_item.ref
            ):
                fact = self.colref(by[1:]).source
            if fact is not None and ent_item is not None and ent_item.ref is self.main.source:
                self.make_main(fact)
                if nm:
                    by = "count"
            if (
                ent_item is not None
                and ent_item.ref is not self.main.source
                and not per_group
                and not possessive
            ):
                # "top 5 customers by total amount" over orders: group by the customer, rank the totals
                group = self.group_key_for(ent_item)
                if group is not None and (
                    by in ("total", "revenue", "spend", "") or by.startswith(("C", "count", "number"))
                ):
                    self.req.group.append(group)
                    if by.startswith("C") and order_col is not None:
                        ref = self.colref(by[1:], numeric=True)
                        measure = ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}")
                    elif by.startswith(("count", "number")) or (not by and "most" in words):
                        measure = ir.Measure("count", None, alias="count")
                    else:
                        ref = self.only_measure("the ranking")
                        measure = ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}")
                    self.req.measures.append(measure)
                    self.req.rank = ir.Rank(n, [(measure.alias, desc)])
                    self.render()
                    return
            if order_col is None and self.req.order and not by and isinstance(self.req.order[0][0], ir.Col):
                order_col = self.req.order.pop(0)[0]  # type: ignore[assignment]  # "ranked by price ..., top 3": the ranking key
            if order_col is None:
                if temporal:
                    order_col = self.col(self.date_column())
                elif re.search(r"expensive|cheap|pric|dear", words):
                    order_col = self.col(self.price_column())
                elif by in ("total", "count", "revenue", "spend") or by.startswith("number"):
                    order_col = None
                else:
                    order_col = self.col(self.only_measure(f"'{words}'"))
            partition: list[ir.Col] = []
            grp = per_group or possessive
            unit = None
            if grp is not None and grp.groupdict().get("unit"):
                # "the biggest order per month": a ranking within each period of the date column
                partition, unit = [self.col(self.date_column())], UNITS[grp.group("unit")]
                for kk in self.at(m.end() + grp.start(), m.end() + grp.end()):
                    self.items[kk].used = True
                grp = None
            if grp is not None:
                k = grp.group(1) or (grp.group(2) if grp.lastindex and grp.lastindex >= 2 else None)
                if k:
                    g = self.group_key_for(self.item(k[1:]))
                    if g is not None:
                        partition = [g.col]
                        base = m.end() if grp is per_group else 0
                        for kk in self.at(base + grp.start(), base + grp.end()):
                            self.items[kk].used = True
                        # "the last order each customer placed": the verb of the rows ranked
                        verb = re.match(r" (?:has |have |had )?(C\d+)\b", self.sym[base + grp.end() :])
                        if verb and self.item(verb.group(1)).text in ("placed", "made", "ordered", "bought"):
                            for kk in self.at(
                                base + grp.end() + verb.start(1), base + grp.end() + verb.end(1)
                            ):
                                self.items[kk].used = True
            keys: list[tuple[ir.Col | str, bool]] = [(order_col if order_col else by, desc)]
            self.req.rank = ir.Rank(n, keys, partition, unit)
            self.rank_col = order_col
            self.render()
            return

    def rule_span(self) -> None:
        """'the date of their first and last order', 'when did each customer first and last order':
        the earliest and latest date of the rows, two measures."""
        m = re.search(
            r"\b(?:(?:the )?(?:dates?|times?|days?|(?P<c>C\d+)) (?:of )?)?(?:their |its |the |when did \w+ )?"
            r"(?:first|earliest|oldest) (?:S\d+ )?(?:(?:C\d+ )?(?:and|&|,|to) )(?:of )?"
            r"(?:(?:the |their |its |when did \w+ )?)?(?:last|latest|most recent|newest|final) "
            r"(?P<s>S\d+|C\d+)?",
            self.sym,
        )
        if m is None:
            return
        said = m.group("c") or (m.group("s") if (m.group("s") or "").startswith("C") else None)
        ref = self.colref(said) if said and self.colref(said).temporal else self.date_column()
        for func in ("min", "max"):
            self.add_measure(ir.Measure(func, self.col(ref), alias=measure_alias(func, ref.column)))
        self.take(m)
        # "with both dates": the two measures said again
        for x in self.find(r"\b(?:with )?(?:both|the two) (?:C\d+|dates|times)\b"):
            self.take(x)
        self.render()

    def rule_change(self) -> None:
        """'the percentage change from 2025 to 2026', 'growth relative to 2025 in percent': a measure in two
        periods and the change between them."""
        m = re.search(
            r"\b(?:the )?(?P<pct>percent(?:age)? |% |pct )?(?:change|growth|increase|decrease|difference|"
            r"evolution)(?: in (?:percent|%|percentage))?(?: (?:from|between) (?P<a>N\d+|D\d+) (?:to|and) "
            r"(?P<b>N\d+|D\d+)| (?:from|between|over) (?P<ab>D\d+))?"
            r"(?: (?:relative to|compared (?:to|with)|vs|versus|over) (?P<base>N\d+|D\d+))?"
            r"(?: (?:in|as a|as) (?P<pct2>percent|percentage|%))?",
            self.sym,
        )
        if m is None:
            return
        found: set[int] = set()
        for it in self.items:
            if (
                it.kind == "num"
                and it.ref is not None
                and float(it.ref).is_integer()
                and 1990 <= it.ref <= 2100
            ):
                found.add(int(it.ref))
            elif it.kind == "date" and isinstance(it.ref, Period) and isinstance(it.ref.lo, date):
                lo, hi = it.ref.lo, it.ref.hi
                if isinstance(hi, date) and (lo.month, lo.day, hi.month, hi.day) == (1, 1, 1, 1):
                    found |= set(range(lo.year, hi.year))  # "2025", "from 2025 to 2026": whole years
        labels = sorted(found)
        if len(labels) != 2:
            return
        percent = bool(
            m.group("pct")
            or m.group("pct2")
            or re.search(r"percent|percentage|%|\bpct\b", self.p.request.lower())
        )
        self.change = (labels[0], labels[1], percent)
        self.take(m)
        for x in self.find(r"\b(?:in |as (?:a )?)?(?:percent|percentage|%|pct)\b|\byear over year\b|\bvs\b"):
            self.take(x)
        self.render()

    def add_change(self) -> None:
        """The change measure of rule_change, over the two period measures (made here if no rule did)."""
        if self.change is None:
            return
        lo, hi, percent = self.change
        r = self.req

        def period(year: int) -> ir.Measure | None:
            return next(
                (
                    m
                    for m in r.measures
                    if isinstance(m.where, ir.DateRange)
                    and isinstance(m.where.lo, date)
                    and m.where.lo == date(year, 1, 1)
                    and m.where.hi == date(year + 1, 1, 1)
                ),
                None,
            )

        made = False
        for year in (lo, hi):
            if period(year) is None:
                made = True
                ref = self.only_measure("the change")
                dcol = self.col(self.date_column())
                spec = Period(date(year, 1, 1), date(year + 1, 1, 1), str(year))
                r.measures.append(
                    ir.Measure(
                        "sum", self.col(ref), where=self.date_cond(dcol, spec), alias=f"{ref.column}_{year}"
                    )
                )
        a, b = period(lo), period(hi)
        assert a is not None and b is not None
        if made:  # "sales (sum of amount) ... change from 2025 to 2026": the sum is the two period sums
            r.measures = [
                m for m in r.measures if not (m.where is None and (m.func, m.col) == (a.func, a.col))
            ]
        r.where = [w for w in r.where if not isinstance(w, ir.DateRange)]  # the years are columns now
        r.measures = [m for m in r.measures if m.where is not None or m.share is None]
        func = "pct_change" if percent else "change"
        r.measures.append(ir.Measure(func, None, alias=f"{func}_{lo}_{hi}", parts=(a, b)))
        for it in self.items:  # "the 2025 total, the 2026 total": the two period columns, said again
            if it.kind == "num" and it.ref in (lo, hi):
                it.used = True

    def rule_ratio(self) -> None:
        """'total amount divided by number of orders', 'sum of amount / count': one measure over another."""
        r = self.req
        if len(r.measures) != 2 or any(m.share for m in r.measures):
            return
        said = self.find(r"\b(?:divided by|over|/|per each|relative to)\b|(?<= )/(?= )")
        if len(said) != 1:
            return
        a, b = r.measures
        # the measure said before 'divided by' is the numerator: the last measure word before it
        before = self.p.norm[: self.p.norm.find(said[0].group(0).split()[0])] if said[0].group(0) else ""
        words = re.findall(
            r"\b(count|number|how many|tally|total|sum|average|avg|mean|max|maximum|min|minimum)\b", before
        )
        first = (
            {"number": "count", "how many": "count", "tally": "count", "total": "sum"}.get(
                words[-1], AGGREGATES.get(words[-1], words[-1])
            )
            if words
            else a.func
        )
        if b.func == first and a.func != first:
            a, b = b, a
        r.measures = [ir.Measure("ratio", None, alias=f"{a.alias}_per_{b.alias}", parts=(a, b))]
        self.take(said[0])
        self.render()

    def rule_rounding(self) -> None:
        """'rounded to 2 decimals', 'to one decimal place', 'rounded to whole numbers'."""
        m = re.search(
            r"\b(?:rounded|round|rounding)(?: off)?(?: (?:to|at))? (?:(?P<n>N\d+|one) )?(?:decimals?|"
            r"decimal places?|dp|places|digits)\b"
            r"|\b(?:rounded|round)(?: off)?(?: (?:to|at))? (?:the nearest )?"
            r"(?:whole numbers?|integers?|whole|units?)\b"
            r"|\bto (?P<n2>N\d+|one) (?:decimals?|decimal places?|dp)\b",
            self.sym,
        )
        if not m:
            return
        n = m.group("n") or m.group("n2")
        self.req.round_to = 1 if n == "one" else int(self.item(n[1:]).ref) if n else 0
        if not self.req.measures:
            # "amount rounded to whole numbers": the number column said just before, in place
            col = re.search(r"(C\d+) (?:,? )?$", self.sym[: m.start()])
            if col is None or not self.colref(col.group(1)).numeric:
                raise PlannerQuestion(
                    "Which number should be rounded?", hint="say 'the <column> rounded to 2 decimals'"
                )
            ref = self.colref(col.group(1))
            self.req.derived[ref.column] = f"round({self.col(ref).sql(False)}, {self.req.round_to})"
            self.req.round_to = None
            self.take(col)
        self.take(m)
        self.render()

    def measure_remarks(self) -> None:
        """'the median amount (not the mean)': a remark on which measure, said in brackets."""
        for m in self.find(r"\( not (?:the |a |an )?(?P<w>[a-z]+) \)"):
            func = AGGREGATES.get(m.group("w"))
            if func and self.req.measures and all(x.func != func for x in self.req.measures):
                self.take(m)
        self.render()

    def rule_spread(self) -> None:
        """'the lowest price, the highest price and the difference between them', 'max minus min',
        'the number of days between their first and last order': a measure of the two ends."""
        ends: dict[ir.Col, set[str]] = {}
        for m in self.req.measures:
            if m.func in ("min", "max") and m.col is not None and m.where is None:
                ends.setdefault(m.col, set()).add(m.func)
        both = [c for c, fs in ends.items() if fs == {"min", "max"}]
        if len(both) != 1:
            return
        col = both[0]
        temporal = self.types_of(col).temporal
        days = re.search(
            r"\b(?:(?:the )?(?:number|count) of |how many )?days?\b(?: (?:between|from|separate|separating|"
            r"apart|elapsed|passed))?|\bspan in days\b|\bin days\b",
            self.sym,
        )
        if temporal and days:
            self.req.measures = [m for m in self.req.measures if m.col != col or m.func not in ("min", "max")]
            self.add_measure(ir.Measure("days", col, alias="days_between"))
            self.take(days)
            for x in self.find(r"\b(?:the )?(?:number of )?days\b"):  # "store customer_id and the days"
                self.take(x)
            for x in self.find(r"\b(?:the )?(?:span|time|gap|difference|distance)(?: between)?\b"):
                self.take(x)
            self.render()
            return
        said = self.find(
            r"\b(?:the )?(?:difference|gap|spread|range|distance)(?: (?:between|of) "
            r"(?:them|(?:the )?(?:two|N\d+)|those|both|these))?\b"
            r"|\b(?:max|maximum|highest|largest) (?:C\d+ )?minus (?:the )?(?:min|minimum|lowest|smallest)\b"
            r"(?: C\d+)?"
        )
        if said and not temporal:
            self.add_measure(ir.Measure("range", col, alias="spread"))
            for x in said:
                self.take(x)
            self.render()

    def has_measure_column(self) -> bool:
        """Whether the main source has a number column that is not a key (something to rank by)."""
        return any(
            ColumnRef(self.main.source, c, 50).numeric and not ColumnRef(self.main.source, c, 50).keyish
            for c in self.main.source.column_names
        )

    def rank_groups(
        self, what: str, by: str, agg: str | None, words: str, n: int, desc: bool, partitioned: bool
    ) -> bool:
        """'the 2 categories with the highest average price', 'top 3 users by number of events':
        the values of a text or key column ranked by a measure of their rows."""
        unit = re.match(r"(hour|weekday|month|quarter|year)\b", what)
        if unit:  # "the hour of the day with the most purchases": a part of the date column
            key = ir.GroupKey(self.col(self.date_column()), UNITS.get(unit.group(1), unit.group(1)))
        elif not what.startswith("C") or partitioned:
            return False
        else:
            dim = self.colref(what[1:])
            if dim.numeric and not dim.keyish:
                return False
            key = ir.GroupKey(self.col(dim))
        func = AGGREGATES.get((agg or "").strip(), "sum")
        if by.startswith(("S", "count", "number")) or (
            not by and re.search(r"\b(?:most|fewest|least)\b", words)
        ):
            measure = ir.Measure("count", None, alias="count")
        elif by.startswith("C") and self.colref(by[1:]).numeric:
            ref = self.colref(by[1:], numeric=True)
            measure = ir.Measure(func, self.col(ref), alias=measure_alias(func, ref.column))
        else:
            return False
        if key.col not in [g.col for g in self.req.group]:
            self.req.group.append(key)
        self.add_measure(measure)
        self.req.rank = ir.Rank(n, [(self.alias_of(measure), desc)])
        self.render()
        return True

    # ---- measures: count, count distinct, sum/avg/min/max
    def rule_measures(self) -> None:
        pats = [
            r"\b(?:count|counts|number|numbers|how many|tally|total number|total count|#) (?:of )?(?:the )?"
            r"(?P<d>distinct |unique |different |individual |separate )?(?P<what>S\d+|C\d+|rows|records|"
            r"entries|lines)",
            r"\b(?P<d>distinct |unique |different )?(?P<what>S\d+|C\d+) (?:count|counts|tally)\b",
            r"\b(?:count|counts|number|numbers|how many|tally|total number|total count|#) (?:of )?(?:the "
            r")?(?=V\d+)",
            r"\b(?P<cnt>count|counts|tally|how many)\b",
        ]
        counting = re.search(r"\b(?:count|counts|counted|counting|number|how many|tally)\b", self.sym)
        if counting or self.grouped():
            # "the unique customers ... counted per country", "unique users by event type"
            pats.insert(
                0,
                r"\b(?:(?:count|counts|number|numbers|how many|tally|total number) (?:of )?(?:the )?)?"
                r"(?P<d>distinct |unique |different )(?P<what>S\d+|C\d+)(?! (?:count|counts|tally)\b)",
            )
        for pat in pats:
            for m in self.find(pat):
                if (pat.endswith(r"(?=V\d+)") or "(?P<cnt>" in pat) and self.req.measures:
                    continue
                what = m.groupdict().get("what") or ""
                distinct = bool(m.groupdict().get("d"))
                it = self.item(what[1:]) if what[:1] in ("S", "C") else None
                if (
                    "(?P<what>S\\d+|C\\d+) (?:count" in pat
                    and it is not None
                    and it.kind == "col"
                    and not distinct
                    and not self.colref(what[1:]).numeric
                    and not self.colref(what[1:]).keyish
                ):
                    # "status counts": how many rows each status has, a count per status
                    key = ir.GroupKey(self.col(self.colref(what[1:])))
                    if key.col not in [g.col for g in self.req.group]:
                        self.req.group.append(key)
                    self.add_measure(ir.Measure("count", None, alias="count"))
                    self.take(m)
                    continue
                own = self.key_of(self.main.source)
                if it is not None and it.kind == "src" and it.ref is self.main.source and own:
                    # "number of customers" in customers.csv: each customer once, whatever the file repeats
                    c = self.col(own[0])
                    measure = ir.Measure("count", c, distinct=True, alias=f"{singular(it.ref.stem)}_count")
                elif it is None or (it.kind == "src" and it.ref is self.main.source and not distinct):
                    measure = ir.Measure("count", None, alias="count")
                elif it.kind == "src":
                    ent = self.entity_key(it.ref) or self.key_of(it.ref)
                    if it.ref is not self.main.source and ent:
                        c = self.col(ent[0])
                        measure = ir.Measure(
                            "count", c, distinct=True, alias=f"{singular(it.ref.stem)}_count"
                        )
                    elif distinct and self.key_of(it.ref):
                        c = self.col(self.key_of(it.ref)[0])
                        measure = ir.Measure("count", c, distinct=True, alias=f"distinct_{c.name}")
                    else:
                        measure = ir.Measure("count", None, alias="count")
                else:
                    ref = self.colref(what[1:])
                    c = self.col(ref)
                    measure = ir.Measure(
                        "count",
                        c,
                        distinct=distinct or ref.keyish,
                        alias=f"{'distinct_' if distinct or ref.keyish else ''}{c.name}_count",
                    )
                if (
                    "(?P<what>S\\d+|C\\d+) (?:count" in pat
                    and measure.col is None
                    and any(x.func == "count" for x in self.req.measures)
                ):
                    self.take(m)  # "..., country and customer count": the count said again
                    continue
                self.add_measure(measure)
                self.take(m)
                # "how many orders they placed": the verb of the thing counted
                verb = re.match(
                    r" (?:that |which )?(?:they|he|she|it|we|were|was|have|has|had|got)(?: been)? (C\d+)\b",
                    self.sym[m.end() :],
                )
                if verb and self.item(verb.group(1)).text in (
                    "placed",
                    "made",
                    "ordered",
                    "bought",
                    "received",
                ):
                    for kk in self.at(m.end() + verb.start(), m.end() + verb.end()):
                        self.items[kk].used = True
            self.render()
        if counting and self.req.measures:
            for m in self.find(r"\b(?:counted|counting)\b"):
                self.take(m)
            self.render()
        for m in self.find(r"\b(sum|avg|average|mean|median|min|max|count|total) \( (C\d+|\*) \)"):
            func = AGGREGATES.get(m.group(1), m.group(1))
            if m.group(2) == "*":
                self.add_measure(ir.Measure("count", None, alias="count"))
            else:
                ref = self.colref(m.group(2))
                self.add_measure(ir.Measure(func, self.col(ref), alias=measure_alias(func, ref.column)))
            self.take(m)
        self.render()
        aggs = dict(AGGREGATES) | {
            "cheapest": "min",
            "least expensive": "min",
            "most expensive": "max",
            "priciest": "max",
            "dearest": "max",
        }
        agg = "|".join(sorted(aggs, key=len, reverse=True))
        pair = (
            rf"\b(?P<f1>{agg}) (?:and|&|,|/|to) (?:the )?(?P<f2>{agg}) (?:of )?(?:the )?(?:order |item )?"
            rf"(?P<c>C\d+)"
        )
        for m in self.find(pair):
            ref = self.colref(m.group("c"), numeric=True)
            for f in (m.group("f1"), m.group("f2")):
                func = aggs[f]
                self.add_measure(ir.Measure(func, self.col(ref), alias=f"{func}_{ref.column}"))
            self.take(m)
        self.render()
        single = (
            rf"\b(?P<f>{agg}) (?:of )?(?:the |all |their |its )?(?:single |individual |one )?"
            rf"(?:order |item |S\d+ )?(?P<c>C\d+)"
        )
        for m in self.find(single):
            ref = self.colref(m.group("c"), numeric=True)
            if not ref.numeric and aggs[m.group("f")] in ("sum", "avg"):
                continue
            func = aggs[m.group("f")]
            alias = measure_alias(func, ref.column)
            self.add_measure(ir.Measure(func, self.col(ref), alias=alias))
            self.take(m)
        self.render()
        # "revenue per country", "monthly revenue": a money word on its own is a sum when something groups it
        for m in self.find(
            r"\b(C\d+)(?= (?:per|by|for each|for every|in each|across|grouped by|broken down by))"
            r"|(?:(?<=daily )|(?<=weekly )|(?<=monthly )|(?<=yearly )|(?<=hourly )|(?<=quarterly ))(C\d+)"
        ):
            said = next(g for g in m.groups() if g)
            it = self.item(said)
            if it.text in ("revenue", "sales", "turnover", "spend", "spending", "amount", "value"):
                ref = self.colref(said, numeric=True)
                if ref.numeric and not ref.keyish:
                    self.add_measure(ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}"))
                    self.take(m)
        self.render()
        for m in self.find(
            r"\b(?:add(?:s|ed|ing)? up|sum(?:s|med|ming)? up|tot(?:al)?(?:led|ed) up) "
            r"(?:the |their |its |all )?(?:S\d+ )?(C\d+)"
            r"|\b(C\d+)s? (?:add(?:s|ed)? up|sum(?:s|med)? up)"
        ):
            ref = self.colref(m.group(1) or m.group(2), numeric=True)
            self.add_measure(ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}"))
            self.take(m)
        self.render()
        # "what they add up to in amount", "summarise the amount by country", "total the order amounts"
        for m in self.find(
            r"\b(?:what (?:they|it|these|those|the S\d+) )?(?:add(?:s|ed)? up to|sum(?:s|med)? up to|"
            r"came to|come to"
            r"|amount(?:s|ed)? to)(?: (?:in|of) (?:the |their |its )?(C\d+))?"
            r"|\b(?:summari[sz]e[ds]?|summari[sz]ing|total(?:led|ed|ling|ing)?|sum) (?:up )?(?:the |all "
            r"|their |its )?"
            r"(?P<yr>N\d+ )?(?:order |item )?(C\d+)s?(?= (?:of|from|in|per|by|for|grouped|across|broken|,)|$)"
        ):
            csym = m.group(1) or m.group(3)
            if csym is None:
                ref = self.only_measure("the total")
            else:
                ref = self.colref(csym, numeric=True)
                if not ref.numeric or ref.keyish:
                    continue
            self.add_measure(ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}"))
            self.take(m)
            if m.group("yr"):
                self.item(m.group("yr").strip()).used = False  # "the 2025 order amounts": a year, read later
        self.render()
        for m in self.find(
            r"\b(?:summed|totall?ed|added up|sum(?:med)? up)"
            r"(?= (?:per|by|for each|for every|across|over|grouped))"
        ):
            if not any(x.func == "sum" for x in self.req.measures):
                ref = self.only_measure("the total")
                self.add_measure(ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}"))
            self.take(m)  # "orders.csv summed per month"
        self.render()
        for m in self.find(
            r"\b(?:total(?:led|ed)?|add(?:ed)?|sum(?:med)?)(?: up)? (?:what|how much) (?:each|they|it|every|"
            r"each of them)?(?: S\d+| C\d+)? ?(C\d+)"
        ):
            ref = self.colref(m.group(1), numeric=True)
            if ref.numeric and not ref.keyish:  # "total up what each customer spent"
                self.add_measure(ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}"))
                self.take(m)
        self.render()
        # "how much was spent per country", "total per status"
        for m in self.find(r"\b(?:how much|total|sum|totals)\b"):
            if any(x.func == "sum" for x in self.req.measures):
                break
            ref = self.only_measure("the total")
            self.add_measure(ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}"))
            self.take(m)
        self.render()

    def rule_measure_filter(self) -> None:
        """'only where count > 1', 'where the avg is above 100': a condition on a measure read before."""
        if not self.req.measures:
            return
        for m in self.find(
            r"\b(?P<w>count|number|total|sum|average|avg|mean|median|maximum|minimum|max|min)"
            rf"(?: (?:is|of))? {CMP} (N\d+)"
        ):
            w = m.group("w")
            func = "count" if w in ("count", "number") else AGGREGATES[w]
            said = [x for x in self.req.measures if x.func == func]
            if len(said) != 1:
                continue
            value = float(self.item(m.group(3)).ref)
            self.req.having.append(ir.Having(said[0].alias, self.cmp_op(m.group("cmp")), value))
            self.take(m)
        self.render()

    def count_of_main(self) -> ir.Measure:
        """How many of the main source's entities: each key once when it has one (customers.csv repeats
        rows), else its rows."""
        keys = self.key_of(self.main.source)
        alias = f"{singular(self.main.source.stem)}_count"
        if keys:
            return ir.Measure("count", self.col(keys[0]), distinct=True, alias=alias)
        return ir.Measure("count", None, alias=alias)

    def alias_of(self, measure: ir.Measure) -> str:
        """The output name of the measure of the reading that is this one (added once by add_measure)."""
        for x in self.req.measures:
            if (x.func, x.col, x.distinct, x.where) == (
                measure.func,
                measure.col,
                measure.distinct,
                measure.where,
            ):
                return x.alias
            if self.counts_rows(measure) and self.counts_rows(x):
                return x.alias
        return measure.alias

    def counts_rows(self, m: ir.Measure) -> bool:
        """count(*) or count(DISTINCT <key of the main source>): the same number of main rows."""
        if m.func != "count" or m.where is not None or m.share or m.parts is not None:
            return False
        keys = {k.column for k in self.key_of(self.main.source)}
        return m.col is None or (m.distinct and m.col.name in keys and m.col.alias == self.main.alias)

    def add_measure(self, measure: ir.Measure) -> None:
        """A measure said twice ('average price ..., sorted by average price') is one column."""
        if self.counts_rows(measure) and any(self.counts_rows(x) for x in self.req.measures):
            return  # "customers with at least 9 orders, with their order count": one count
        for x in self.req.measures:
            if (
                (x.func, x.col, x.distinct, x.share)
                == (measure.func, measure.col, measure.distinct, measure.share)
                and x.where is None
                and measure.where is None
            ):
                return
        self.req.measures.append(measure)

    # ---- grouping: "per country", "by month", "in each category", "monthly"
    def rule_group(self) -> None:
        unit_pat = (
            rf"(?P<u>{UNIT_WORDS})(?: of (?:the )?(?P<of>day|week|year|month))?(?: \( (?P<fc>C\d+) \))?"
        )
        pats = [
            rf"\b{GROUP_INTRO} (?:the |their |its )?(?:order |event |signup )?(?:calendar )?(?:(?P<pc>C\d+) "
            rf")?{unit_pat}\b"
            rf"(?:(?: of| in| the| an?| S\d+| was| were| is| when| it was| they were)* (?P<uc>C\d+))?",
            rf"\b{GROUP_INTRO} (?:the |their |its )?(?P<c>C\d+|S\d+)(?P<more>(?:(?: ,| and| ,? and| &| then) "
            rf"(?:the )?(?:C\d+|S\d+))*)",
            r"\b(?P<u2>daily|weekly|monthly|quarterly|yearly|annual|hourly)\b",
            r"\b(?P<c2>C\d+) (?:by|per) (?P<c3>C\d+)\b",
        ]
        for n, pat in enumerate(pats):
            self.render()  # what an earlier pattern read is not read again ("by signup year")
            for m in self.find(pat):
                gd = m.groupdict()
                if gd.get("u") or gd.get("u2"):
                    unit = UNITS[gd.get("u") or gd.get("u2") or "day"]
                    # "day of the week", "month of the year", "hour of the day": the recurring part
                    recurring = {("day", "week"): "weekday", ("month", "year"): "month_number"}
                    unit = recurring.get((unit, gd.get("of") or ""), unit)
                    uc = gd.get("uc") or gd.get("fc") or gd.get("pc")
                    if uc and not (
                        self.colref(uc[1:]).temporal
                        or re.search(r"date|time|_at$|_on$|opened|^ts$", self.colref(uc[1:]).column)
                    ):
                        uc = None
                    ref = self.colref(uc[1:]) if uc else self.date_column()
                    numbered = "label" in self.hints or re.search(
                        rf"\b{gd.get('u') or gd.get('u2')} (?:number|nr|no|index)\b|\bas (?:a )?numbers?\b"
                        rf"|{ANY_YEAR}",
                        self.sym,
                    )
                    if numbered and unit in ("quarter", "month", "week"):
                        unit = f"{unit}_number"  # "quarter as 1 to 4": the number, not the first day
                    if unit.endswith("_number") or unit == "weekday":
                        for nm in self.find(
                            rf"\b(?:{unit.split('_')[0]} )?(?:number|nr|no|index)\b|\bas (?:a )?numbers?\b"
                            rf"|{ANY_YEAR}"
                        ):
                            self.take(nm)
                    key = ir.GroupKey(self.col(ref), None if unit == "day" and ref.type == "DATE" else unit)
                    if all((g.col, g.unit) != (key.col, key.unit) for g in self.req.group):
                        self.req.group.append(key)  # "per month (keyed by month ...)": one key
                    self.take(m)
                    continue
                ks = re.findall(r"[CS](\d+)", (gd.get("c") or "") + (gd.get("more") or ""))
                if n == 3:
                    ks = [gd["c3"][1:]]
                    if not self.req.measures:
                        continue
                if (
                    n == 1
                    and len(ks) == 1
                    and self.item(ks[0]).kind == "src"
                    and self.item(ks[0]).ref is self.main.source
                    and not self.req.measures
                ):
                    self.take(m)  # "compute net_amount for every order": row by row, not a grouping
                    continue
                for k in ks:
                    g = self.group_key_for(self.item(k))
                    if g is None:
                        if self.item(k).kind == "src" and self.item(k).ref is self.main.source:
                            continue  # "average amount per order": every row is one order
                        raise PlannerQuestion(
                            f"Group by what? '{self.item(k).text}' names no column I can group by"
                        )
                    if g.col not in [x.col for x in self.req.group if x.unit is None]:
                        self.req.group.append(g)
                if n == 3:
                    for kk in self.at(m.start("c3") - 4, m.end("c3")):
                        self.items[kk].used = True
                else:
                    self.take(m)
        self.render()
        if self.req.group and not self.req.measures and not (self.req.rank and self.req.rank.partition):
            self.req.measures.append(ir.Measure("count", None, alias="count"))
        # a word after "per"/"by" that names nothing we know is a question, never a dropped word
        intro = r"per|for each|for every|in each|grouped by|group by|broken down by|split by" + (
            "|by" if self.req.measures else ""
        )
        for m in self.find(rf"\b(?:{intro}) ([a-z_][\w]*)"):
            word = m.group(1)
            if word in FILLERS or word in ("the", "a", "an", "row", "rows", "order"):
                continue
            raise PlannerQuestion(
                f"Group by '{word}'? No column of {', '.join(u.source.name for u in self.req.sources)} is "
                f"called that",
                hint="name one of the columns: " + ", ".join(self.main.source.column_names[:12]),
                candidates=self.near_columns(word),
            )

    # ---- "with customer_id and the total": the output of an aggregate, said again
    def rule_output_columns(self) -> None:
        if not self.req.measures:
            return
        known = {g.col.name for g in self.req.group} | {m.col.name for m in self.req.measures if m.col}
        for m in self.find(
            r"\b(?:with|showing|including|listing|giving|returning|and|plus) (?:the |their |its )?"
            r"((?:C\d+|total|count|sum|average|number)(?:(?: ,| and| ,? and| &) (?:the |their |its )?"
            r"(?:C\d+|total|count|sum|average|number))*)"
        ):
            ks = re.findall(r"C(\d+)", m.group(1))
            if all(self.colref(k).column in known for k in ks):
                self.take(m)
        self.render()

    def near_values(self, word: str) -> list[str]:
        from rapidfuzz import fuzz, process

        vals = [f"{c} = '{v}'" for u in self.req.sources for c, vs in u.source.domains.items() for v in vs]
        return [
            n
            for n, score, _ in process.extract(word, vals, scorer=fuzz.partial_ratio, limit=3)
            if score >= 60
        ]

    def near_columns(self, word: str) -> list[str]:
        from rapidfuzz import fuzz, process

        names = [c for u in self.req.sources for c in u.source.column_names]
        return [n for n, score, _ in process.extract(word, names, scorer=fuzz.ratio, limit=3) if score >= 40]

    # ---- conditions
    def rule_conditions(self) -> None:
        atoms: list[tuple[int, int, ir.Cond]] = []  # (first item, last item, cond)

        def add(m: re.Match[str], cond: ir.Cond, negate: bool = False) -> None:
            start = m.start()
            before = self.sym[:start]
            neg = re.search(
                rf"\b{NEG}(?: (?:the|any|those|ones|rows|with|where|whose|that|which|are|is|status|"
                rf"in|from|of|for|orders|records|items|every|each|all|have|has|had|a|an|S\d+))* ?$",
                before,
            )
            end = m.end()
            # "filter the click events out", "leave the cancelled orders out": the negation after
            out = re.match(r" (?:(?:S\d+|rows|ones|records|items|entries) )?out\b", self.sym[end:])
            verb = re.search(
                r"\b(?P<v>filter|leave|take|strip|weed|cut|throw|keep)(?: the| any| all)? ?$", before
            )
            if (
                verb
                and out
                and verb.group("v") == "take"
                and re.match(r" of\b", self.sym[end + out.end() :])
                and not re.search(r"\b(?:rest|remaining|remainder|everything else|left over)\b", self.p.norm)
            ):
                verb = None  # "take the 2024 orders out of orders_2025.csv": from the file, not without
            if out and verb and not neg and not negate:
                negate, start, end = True, verb.start(), end + out.end()
            if neg and not negate:
                negate = True
                start = neg.start()
            ks = self.at(start, end)
            atoms.append((min(ks), max(ks), ir.Not(cond) if negate else cond))
            self.take(m)
            if neg:
                for k in self.at(neg.start(), m.start()):
                    self.items[k].used = True

        # an entity said with its number: "orders of product 7", "customer #42", "all except customer 5"
        for m in self.find(r"\b(S\d+) (?:# |no |number |id )?(N\d+)\b(?! (?:or|and|to|through|-) N\d)"):
            owner = self.item(m.group(1)).ref
            value = self.item(m.group(2)).ref
            key = self.entity_key(owner)
            if not key or value is None or not float(value).is_integer() or not key[0].numeric:
                continue
            add(m, ir.Compare(self.col(key[0]), "=", int(value)))
        self.render()
        # a part of a date compared: "hour of ts < 12", "month(order_date) >= 10"
        for m in self.find(
            rf"\b(?:the )?(?P<p>hour|month|quarter|year)(?: of| \()? (?:the )?(?P<c>C\d+)(?: \))? "
            rf"(?:is |are |was |were )?{CMP} (?P<n>N\d+)"
        ):
            ref = self.colref(m.group("c"))
            if not ref.temporal:
                continue
            value = self.item(m.group("n")[1:]).ref
            add(m, ir.DatePart(self.col(ref), m.group("p"), self.cmp_op(m.group("cmp")), int(value)))
        self.render()
        vlist = r"(V\d+(?:(?: ,| or| and| ,? or| ,? and| nor| /) V\d+)*)"
        # column is/is not value(s)
        for m in self.find(
            rf"\b(C\d+) (?:{IS} )?(?P<neg>not |isn't |aren't |other than |except |never |neither |!= |<> )?"
            rf"(?:in |one "
            rf"of |either )?{vlist}"
        ):
            refs = self.value_refs(m.group(3), column=self.colref(m.group(1)))
            add(m, self.in_cond(refs), negate=bool(m.group("neg")))
        self.render()
        # column compared with a number: "amount over 100", "amount >= 20", "price between 10 and 50"
        for m in self.find(
            r"\b(C\d+) (?:is |are |was |were |of |has |with |having |that is |which is )?(?:(?P<neg>not) )?"
            r"(?:between (N\d+) and|from (N\d+) (?:to|through|up to|until)|"
            r"in the range(?: of)? (N\d+) (?:to|-)) "
            r"(N\d+)"
        ):
            if not self.colref(m.group(1)).numeric:
                continue
            lo = self.item((m.group(3) or m.group(4) or m.group(5))[1:]).ref
            hi = self.item(m.group(6)[1:]).ref
            c = self.col(self.colref(m.group(1), numeric=True))
            add(m, ir.And([ir.Compare(c, ">=", lo), ir.Compare(c, "<=", hi)]), negate=bool(m.group("neg")))
        self.render()
        for m in self.find(
            r"\b(C\d+) (?:is |are |was |were |of |has |with |having )?(?:(?P<neg>not) )?between (N\d+) and "
            r"(N\d+)"
        ):
            ref = self.colref(m.group(1), numeric=True)
            lo, hi = self.item(m.group(3)[1:]).ref, self.item(m.group(4)[1:]).ref
            c = self.col(ref)
            add(m, ir.And([ir.Compare(c, ">=", lo), ir.Compare(c, "<=", hi)]), negate=bool(m.group("neg")))
        self.render()
        for m in self.find(
            rf"\b(C\d+) (?:is |are |was |were |of |has |with |having |that is |which is )?{CMP} (N\d+|Q\d+)"
        ):
            ref = self.colref(m.group(1))
            value = self.scalar(m.group(3))
            if ref.temporal and isinstance(value, float):
                continue  # "placed 9 or more orders": a count, never a date compared with a number
            add(m, ir.Compare(self.col(ref), self.cmp_op(m.group("cmp")), value))
        self.render()
        for m in self.find(
            r"\b(C\d+) (?:is |are |of |at |with )?(N\d+) (?P<t>or less|or fewer|or lower|or below|or under|"
            r"or more|or higher|or above|or over|or greater|and up|and above|and over|and below|and under|"
            r"plus)\b"
        ):
            ref = self.colref(m.group(1), numeric=True)
            if ref.temporal:
                continue  # "placed 9 or more": a count of rows, not a date
            op = "<=" if re.search(r"less|fewer|lower|below|under", m.group("t")) else ">="
            add(m, ir.Compare(self.col(ref), op, self.item(m.group(2)[1:]).ref))
        self.render()
        for m in self.find(r"\b(C\d+) (?:=|==|is|equals|of) (N\d+)\b(?! (?:or|and) (?:less|more))"):
            ref = self.colref(m.group(1))
            add(m, ir.Compare(self.col(ref), "=", self.item(m.group(2)[1:]).ref))
        self.render()
        for m in self.find(rf"{CMP} (N\d+) (?:in|of|for|by) (?:the |their |its )?(C\d+)"):
            ref = self.colref(m.group(3), numeric=True)
            add(m, ir.Compare(self.col(ref), self.cmp_op(m.group("cmp")), self.item(m.group(2)).ref))
        self.render()
        for m in self.find(
            r"\b(negative|positive|non negative|nonnegative|zero) (C\d+)s?\b|\b(C\d+)s? (?:is |are |was |of "
            r")?"
            r"(negative|positive|non negative|below zero|above zero|under zero|over zero|in the red|zero)\b"
            r"|\b(?:are |is )?(in the red|overdrawn)\b"
        ):
            word = m.group(1) or m.group(4) or m.group(5) or ""
            ref = (
                self.colref(m.group(2) or m.group(3))
                if (m.group(2) or m.group(3))
                else self.only_measure(f"'{word}'")
            )
            op = {
                "negative": "<",
                "positive": ">",
                "non negative": ">=",
                "nonnegative": ">=",
                "zero": "=",
                "below zero": "<",
                "above zero": ">",
                "under zero": "<",
                "over zero": ">",
                "in the red": "<",
                "overdrawn": "<",
            }[word]
            add(m, ir.Compare(self.col(ref), op, 0))
        self.render()
        # comparisons without a column: "orders under 20", "between 50 and 100", "20 or less"
        for m in self.find(r"(?:\bbetween) (N\d+) and (N\d+)"):
            c = self.col(self.only_measure("'between'"))
            lo, hi = self.item(m.group(1)[1:]).ref, self.item(m.group(2)[1:]).ref
            add(m, ir.And([ir.Compare(c, ">=", lo), ir.Compare(c, "<=", hi)]))
        self.render()
        for m in self.find(rf"{CMP} (N\d+)"):
            self.unknown_before(m.start())
            self.unknown_after(m.end())
            if self.req.measures and self.req.group:
                # "keep the countries where that number is above 25", "only where > 25": the measure
                target = self.req.measures[-1] if len(self.req.measures) == 1 else None
                if target is None:
                    raise PlannerQuestion(
                        f"Which measure does '{m.group('cmp')} {shown(self.item(m.group(2)).ref)}' apply to: "
                        + ", ".join(x.alias for x in self.req.measures)
                        + "?",
                        candidates=[x.alias for x in self.req.measures],
                    )
                self.req.having.append(
                    ir.Having(target.alias, self.cmp_op(m.group("cmp")), float(self.item(m.group(2)).ref))
                )
                self.take(m)
                continue
            c = self.col(self.only_measure(f"'{m.group('cmp')}'"))
            add(m, ir.Compare(c, self.cmp_op(m.group("cmp")), self.item(m.group(2)[1:]).ref))
        self.render()
        for m in self.find(
            r"(N\d+) (?P<t>or less|or fewer|or lower|or below|or under|or more|or higher|or above|or over|"
            r"and up|and above|and over|and below|and under|plus)\b"
        ):
            c = self.col(self.only_measure(f"'{m.group('t')}'"))
            op = "<=" if re.search(r"less|fewer|lower|below|under", m.group("t")) else ">="
            add(m, ir.Compare(c, op, self.item(m.group(1)[1:]).ref))
        self.render()
        # yes/no columns: "where active is true", "only active customers", "inactive ones"
        for pos, it in enumerate(self.items):
            if it.used or it.kind != "word":
                continue
            base = re.sub(r"^(?:non|not|in|un)", "", it.text)
            if base == it.text or len(base) < 3:
                continue
            flags = [r for r in self.columns(base, exact_only=True) if "BOOL" in r.type]
            if len(flags) == 1:  # "inactive customers": the yes/no column, negated
                col = self.col(flags[0])
                atoms.append((pos, pos, ir.Compare(col, "=", False)))
                it.used = True
        self.render()
        for m in self.find(
            rf"\b(C\d+) (?:{IS} )?(?P<neg>not |isn't |aren't )?(?P<v>true|false|yes|no|set|unset)\b"
            r"|\b(?P<n2>not |non |in)?(?P<c2>C\d+)"
            r"(?= S\d+| rows| records| ones| entries| from| in | into| of |$)"
        ):
            ref = self.colref(m.group(1) or m.group("c2"))
            if "BOOL" not in ref.type:
                continue
            value = (m.group("v") or "true") in ("true", "yes", "set")
            if m.group("neg") or m.group("n2"):
                value = not value
            add(m, ir.Compare(self.col(ref), "=", value))
        self.render()
        # text matching: "name contains 'item'", "page starts with /"
        for m in self.find(
            r"\b(C\d+) (?:(?P<neg>not |doesn't |does not |don't |do not ))?(?P<op>contains?|containing|"
            r"includes?|including|ilike|like|starts? with|starting with|begins? with|beginning with|"
            r"ends? with|"
            r"ending with|mentions?|mentioning) (Q\d+|V\d+|[a-z0-9_/-]+(?: \. [a-z0-9_-]+)*)"
        ):
            ref = self.colref(m.group(1))
            text = self.textof(m.group(4)).replace(" . ", ".")  # "example . com": a domain
            op = m.group("op")
            pattern = (
                text  # "name ilike '%kitchen%'": the pattern as written
                if "%" in text
                else f"{text}%"
                if op.startswith(("start", "begin"))
                else f"%{text}"
                if op.startswith("end")
                else f"%{text}%"
            )
            add(m, ir.Compare(self.col(ref), "ilike", pattern), negate=bool(m.group("neg")))
        self.render()
        # "products that have 'kitchen' somewhere in their name"
        for m in self.find(
            r"\b(?:have|has|having|with|contains?|containing) (Q\d+|V\d+) (?:somewhere |anywhere )?"
            r"(?:in|within|"
            r"inside) (?:the |their |its )?(C\d+)"
        ):
            ref = self.colref(m.group(2))
            add(m, ir.Compare(self.col(ref), "ilike", f"%{self.textof(m.group(1))}%"))
        for m in self.find(
            r"\b(?:whatever|regardless of|ignoring|irrespective of) (?:the )?(?:capitali[sz]ation|case)\b"
            r"|\bcase[ -]?insensitive(?:ly)?\b|\b(?:upper|lower) or (?:upper|lower) ?case\b"
        ):
            if any(isinstance(c, ir.Compare) and c.op == "ilike" for c in walk(self.req.where)) or any(
                isinstance(a[2], ir.Compare) and a[2].op == "ilike" for a in atoms
            ):
                self.take(m)  # ILIKE ignores case already
        self.render()
        # a word next to a column of known values that is none of them: "status lost" → a question
        for m in self.find(rf"\b(C\d+) (?:{IS} )?(?:not )?(Q\d+|[a-z][\w'-]*)(?![\w'])"):
            ref = self.colref(m.group(1))
            raw = self.textof(m.group(2))
            domain = self.domain(ref)
            if domain and raw not in FILLERS and raw not in STRUCTURE_WORDS and raw not in KNOWN_WORDS:
                raise PlannerQuestion(
                    f"{ref.column} has no value '{raw}' in {ref.source.name}",
                    hint="its values are: " + ", ".join(domain),
                    candidates=list(domain),
                )
        # nulls: "missing email", "without an email", "email is empty", "with an email"
        for m in self.find(
            r"\b(?:missing|no|without|lacking|with no|with missing|with empty|with blank|empty|blank|null|"
            r"unknown) (?:a |an |any )?(C\d+)s?\b"
        ):
            add(m, ir.IsNull(self.col(self.colref(m.group(1)))))
        self.render()
        for m in self.find(
            r"\b(C\d+)s? (?:is |are |was |were )?(?P<neg>not |isn't |aren't |never )?(?:missing|empty|blank|"
            r"null|not set|unknown|absent|not filled|unset|nan)\b"
        ):
            add(m, ir.IsNull(self.col(self.colref(m.group(1))), negated=bool(m.group("neg"))))
        self.render()
        for m in self.find(
            r"\b(?:with|has|have|having|that have|who have|which have) (?:a |an |some |valid |non empty |"
            r"known |filled in )?(C\d+)(?: (?:address|set|filled in|on file))?(?! (?:is|are|of|=|>|<|over|"
            r"under|between|above|below))"
        ):
            ref = self.colref(m.group(1))
            if ref.numeric:
                continue
            add(m, ir.IsNull(self.col(ref), negated=True))
        self.render()
        for m in self.find(
            r"\b(C\d+)s? (?:is |are )?(?:present|set|filled|filled in|known|not null|non null|available|"
            r"provided|given)\b"
        ):
            add(m, ir.IsNull(self.col(self.colref(m.group(1))), negated=True))
        self.render()
        # dates
        for m in self.find(r"\b(?:(C\d+) (?:(?:up|out|is|was|are|were|at|on) )*)?(D\d+)"):
            spec = self.item(m.group(2)).ref
            if isinstance(spec, Part) and spec.op == "examples":
                self.take(m)  # "per day of the week (Monday, Tuesday, ...)": what the groups look like
                continue
            if m.group(1):
                ref = self.colref(m.group(1))
                if not ref.temporal:
                    ref = self.date_column()
            else:
                self.one_date_said(m.start())
                ref = self.date_column()
            add(m, self.date_cond(self.col(ref), spec))
        self.render()
        # a bare year next to the rows it qualifies: "the 2024 signups", "2026 orders"
        for m in self.find(r"(N\d+)(?= (?:C\d+|S\d+|V\d+|~|:|,))|(?<=S\d )(N\d+)|(?<=S\d\d )(N\d+)"):
            ksym = m.group(1) or m.group(2) or m.group(3)
            v = self.item(ksym).ref
            if isinstance(v, float) and v.is_integer() and 1990 <= v <= 2100:
                from datetime import date as _date

                nxt = re.match(r" (C\d+)", self.sym[m.end() :])
                ref = (
                    self.colref(nxt.group(1))
                    if nxt and self.colref(nxt.group(1)).temporal
                    else self.date_column()
                )
                add(m, ir.DateRange(self.col(ref), _date(int(v), 1, 1), _date(int(v) + 1, 1, 1), str(int(v))))
                if nxt and self.colref(nxt.group(1)).temporal:
                    for kk in self.at(m.end() + nxt.start(1), m.end() + nxt.end(1)):
                        self.items[kk].used = True
        self.render()
        # bare values: "shipped orders", "from France", "DE, FR or NL", "the toys or games categories"
        for m in self.find(vlist + r" (C\d+)"):
            refs = self.value_refs(m.group(1))
            if {r.column.lower() for r in refs} == {c.column.lower() for c in self.item(m.group(2)).ref}:
                add(m, self.in_cond(refs))
        self.render()
        for m in self.find(vlist):
            refs = self.value_refs(m.group(1))
            add(m, self.in_cond(refs))
        self.render()
        self.req.where += self.combine(atoms)

    def rule_name_parts(self) -> None:
        """Part of a full name, read before a 'first' can become a measure."""
        # part of a full name: "whose first name is Kim", "the owner's surname is Olsen"
        for m in self.find(
            r"\b(?:(?P<c>C\d+) )?(?P<part>first|given|last|family|sur|fore) ?(?P<n>C\d+|name)? ?(?:name )?"
            r"(?:is |was |are |= |equals |of |being )?(?P<v>Q\d+|[a-z][\w'-]*)\b"
        ):
            part, said = m.group("part"), m.group("n")
            if part in ("first", "last", "family") and not said:
                continue  # "the first order", "last 5 days": not a name
            if said and said.startswith("C") and not re.search(r"name", self.colref(said).column, re.I):
                continue
            raw = self.textof(m.group("v"))
            if raw in FILLERS or raw in STRUCTURE_WORDS or raw in KNOWN_WORDS or not raw.isalpha():
                continue
            ref = self.name_column(m.group("c"))
            pattern = f"{raw} %" if part in ("first", "given", "fore") else f"% {raw}"
            self.req.where.append(ir.Compare(self.col(ref), "ilike", pattern))
            self.take(m)
        self.render()
        # "with Tanaka as their last name"
        for m in self.find(
            r"\b(?P<v>Q\d+|[a-z][\w'-]*) as (?:their|its|his|her|the|a) "
            r"(?P<part>first|given|last|family|sur|fore) ?(?:C\d+|name)\b"
        ):
            raw = self.textof(m.group("v"))
            if raw in FILLERS or raw in STRUCTURE_WORDS or raw in KNOWN_WORDS or not raw.isalpha():
                continue
            ref = self.name_column(None)
            part = m.group("part")
            pattern = f"{raw} %" if part in ("first", "given", "fore") else f"% {raw}"
            self.req.where.append(ir.Compare(self.col(ref), "ilike", pattern))
            self.take(m)
        self.render()

    def rule_versus_aggregate(self) -> None:
        """A comparison with an aggregate of the column, read before 'average price' is a measure."""
        # against an aggregate: "priced above the average price of their category", "below the median"
        for m in self.find(
            rf"\b(?:(?P<c>C\d+) (?:is |are |was |were )?)?{CMP} (?:the )?(?:overall |whole |total )?"
            r"(?:(?:their|its|his|her) (?P<g2>C\d+|S\d+) )?"
            r"(?P<f>average|avg|mean|median)(?: (?P<c2>C\d+))?"
            r"(?: (?:of|for|in|within|across) (?!their|its|the same|same|his|her|each|every)(?:the |all )?"
            r"(?:S\d+)?)?"
            r"(?: (?:of|in|for|within|across) (?:their|its|the same|same|his|her|each|every) (?:own )?"
            r"(?P<g>C\d+|S\d+))?"
        ):
            said = m.group("c") or m.group("c2")
            ref = self.colref(said, numeric=True) if said else self.only_measure(f"'{m.group('cmp')}'")
            if not ref.numeric:
                continue
            within: list[str] = []
            if m.group("g") or m.group("g2"):
                key = self.group_key_for(self.item(m.group("g") or m.group("g2")))
                if key is None or key.col.alias != self.main.alias:
                    continue
                within = [key.col.name]
            func = AGGREGATES.get(m.group("f"), "avg")
            op = self.cmp_op(m.group("cmp"))
            if op not in (">", ">=", "<", "<="):
                continue
            self.req.where.append(ir.VersusAggregate(self.col(ref), op, func, within))
            self.take(m)
        self.render()

    def name_column(self, said: str | None) -> ColumnRef:
        """The column holding full names, for a first name or a surname: the one said, or the only one."""
        if said is not None:
            return self.colref(said)
        refs = [
            ColumnRef(self.main.source, c, 100)
            for c, t in self.main.source.columns
            if re.search(r"name|owner|holder|person", c, re.I) and not is_numeric_type(t)
        ]
        if len(refs) != 1:
            raise PlannerQuestion(
                f"Which column holds the names in {self.main.source.name}?",
                candidates=[r.column for r in refs] or list(self.main.source.column_names),
            )
        return refs[0]

    def unknown_before(self, pos: int) -> None:
        """'a rating above 4': the word before a comparison names a column that does not exist."""
        before = re.search(r"([a-z][a-z_]*) (?:is |are |of |was )?$", self.sym[:pos])
        if before is None:
            return
        word = before.group(1)
        if word in FILLERS or word in STRUCTURE_WORDS or word in KNOWN_WORDS or self.p.entity_source(word):
            return
        raise PlannerQuestion(
            f"No column called '{word}' in {', '.join(u.source.name for u in self.req.sources)}",
            hint="name one of the columns: " + ", ".join(self.main.source.column_names[:12]),
            candidates=self.near_columns(word),
        )

    def unknown_after(self, pos: int) -> None:
        """'fewer than 10 units in stock': the noun after the number names what is compared, and no
        column is called that; comparing the only number column instead would be a guess."""
        after = re.match(r" ([a-z][a-z_']*)", self.sym[pos:])
        if after is None:
            return
        from .parse import FUNCTION_WORDS

        word = after.group(1)
        from .parse import rule_words

        if (
            word in FILLERS
            or word in STRUCTURE_WORDS
            or word in KNOWN_WORDS
            or word in FUNCTION_WORDS
            or word in AFTER_NUMBER
            or word in rule_words()  # "over 100 sorted by date": a word the rules read, no noun
            or word.endswith(("ed", "ing"))
            or self.p.entity_source(word)
        ):
            return
        raise PlannerQuestion(
            f"No column called '{word}' in {', '.join(u.source.name for u in self.req.sources)}",
            hint="name one of the columns: " + ", ".join(self.main.source.column_names[:12]),
            candidates=self.near_columns(word),
        )

    def combine(self, atoms: list[tuple[int, int, ir.Cond]]) -> list[ir.Cond]:
        """Atoms joined by 'or' split the conditions; AND binds tighter, as in SQL and as people mean.

        'shipped orders over 100 or any cancelled order' is (shipped AND over 100) OR cancelled.
        """
        if not atoms:
            return []
        atoms.sort(key=lambda a: a[0])
        segments: list[list[ir.Cond]] = [[atoms[0][2]]]
        for (_, prev_end, _), (start, _, cond) in itertools.pairwise(atoms):
            between = {it.text for it in self.items[prev_end + 1 : start]}
            if (between & {"or", "either"} and "and" not in between) or (
                between & {"plus", "any"} and not between & {"with", "that", "which", "where"}
            ):
                segments.append([cond])
            else:
                segments[-1].append(cond)
        segments = [self.split_exclusive(seg) for seg in segments]
        segments = [seg for seg in segments if seg]
        if len(segments) <= 1:
            return segments[0] if segments else []
        return [ir.Or([seg[0] if len(seg) == 1 else ir.And(seg) for seg in segments])]

    def split_exclusive(self, conds: list[ir.Cond]) -> list[ir.Cond]:
        """Conditions joined by 'and' that no row can meet together: 'shipped and cancelled orders',
        'signed up in 2024 and in 2025'. Beside a measure, each is a column of its own (a conditional
        aggregate); otherwise people mean either one."""
        for k, first in enumerate(conds):
            clash = [c for c in conds[k + 1 :] if exclusive(first, c)]
            if not clash:
                continue
            group = [first, *clash]
            rest = [c for c in conds if not any(c is g for g in group)]
            plain = [m for m in self.req.measures if m.where is None and not m.share and m.parts is None]
            if plain:
                for m in plain:
                    at = self.req.measures.index(m)
                    self.req.measures[at : at + 1] = [
                        ir.Measure(m.func, m.col, m.distinct, where=c, alias=f"{m.alias}_{cond_label(c)}")
                        for c in group
                    ]
                return rest
            return [*rest, ir.Or(group)]
        return conds

    def value_refs(self, text: str, column: ColumnRef | None = None) -> list[ValueRef]:
        out: list[ValueRef] = []
        for k in re.findall(r"V(\d+)", text):
            refs: list[ValueRef] = self.item(k).ref
            if column is not None:
                refs = [r for r in refs if r.column.lower() == column.column.lower()] or refs
            cols = {(id(r.source), r.column) for r in refs}
            if len(cols) > 1:
                main = [r for r in refs if r.source is self.main.source]
                refs = main or refs
                if len({r.column for r in refs}) > 1:
                    raise PlannerQuestion(
                        f"'{self.item(k).text}' appears in several columns: "
                        + ", ".join(sorted({r.column for r in refs}))
                        + ". Which one do you mean?",
                        candidates=sorted({f"{r.column} = '{r.value}'" for r in refs}),
                    )
            out.append(refs[0])
        return out

    def in_cond(self, refs: list[ValueRef]) -> ir.Cond:
        by: dict[tuple[int, str], list[ValueRef]] = {}
        for r in refs:
            by.setdefault((id(r.source), r.column), []).append(r)
        conds: list[ir.Cond] = []
        for vs in by.values():
            col = ir.Col(self.use(vs[0].source).alias, vs[0].column)
            values = list(dict.fromkeys(v.value for v in vs))
            conds.append(
                ir.Compare(col, "=", values[0]) if len(values) == 1 else ir.Compare(col, "in", values)
            )
        return conds[0] if len(conds) == 1 else ir.Or(conds)

    def date_cond(self, col: ir.Col, spec: Any) -> ir.Cond:
        if isinstance(spec, Period):
            return ir.DateRange(col, spec.lo, spec.hi, spec.text, hi_inclusive=spec.hi_inclusive)
        if isinstance(spec, Rolling):
            return ir.Recent(col, spec.n, spec.unit)
        assert isinstance(spec, Part)
        return ir.DatePart(col, spec.part, spec.op, spec.value)

    def textof(self, sym: str) -> str:
        if re.fullmatch(r"[QV]\d+", sym):
            it = self.item(sym[1:])
            return it.ref[0].value if it.kind == "val" else str(it.ref)
        return sym

    def scalar(self, sym: str) -> Any:
        it = self.item(sym[1:])
        return it.ref

    def cmp_op(self, words: str) -> str:
        return dict(COMPARATORS)[words]

    def domain(self, ref: ColumnRef) -> tuple[str, ...]:
        for c, vals in ref.source.domains.items():
            if c.lower() == ref.column.lower():
                return vals
        return ()

    # ---- sort: "sorted by amount descending", "cheapest first"
    def rule_sort(self) -> None:
        self.sort_by_the_date()
        dirs = (
            r"desc|descending|asc|ascending|reverse|decreasing|increasing|highest first|lowest first|"
            r"largest first|smallest first|newest first|oldest first|biggest first|from high to low|"
            r"from low to high|from highest to lowest|from lowest to highest|high to low|low to high|"
            r"highest to lowest|lowest to highest"
        )
        key_pattern = (
            r"(?:the )?(?P<agg>(?:total|sum|average|avg|mean|highest|lowest|maximum|minimum|max|min|"
            r"number of|count of) )?(?P<what>C\d+|S\d+|count|total)"
            rf"(?: ,?(?: in)? ?(?P<dir>{dirs})\b(?: order)?)?"
        )
        m = re.search(
            r"\b(?:sort|sorted|sorting|order|ordered|ordering|rank|ranked|arrange|arranged|list|listed) "
            r"(?:them |it |the rows |the result |the table |everything )?(?:(?:in )?(?P<dir0>"
            rf"{dirs})\b(?: order)? )?(?:by|on) {key_pattern}",
            self.sym,
        )
        said: list[re.Match[str]] = []
        while m:
            said.append(m)
            # more keys: "by category ascending, then by price descending", "category asc, price desc"
            m = re.compile(
                rf" ?(?:,|and|then|;)(?: and)?(?: then)?(?: by)? {key_pattern}"
                r"(?! (?:[VNQD]\d|is\b|are\b|=|>|<|!|not\b|in\b|between\b|over\b|under\b))"
            ).match(self.sym, m.end())
        for m in said:
            self.req.order.append((self.sort_key(m.group("agg"), m.group("what")), self.descending(m)))
        for m in said:
            self.take(m)
        bare = re.search(
            r"\b(?:sort|sorted|sorting|order|ordered|rank|ranked|arrange|arranged)(?: it| them| the result| "
            r"the rows)?"
            r"(?: in)? (?P<dir>desc|descending|asc|ascending|decreasing|increasing|reverse)(?: order)?\b",
            self.sym,
        )
        if bare and not self.req.order:
            desc = bare.group("dir") in ("desc", "descending", "decreasing", "reverse")
            sort_key: ir.Col | str = "" if self.req.measures else self.col(self.only_measure("the sort"))
            self.req.order.append((sort_key or self.req.measures[0].alias, desc))
            self.take(bare)
            self.render()
        fm = re.search(
            r"\b(?:so (?:that )?)?(?:the )?(?P<w>least expensive|cheapest|most expensive|priciest|newest|"
            r"latest|most recent|oldest|earliest|highest|"
            r"lowest|largest|smallest|biggest)(?: S\d+| ones?| one)? (?:comes? |is |are |go |goes )?first\b",
            self.sym,
        )
        if fm and not self.req.order:
            w = fm.group("w")
            desc = w in (
                "most expensive",
                "priciest",
                "newest",
                "latest",
                "most recent",
                "highest",
                "largest",
                "biggest",
            )
            if w in ("newest", "latest", "most recent", "oldest", "earliest"):
                ref = self.date_column()
            elif w in ("cheapest", "most expensive", "priciest", "least expensive"):
                ref = self.price_column()
            else:
                ref = self.only_measure(f"'{w} first'")
            self.req.order.append((self.col(ref), desc))
            self.take(fm)
        self.render()

    def sort_by_the_date(self) -> None:
        """'sorted by date, newest first', 'ordered by time': the date column of the rows, in order;
        never a grouping by day."""
        m = re.search(
            r"\b(?:sorted|ordered|sort|order|sorting|ordering|arranged|listed|list them) "
            r"(?:them |it |the rows |the results |chronologically )?by (?:the |their |its )?(?:S\d+ )?"
            r"(?:date|time|timestamp|day)\b"
            r"(?: ,?(?: with)?(?: the)? (?P<dir>newest|latest|most recent|oldest|earliest|asc|ascending|desc|"
            r"descending)(?: first| ones first| one first)?)?",
            self.sym,
        )
        if m is None:
            return
        desc = (m.group("dir") or "") in ("newest", "latest", "most recent", "desc", "descending")
        self.req.order.append((self.col(self.date_column()), desc))
        self.take(m)
        self.render()

    def sort_key(self, agg: str | None, what: str) -> ir.Col | str:
        """A sort key as said: a column, an aggregate of one (added as a measure), or the count."""
        agg = (agg or "").strip()
        if agg and what.startswith("C"):
            func = {"number of": "count", "count of": "count"}.get(agg, AGGREGATES.get(agg, "sum"))
            ref = self.colref(what[1:])
            alias = measure_alias(func, ref.column)
            if not any(x.alias == alias for x in self.req.measures):
                self.req.measures.append(ir.Measure(func, self.col(ref), alias=alias))
            return alias
        if what.startswith("S") or agg in ("number of", "count of"):
            if not any(x.alias == "count" for x in self.req.measures):
                self.req.measures.append(ir.Measure("count", None, alias="count"))
            return "count"
        if what.startswith("C"):
            ref = self.colref(what[1:])
            found = next((x.alias for x in self.req.measures if x.col and x.col.name == ref.column), None)
            return found or self.col(ref)
        return next((x.alias for x in self.req.measures), what)

    @staticmethod
    def descending(m: re.Match[str]) -> bool:
        said = m.group("dir") or (m.groupdict().get("dir0") or "")
        return bool(
            re.search(
                r"desc|reverse|decreasing|highest first|largest first|newest first|biggest first|high to low|"
                r"highest to lowest",
                said,
            )
        )

    # ---- "sorted by amount, keep 8 rows": a limit after a sort
    def rule_limit(self) -> None:
        if self.req.rank is None and not self.req.order and len(self.req.measures) == 1 and self.req.group:
            top = re.search(r"\b(?P<w>top|bottom) (N\d+)\b", self.sym)
            if top:  # "count per page, top 2": the groups with the highest measure
                desc = top.group("w") == "top"
                self.req.rank = ir.Rank(
                    int(self.item(top.group(2)).ref), [(self.req.measures[0].alias, desc)]
                )
                self.take(top)
                self.render()
                return
        if self.req.rank is not None or not self.req.order:
            return
        m = re.search(
            r"\b(?:keep|keeping|limit(?:ed)? to|limit|only|just|take|taking|return|returning|show|first|top|"
            r"store) "
            r"(?:just |only )?(?:the )?(?:first |top )?(N\d+)(?: rows| records| entries| results| lines| of "
            r"them| S\d+)?\b",
            self.sym,
        )
        if m:
            self.req.rank = ir.Rank(int(self.item(m.group(1)).ref), list(self.req.order))
            self.req.order = []
            self.take(m)
            self.render()

    # ------------------------------------------------------------ column defaults
    def only_measure(self, why: str) -> ColumnRef:
        """The one numeric, non-key column of the main source ('orders under 20' → amount)."""
        for source in [self.main.source] + [u.source for u in self.req.sources[1:]]:
            refs = [
                ColumnRef(source, c, 50)
                for c, t in source.columns
                if ColumnRef(source, c, 50).numeric and not ColumnRef(source, c, 50).keyish
            ]
            if len(refs) == 1:
                return refs[0]
            if len(refs) > 1:
                raise PlannerQuestion(
                    f"Which number does {why} apply to: {', '.join(r.column for r in refs)}?",
                    hint="name the column, e.g. '" + refs[0].column + " over 100'",
                    candidates=[r.column for r in refs],
                )
        raise PlannerQuestion(f"{why} needs a numeric column, and {self.main.source.name} has none")

    def price_column(self) -> ColumnRef:
        for u in self.req.sources:
            for c in u.source.column_names:
                if re.search(r"price|cost", c.lower()):
                    return ColumnRef(u.source, c, 50)
        return self.only_measure("'expensive'")

    def one_date_said(self, pos: int) -> None:
        """'keep the rows where the date is in 2025' over orders joined with customers: which date?"""
        if not re.search(
            r"\b(?:date|dates|day|time|times|timestamp)s? (?:(?:is|was|are|were|falls?|fell) )?$",
            self.sym[:pos],
        ):
            return
        joined = [
            u.source
            for u in self.req.sources
            if not any(isinstance(w, ir.Exists) and w.source is u for w in self.req.where)
        ]
        dated = [f"{s.name}:{c}" for s in joined for c, _ in s.columns if ColumnRef(s, c, 50).temporal]
        if len({d.split(":")[0] for d in dated}) > 1:
            raise PlannerQuestion(
                "Which date do you mean: " + ", ".join(d.rsplit(":", 1)[1] for d in dated) + "?",
                hint="name the column, e.g. 'where order_date is in 2025'",
                candidates=[d.rsplit(":", 1)[1] for d in dated],
            )

    def date_column(self, source: Source | None = None) -> ColumnRef:
        """The time column of a source: the only one, or the one that is not a bookkeeping stamp."""
        sources = [source] if source else [u.source for u in self.req.sources]
        for s in sources:
            refs = [ColumnRef(s, c, 50) for c, _ in s.columns if ColumnRef(s, c, 50).temporal]
            preferred = [
                r for r in refs if not re.search(r"updated|modified|loaded|ingested", r.column.lower())
            ]
            pick = preferred or refs
            if len(pick) == 1:
                return pick[0]
            if len(pick) > 1:
                raise PlannerQuestion(
                    f"Which date column: {', '.join(r.column for r in pick)}?",
                    candidates=[r.column for r in pick],
                )
            # text columns that hold dates (SQLite's TEXT dates: 'opened')
            texts = [
                ColumnRef(s, c, 50)
                for c, t in s.columns
                if re.search(r"date|_at$|_on$|opened|time|^ts$", c.lower())
            ]
            if len(texts) == 1:
                return texts[0]
        raise PlannerQuestion(f"{(source or self.main.source).name} has no date column to filter on")

    # ------------------------------------------------------------ the rest
    def finish(self) -> None:
        # "on the landing page (the root of the site)": one condition said twice is one condition
        self.req.where = [w for k, w in enumerate(self.req.where) if w not in self.req.where[:k]]
        # "morning events, meaning a time of day before 12:00": the hours said win over the word's
        hours = [w for w in self.req.where if isinstance(w, ir.DatePart) and w.part == "hour"]
        if any(w.op != "between" for w in hours):
            self.req.where = [w for w in self.req.where if not (w in hours and w.op == "between")]
        self.shares_of_every_value()
        self.conditions_into_exists()
        self.listed_groups()
        self.group_by_entity()
        self.rank_over_groups()
        self.joins()
        self.having_of_groups()
        self.add_window()
        self.add_change()
        self.pivot_columns()
        self.rule_rollup()
        self.unused()
        self.numeric_measures()
        mode, said, keys = self.p.mode_info
        existing = {
            (s.table or s.name).lower()
            for s in self.ctx.tables()
            if s.connection == self.ctx.target_connection
        }
        if self.req.overlay_key and mode == "merge" and (self.p.target_name or "").lower() not in existing:
            # "merge the updates over orders.csv into orders_current": the overlay is the merge; the
            # new table gets its result
            mode, said, keys = "replace", False, []
        self.req.mode, self.req.mode_said = mode, said
        self.req.keys = keys
        if mode == "merge" and not keys:
            cands = [
                c for c in self.main.source.column_names if re.search(r"(_id|_key|_code|^id)$", c.lower())
            ]
            raise PlannerQuestion(
                f"On which key should the rows be merged into {self.p.target_name or 'the target'}?",
                hint="say 'on <key column>', e.g. 'merge ... into orders on order_id'",
                candidates=[f"on {c}" for c in cands],
            )
        if self.p.target_name:
            self.req.target = self.p.target_name
        else:
            name = self.derived_name()
            raise PlannerQuestion(
                "Which table should the result go into? The request names no destination",
                hint=f"say 'into <table>', e.g. 'into {name}'",
                candidates=[f"into {name}"],
            )
        self.req.notes = self.p.notes
        self.req.named = list(self.p.said)

    def add_window(self) -> None:
        """The moving window of moving_window, over the first measure of the groups (the monthly total,
        the daily count), or over a column of the rows."""
        if self.pending_window is None:
            return
        func, frame, col = self.pending_window
        r = self.req
        if r.group:
            if col is not None and not any(m.col == col and m.where is None for m in r.measures):
                self.add_measure(ir.Measure("sum", col, alias=f"total_{col.name}"))
            if not r.measures:
                ref = self.only_measure("a moving average")
                self.add_measure(ir.Measure("sum", self.col(ref), alias=f"total_{ref.column}"))
            measure = next((m for m in r.measures if col is None or m.col == col), r.measures[0])
            order = next((g.col for g in r.group if g.unit is not None), r.group[0].col)
        else:
            measure = ir.Measure("sum", col or self.col(self.only_measure("a moving average")))
            order = self.col(self.date_column())
        r.running = ir.Running(measure, order, [], f"moving_{func}", window=func, frame=frame)

    def having_of_groups(self) -> None:
        """'only the ones with 10+ orders': a count condition on the groups the request made."""
        if self.pending_having is None:
            return
        r = self.req
        if not r.group:
            raise PlannerQuestion(
                "Which groups should have that many rows? The request groups nothing",
                hint="say 'per <column>', e.g. 'per customer_id, only the ones with 10+ orders'",
            )
        count = next((m for m in r.measures if self.counts_rows(m)), None)
        if count is None:
            count = ir.Measure("count", None, alias="count")
            r.measures.append(count)
        op, value = self.pending_having
        r.having.append(ir.Having(count.alias, op, value))

    def pivot_columns(self) -> None:
        """'one row per page and one column per event type (signup, click, ...)': counts of each value as
        columns; the column the values come from is no group of the rows."""
        r = self.req
        split = {m.where.col for m in r.measures if isinstance(m.where, ir.Compare) and m.where.op == "="}
        for col in split:
            if sum(1 for m in r.measures if isinstance(m.where, ir.Compare) and m.where.col == col) >= 2:
                r.group = [g for g in r.group if not (g.col == col and g.unit is None)]

    def rule_rollup(self) -> None:
        """'the average number of orders per customer, for each year', 'orders per customer per year,
        averaged per year': the measures per group, then their average over one of the keys."""
        r = self.req
        if not r.measures or not r.group or r.rank or r.having or any(m.share for m in r.measures):
            return
        avg = next(
            (
                it
                for it in self.items
                if not it.used
                and it.kind == "word"
                and it.text in ("average", "averaged", "avg", "mean", "median")
            ),
            None,
        )
        if avg is None or len(r.group) < 1:
            return
        func = "median" if avg.text == "median" else "avg"
        toks = self.p.tokens
        k = avg.tokens[-1].index

        def key_named(i: int) -> ir.GroupKey | None:
            """The group key the words from token i on name: 'per customer', 'by year'."""
            words = [t.norm for t in toks[i : i + 4] if t.norm not in ("the", "each", "every", "a")]
            if not words:
                return None
            w = words[0]
            ent = self.p.entity_source(w)
            for g in r.group:
                names = {g.col.name.lower(), (g.unit or "").lower()}
                if (
                    w in names
                    or singular(w) in names
                    or (ent is not None and g.col.name.lower() == f"{singular(ent.stem.lower())}_id")
                ):
                    return g
            return None

        after = [t.index for t in toks[k + 1 :] if t.norm in ("per", "by", "each", "over", "across")]
        if avg.text == "averaged":  # "..., averaged per year": the outer keys follow
            outer = [g for i in after[:1] if (g := key_named(i + 1)) is not None]
            if not outer or len(outer) == len(r.group):
                return
            r.rollup = (func, outer)
        else:  # "the average number of orders per customer (for each year)": the inner key follows
            inner = next((g for i in after[:1] if (g := key_named(i + 1)) is not None), None)
            if inner is None or inner.unit is not None:
                return  # "on average, how many orders in each year": an average over what? a question
            r.rollup = (func, [g for g in r.group if g is not inner])
        avg.used = True

    def shares_of_every_value(self) -> None:
        """'what share of the orders is shipped, pending, returned or cancelled': a share over every
        value a column holds is a share per value, not a filter that keeps all rows."""
        r = self.req
        if r.group or not any(m.share for m in r.measures):
            return
        for w in list(r.where):
            if not (isinstance(w, ir.Compare) and w.op == "in"):
                continue
            use = next((u for u in r.sources if u.alias == w.col.alias), None)
            domain = use.source.domains.get(w.col.name) if use else None
            if domain and {str(v).lower() for v in w.value} == {str(v).lower() for v in domain}:
                r.where.remove(w)
                r.group.append(ir.GroupKey(w.col))
                return

    def group_by_entity(self) -> None:
        """'every product ... with its number of orders': a measure for each row of the main source,
        grouped by its key, never one total over all of them."""
        r = self.req
        if not r.measures or r.group or r.rank is not None or r.running or any(m.share for m in r.measures):
            return
        toks = self.p.tokens
        keys = self.key_of(self.main.source)
        if keys and re.search(r"\beach (?:with|of them|one|having|showing|plus|along with)\b", self.p.norm):
            r.group.append(ir.GroupKey(self.col(keys[0])))  # "the customer list, each with how many orders"
            return
        for it in self.items:
            if it.kind != "src" or it.ref is not self.main.source:
                continue
            k = it.tokens[0].index
            if (k > 0 and toks[k - 1].norm in ("every", "each")) or (
                k > 1 and toks[k - 2].norm in ("every", "each")
            ):
                keys = self.key_of(self.main.source)
                if keys:
                    r.group.append(ir.GroupKey(self.col(keys[0])))
                return

    def conditions_into_exists(self) -> None:
        """A condition on the columns of a source read only inside EXISTS belongs inside it:
        'customers who never had an order cancelled' filters the orders, not the customers."""
        inner = {w.source.alias: w for w in self.req.where if isinstance(w, ir.Exists)}
        if not inner:
            return
        kept: list[ir.Cond] = []
        for cond in self.req.where:
            aliases = {c.alias for c in columns_in(cond)}
            if not isinstance(cond, ir.Exists) and len(aliases) == 1 and next(iter(aliases)) in inner:
                inner[next(iter(aliases))].where.append(cond)
            else:
                kept.append(cond)
        self.req.where = kept

    def numeric_measures(self) -> None:
        """A total, average or median of a text column is a misreading, never a table to publish."""
        types = {(u.alias, c.lower()): t for u in self.req.sources for c, t in u.source.columns}
        for m in self.req.measures:
            if m.func not in ("sum", "avg", "median") or m.col is None:
                continue
            kind = types.get((m.col.alias, m.col.name.lower()))
            if kind is not None and not is_numeric_type(kind):
                raise PlannerQuestion(
                    f"I read a {measure_words(m)}, but {m.col.name} holds {kind.lower()}, not numbers",
                    hint="name the number column to add up or average, e.g. 'total amount per country'",
                )

    def joins(self) -> None:
        """Sources whose columns the reading uses join the main source on their shared key."""
        if not self.req.aggregated and not self.req.select:
            # "orders.csv + price from products.parquet": a column of another source, said and not
            # used by any rule, is a column to add to the rows
            for it in self.items:
                if it.used or it.kind != "col":
                    continue
                others = [
                    r
                    for r in it.ref
                    if r.source is not self.main.source and self.join_keys(self.main.source, r.source)
                ]
                if others and len(others) == len(it.ref):
                    c = self.col(others[0])
                    if c not in self.req.extra and not self.main_only:
                        self.req.extra.append(c)
                    it.used = True
        used = {c.alias for c in self.columns_used()}
        for u in self.req.sources[1:]:
            if any(isinstance(w, ir.Exists) and w.source is u for w in self.req.where):
                continue
            if self.req.union:
                continue
            if u.alias not in used and not self.join_said():
                continue
            keys = self.join_keys(self.main.source, u.source)
            if self.join_on:
                keys = [(self.join_on, self.join_on)]
            via = None
            if not keys:
                for mid in self.req.sources[1:]:
                    if mid is u:
                        continue
                    k2 = self.join_keys(mid.source, u.source)
                    if k2 and self.join_keys(self.main.source, mid.source):
                        via, keys = mid, k2
                        break
            if not keys:
                raise PlannerQuestion(
                    f"How should {self.main.source.name} and {u.source.name} be joined? They share no key "
                    f"column",
                    hint="say 'joined on <column>'",
                )
            key = keys[0]
            left = via.alias if via else self.main.alias
            u.dedupe = True
            join = ir.Join(u, [(ir.Col(left, key[0]), ir.Col(u.alias, key[1]))])
            if self.keep_unmatched:
                # the conditions on the joined rows go into ON, or the unmatched rows would be lost
                join.how = "left"
                join.on = [w for w in self.req.where if {c.alias for c in columns_in(w)} == {u.alias}]
                self.req.where = [w for w in self.req.where if all(w is not x for x in join.on)]
            self.req.joins.append(join)
        # row-level joins: the columns said of the other source are added; a source used only in a
        # condition adds nothing ("orders of toys products"); a join said with no columns adds all
        if self.req.joins and not self.req.aggregated and not self.req.select:
            for j in self.req.joins:
                for it in self.items:
                    if it.used or it.kind != "col":
                        continue
                    refs = [
                        r
                        for r in it.ref
                        if self.uses.get(id(r.source)) is j.right or r.source is j.right.source
                    ]
                    if refs:
                        c = ir.Col(j.right.alias, refs[0].column)
                        if c not in self.req.extra and not self.main_only:
                            self.req.extra.append(
                                c
                            )  # "order columns only": where a column comes from, no more
                        it.used = True
                if any(c.alias == j.right.alias for c in self.req.extra) or self.main_only:
                    continue
                in_where = any(c.alias == j.right.alias for c in self.where_columns())
                if in_where and not re.search(
                    r"\b(?:join|joined|joining|enrich|enriched|look ?up|with all)\b", self.p.norm
                ):
                    continue
                have = {c.lower() for c in self.main.source.column_names} | {
                    c.name.lower() for c in self.req.extra
                }
                for name in j.right.source.column_names:
                    if name.lower() not in have:
                        self.req.extra.append(ir.Col(j.right.alias, name))

    def where_columns(self) -> list[ir.Col]:
        return columns_in(self.req.where)

    def listed_groups(self) -> None:
        """In an aggregate, a dimension said and used by no rule is a group key: 'category, min price'."""
        r = self.req
        if not r.aggregated or (r.rank is not None and r.rank.partition):
            return
        for it in self.items:
            if it.used:
                continue
            if it.kind == "col":
                ref = it.ref[0] if len({x.column for x in it.ref}) == 1 else None
                if ref is None or (ref.numeric and not ref.keyish):
                    continue
                key = ir.GroupKey(self.col(ref))
                # "store customer_id": a key of the same name, grouped already on the other source;
                # "by signup year": the column of a period key, said with it
                joined = any(k.col.name == key.col.name and k.unit is None for k in r.group) or any(
                    k.col == key.col and k.unit is not None for k in r.group
                )
                if key.col not in [g.col for g in r.group] and not joined:
                    r.group.append(key)
                it.used = True
            elif (
                it.kind == "word"
                and it.text in UNITS
                and UNITS[it.text] in ("year", "month", "quarter", "week", "day", "hour")
            ):
                try:
                    ref = self.date_column()
                except PlannerQuestion:
                    continue
                unit = UNITS[it.text]
                key = ir.GroupKey(self.col(ref), None if unit == "day" and ref.type == "DATE" else unit)
                if all(
                    (g.col, (g.unit or "").removesuffix("_number")) != (key.col, key.unit) for g in r.group
                ):
                    r.group.append(key)  # "by quarter (quarter as 1 to 4)": the same key said again
                it.used = True

    def rank_over_groups(self) -> None:
        """'Top 3 countries by total amount': an aggregate ranks by its measure, never by a raw column."""
        r = self.req
        if r.aggregated and r.order:
            ordered: list[tuple[ir.Col | str, bool]] = []
            for key, desc in r.order:
                if isinstance(key, ir.Col) and key not in [g.col for g in r.group if g.unit is None]:
                    m = next((x for x in r.measures if x.col == key), None) or (
                        r.measures[0] if len(r.measures) == 1 else None
                    )
                    ordered.append((m.alias, desc) if m else (key, desc))
                elif isinstance(key, ir.Col):
                    ordered.append((key.name, desc))
                else:
                    ordered.append((key, desc))
            r.order = ordered
        if r.rank is None or r.rank.partition:
            return
        keys: list[tuple[ir.Col | str, bool]] = []
        for key, desc in r.rank.by:
            if not isinstance(key, ir.Col):
                keys.append((key, desc))
                continue
            if r.group and key in [g.col for g in r.group if g.unit is None]:
                keys.append((key.name, desc))
                continue
            ref = ColumnRef(next(u.source for u in r.sources if u.alias == key.alias), key.name, 50)
            if not r.group:
                # "top 3 countries by amount": the ranked thing is a dimension; group by it
                dims = [c for c in self.columns_said() if not c.numeric and not c.temporal]
                if not dims or not ref.numeric:
                    keys.append((key, desc))
                    continue
                r.group.append(ir.GroupKey(self.col(dims[0])))
            measure = next((m for m in r.measures if m.col == key), None)
            if measure is None:
                measure = ir.Measure("sum", key, alias=f"total_{key.name}")
                self.add_measure(measure)
            keys.append((measure.alias, desc))
        r.rank.by = keys

    def columns_said(self) -> list[ColumnRef]:
        """Columns the ranking words named as the thing ranked ('countries', 'categories')."""
        return list(getattr(self, "ranked_dims", []))

    def join_said(self) -> bool:
        return bool(
            re.search(
                r"\b(join|joined|joining|joins|enrich|enriched|enriching|combined? with|matched with|"
                r"together with|"
                r"along with|lookup|look up|looked up|linked|link)\b",
                self.p.norm,
            )
        )

    def join_said_all(self) -> bool:
        return not re.search(
            r"\b(plus|with (?:the|their|its)?|adding|add|including|along with)\b", self.p.norm
        )

    def columns_used(self) -> list[ir.Col]:
        r = self.req
        out = columns_in([r.where, r.group, r.measures, r.select, r.extra, r.running, r.distinct_keys])
        if r.rank:
            out += columns_in(r.rank.partition)
        if hasattr(self, "rank_col") and self.rank_col is not None:
            out.append(self.rank_col)
        return out

    def unused(self) -> None:
        """Every content word is consumed or reported; one that names data is a question."""
        leftovers: list[str] = []
        dated = {
            c.col.name.lower()
            for c in walk(self.req.where)
            if isinstance(c, (ir.DateRange, ir.DatePart, ir.Recent))
        }
        measured = {m.col.name for m in self.req.measures if m.col is not None}
        measured |= {c.lower() for e in self.req.derived.values() for c in re.findall(r"[A-Za-z_]\w*", e)}
        for k, it in enumerate(self.items):
            if it.used:
                continue
            if it.kind == "col" and any(r.temporal and r.column.lower() in dated for r in it.ref):
                continue  # "a time of day before 12:00": the date column the condition is on
            if any(x.text == "(" for x in self.items[k + 1 : k + 8]) and (
                (it.kind == "col" and any(r.column.lower() in measured for r in it.ref))
                or (it.kind == "num" and self.req.derived)
            ):
                # "revenue (sum of amount)", "the amount including 21% VAT (amount times 1.21)": the
                # words that name what the brackets define
                continue
            if it.kind == "word" or it.kind == "punct" or it.kind == "op":
                w = it.text
                if it.kind != "word" or w in FILLERS or w in STRUCTURE_WORDS or len(w) < 2:
                    continue
                if "_" in w or re.search(r"\d", w):
                    raise PlannerQuestion(
                        f"I did not understand '{w}' in the request: it looks like a name, but no table, "
                        "file or column is called that",
                        candidates=self.near_columns(w),
                    )
                leftovers.append(w)
                continue
            if it.kind == "src":
                stems = {singular(u.source.stem.lower()) for u in self.req.sources}
                if it.ref in [u.source for u in self.req.sources] or singular(it.ref.stem.lower()) in stems:
                    continue  # "orders" when orders.csv is read
                key = self.entity_key(it.ref)
                if (
                    (self.req.measures or self.req.rank)
                    and not self.req.group
                    and key
                    and not (self.req.rank and any(c.name == key[0].column for c in self.req.rank.partition))
                ):
                    # "customers and their total spend": one total over all rows would be a guess
                    raise PlannerQuestion(
                        f"Should the result be per {it.text} ({key[0].column})? What I read is over all rows "
                        f"together, and does not use '{it.text}'",
                        hint=f"say 'per {singular(it.text)}' or leave '{it.text}' out",
                        candidates=[f"per {key[0].column}"],
                    )
                leftovers.append(it.text)
                continue
            what = {
                "col": "a column",
                "val": "a value",
                "num": "a number",
                "date": "a date",
                "quoted": "a value",
            }
            raise PlannerQuestion(
                f"I did not use '{' '.join(t.raw for t in it.tokens)}' ({what.get(it.kind, 'a word')}) "
                "and won't guess what it is for",
                hint="rephrase so that it is a filter ('where amount > 100'), a grouping ('per country') "
                "or a column to keep ('only the name and email columns')",
            )
        self.req.unused = list(dict.fromkeys(leftovers))
        vital = [
            w
            for w in self.req.unused
            if w in VITAL_WORDS
            and not self.reading_has(VITAL_WORDS[w])
            and (VITAL_WORDS[w] != "compare" or re.search(rf"\b{w} than\b|\bor {w}\b", self.p.norm))
        ]
        vague = [w for w in vital if VITAL_WORDS[w] == "vague"]
        if vague:
            raise PlannerQuestion(
                f"What should {', '.join(repr(w) for w in vague)} mean here? It names no change I can make "
                "to the data",
                hint="say the change: which rows to keep, which columns, a grouping, a fill value, a sort",
            )
        if vital:
            # "customers with more than one order" read as a count of all rows: a quantity word
            # left over means a measure, comparison or ranking was not understood
            raise PlannerQuestion(
                f"I did not understand what {', '.join(repr(w) for w in vital)} applies to, and won't guess",
                hint="say it with the column it is about, e.g. 'more than 2 orders per customer' or "
                "'total amount per country'",
            )
        self.unread_clauses()
        for k, it in enumerate(self.items[:-1]):
            nxt = self.items[k + 1]
            if (
                not it.used
                and it.kind == "word"
                and it.text not in FILLERS
                and it.text not in STRUCTURE_WORDS
                and it.text not in KNOWN_WORDS
                and nxt.kind == "src"
                and not self.req.where
                and not self.req.rank
            ):
                raise PlannerQuestion(
                    f"Which {nxt.text} are '{it.text}' {nxt.text}? No column or value of "
                    f"{nxt.ref.name} says '{it.text}'",
                    hint="say it as a condition on a column, e.g. 'where amount > 100'",
                    candidates=self.near_values(it.text),
                )
        proper = [
            t.raw
            for it in self.items
            if not it.used and it.kind == "word"
            for t in it.tokens
            if t.index > 0
            and t.raw[:1].isupper()
            and t.norm not in FILLERS
            and t.norm not in STRUCTURE_WORDS
            and t.raw.lower() not in ("i",)
        ]
        if proper:
            raise PlannerQuestion(
                f"I don't know what {', '.join(repr(w) for w in proper)} refers to: no file, table, column "
                f"or "
                "value of the data is called that",
                hint="use a value as the data spells it, or name the column",
            )
        # a word in the slot of a column that names none: "whose loyalty tier is gold",
        # "where the channel is web", "average discount" -- a question, however English the word
        slot = re.search(
            r"\b(?:whose|where|with|if|when|and) (?:the |a |an |its |their )?((?:[a-z][a-z_]* "
            r"){0,2}[a-z][a-z_]*) "
            r"(?:is|are|was|were|=|equals|of) (?:not )?([a-z][\w-]*|Q\d+|N\d+)\b"
            r"|\b(?:average|avg|mean|median|sum|total|maximum|minimum|max|min) (?:of )?(?:the |their |its "
            r")?([a-z][a-z_]*)\b",
            self.sym,
        )
        if slot:
            from .parse import FUNCTION_WORDS

            words = (slot.group(1) or slot.group(3) or "").split()
            unknown = [
                w
                for w in words
                if w not in FILLERS
                and w not in STRUCTURE_WORDS
                and w not in KNOWN_WORDS
                and w not in FUNCTION_WORDS
                and not self.p.entity_source(w)
            ]
            if unknown and words and words[-1] in unknown:
                raise PlannerQuestion(
                    f"No column called '{' '.join(words)}' in "
                    f"{', '.join(u.source.name for u in self.req.sources)}",
                    hint="name one of the columns: " + ", ".join(self.main.source.column_names[:12]),
                    candidates=self.near_columns(words[-1]),
                )
        strange = [
            w
            for w in self.req.unused
            if not is_english(w) and w not in AFTER_NUMBER and zipf_frequency(w) < COMMON_ZIPF
        ]
        if strange:
            # plain English words the reading did not need are listed; words no dictionary knows
            # ("frobnicate the zorbs") may name something, so they are a question
            raise PlannerQuestion(
                f"I did not understand part of the request: {', '.join(repr(w) for w in strange)}",
                hint="rephrase that part, or leave it out",
                candidates=[f"without '{' '.join(strange)}'"],
            )

    def grouped(self) -> bool:
        """Whether the request groups: 'per country', 'by customer', 'per day', 'monthly'."""
        return bool(
            re.search(
                GROUP_INTRO
                + r" (?:the )?(?:C\d+|S\d+|day|days|week|weeks|month|months|year|years|hour|hours|"
                r"quarter|quarters|weekday|date)\b|\b(?:daily|weekly|monthly|yearly|hourly|quarterly)\b",
                self.sym,
            )
        )

    def unread_clauses(self) -> None:
        """'customers who opted in to the newsletter', 'accounts that were closed before 2023': a
        clause that says which rows, with a word the reading did not use, is a condition not
        understood; a question, whatever else was read."""
        from .parse import FUNCTION_WORDS

        def content(it: Item) -> bool:
            return (
                it.kind == "word"
                and not it.used
                and it.text not in FILLERS
                and it.text not in STRUCTURE_WORDS
                and it.text not in FUNCTION_WORDS
                and it.text not in KNOWN_WORDS
                and len(it.text) > 2
            )

        items = self.items
        for k, rel in enumerate(items):
            if rel.kind != "word" or rel.text not in ("who", "that", "which", "whose", "with", "having"):
                continue
            j = k - 1
            while j >= 0 and items[j].kind == "word" and items[j].text in ("from", "in", "of"):
                j -= 1  # "customers from customers.csv who ...": the file is no item of its own
            if j < 0 or not (
                items[j].kind in ("src", "col")
                or (
                    items[j].kind == "word"
                    and items[j].text in ("those", "ones", "people", "anyone", "everyone")
                )
            ):
                continue  # "customers who ...", "among those who came back"
            it = items[j]
            clause = items[k + 1 : k + 6]
            stop = next(
                (
                    n
                    for n, x in enumerate(clause)
                    if x.kind == "punct" or (x.kind == "word" and x.text in ("and", "or", "but", "then"))
                ),
                len(clause),
            )
            words = [x.text for x in clause[:stop] if content(x) and x.text not in ("either", "both")]
            if words and not any(x.used and x.kind != "word" for x in clause[:stop]):
                # nothing of the clause was read: "who opted in to the newsletter"
                said = " ".join(t.raw for x in [rel, *clause[:stop]] for t in x.tokens)
                raise PlannerQuestion(
                    f"Which {it.text} do you mean? I did not understand '{' '.join(words)}' in '{said}'",
                    hint="say it as a condition on a column of the data, e.g. 'whose status is shipped'",
                    candidates=[c for w in words for c in self.near_columns(w)][:5],
                )
        # "closed before 2023" on a table whose only date is 'opened': the verb names another date
        for k, it in enumerate(items[:-2]):
            if not content(it) or not re.fullmatch(r"[a-z]+(?:ed|en)", it.text):
                continue
            nxt = items[k + 1 : k + 3]
            if not (
                nxt[0].kind == "date"
                or (nxt[0].text in DATE_PREPOSITIONS and len(nxt) > 1 and nxt[1].kind == "date")
            ):
                continue
            if it.text in EVENT_VERBS:
                continue
            dates = [c.name for c in columns_in(self.req.where) if self.types_of(c).temporal]
            if any(english_prefix(it.text, name) for name in dates):
                continue
            when = " ".join(t.raw for x in nxt for t in x.tokens)
            raise PlannerQuestion(
                f"'{it.text} {when}': no date column of "
                f"{', '.join(u.source.name for u in self.req.sources)} says '{it.text}'"
                + (f" (the date I would use is {', '.join(dates)})" if dates else ""),
                hint="name the date column, e.g. 'where opened before 2023-01-01'",
            )

    def types_of(self, c: ir.Col) -> ColumnRef:
        use = next((u for u in self.req.sources if u.alias == c.alias), self.main)
        return ColumnRef(use.source, c.name, 100)

    def reading_has(self, kind: str) -> bool:
        """Whether the reading holds a part of this kind (see VITAL_WORDS)."""
        r = self.req
        if kind == "measure":
            return bool(r.measures or r.running or r.derived)
        if kind == "count":
            return any(m.func == "count" for m in r.measures) or bool(r.running)
        if kind == "compare":
            return bool(r.having) or any(
                isinstance(c, ir.Compare) and c.op in (">", ">=", "<", "<=") for c in walk(r.where)
            )
        if kind == "rank":
            return bool(r.rank or r.order or r.derived)
        if kind == "share":
            return any(m.share for m in r.measures)
        if kind == "running":
            return bool(r.running)
        if kind == "missing":
            return (
                bool(r.fills)
                or any(isinstance(c, ir.IsNull) for c in walk(r.where))
                or any(
                    m.where is not None and any(isinstance(c, ir.IsNull) for c in walk([m.where]))
                    for m in r.measures
                )
            )
        if kind.startswith("func:"):  # "average": an average somewhere in the reading, not any measure
            func = kind.split(":")[1]
            return (
                any(m.func == func for m in r.measures)
                or any(isinstance(c, ir.VersusAggregate) for c in walk(r.where))
                or any(f"{func}(" in e for e in r.derived.values())
                or (r.running is not None and r.running.measure.func == func)
            )
        if kind == "many":  # as many counts read as "how many <thing>" asked ("how many percent" is none)
            asked = len(re.findall(r"\bhow many (?!percent|per cent)[a-z]", self.p.norm))
            return sum(1 for m in r.measures if m.func == "count") >= asked
        if kind in ("vague", "unread"):
            return False  # no reading says what 'better' is, nor 'followed by a purchase
        if kind == "fill":
            return bool(r.fills or r.derived)
        if kind == "arithmetic":
            return bool(r.derived) or any(m.func in ("range", "days") or m.share for m in r.measures)
        if kind == "distinct":
            return bool(r.distinct or r.distinct_keys or any(m.distinct for m in r.measures)) or bool(
                r.group and not any(m.func == "count" for m in r.measures)
            )
        return bool(r.exclude) or any(
            isinstance(c, ir.Not)
            or (isinstance(c, ir.Compare) and c.op in ("<>", "not_in"))
            or (isinstance(c, ir.Exists) and c.negated)
            or isinstance(c, ir.IsNull)
            for c in walk(r.where)
        )

    def in_output(self, it: Item) -> bool:
        """A column (or an entity's key) that the result already holds as a group, measure or choice."""
        refs: list[ColumnRef] = list(it.ref) if it.kind == "col" else list(it.alts) + self.entity_key(it.ref)
        names = {r.column.lower() for r in refs}
        out = {g.col.name.lower() for g in self.req.group} | {c.name.lower() for c in self.req.select}
        out |= {m.col.name.lower() for m in self.req.measures if m.col} | {
            c.name.lower() for c in self.req.extra
        }
        out |= {g.name.lower() for g in self.req.group}
        if self.req.rank:
            out |= {k.name.lower() for k, _ in self.req.rank.by if isinstance(k, ir.Col)}
            out |= {c.name.lower() for c in self.req.rank.partition}
        if not self.req.aggregated and not self.req.select:
            out |= {c.lower() for c in self.main.source.column_names}
        return bool(names & out)

    def derived_name(self) -> str:
        base = self.main.alias
        parts = [base]
        if self.req.measures and self.req.group:
            parts = [base, "by"] + [g.name for g in self.req.group]
        elif self.req.rank:
            parts = ["top", str(self.req.rank.n), base]
        name = re.sub(r"\W+", "_", "_".join(parts)).strip("_")[:60]
        existing = {
            (s.table or "").lower() for s in self.ctx.tables() if s.connection == self.ctx.target_connection
        }
        sources = {u.alias for u in self.req.sources}
        if name in existing or name in sources or name == base:
            name = f"{name}_result"
        n = 2
        cand = name
        while cand in existing:
            cand, n = f"{name}_{n}", n + 1
        return cand


def walk(conds: list[ir.Cond]) -> list[ir.Cond]:
    """Every condition of a list, nested ones under And, Or and Not included."""
    out: list[ir.Cond] = []
    for c in conds:
        out.append(c)
        if isinstance(c, (ir.And, ir.Or)):
            out += walk(c.items)
        elif isinstance(c, ir.Not):
            out += walk([c.cond])
    return out


def exclusive(a: ir.Cond, b: ir.Cond) -> bool:
    """Two conditions on one column that no row meets together: two values, or two date ranges apart."""
    if isinstance(a, ir.Compare) and isinstance(b, ir.Compare) and a.col == b.col:
        ranges = [c for c in (a, b) if c.op in ("<", "<=", ">", ">=") and isinstance(c.value, (int, float))]
        if len(ranges) == 2:  # "under 20 and over 100": no number is both
            lows = [c for c in ranges if c.op.startswith(">")]
            highs = [c for c in ranges if c.op.startswith("<")]
            if len(lows) == 1 and len(highs) == 1:
                lo, hi = lows[0], highs[0]
                return bool(lo.value > hi.value or (lo.value == hi.value and (lo.op == ">" or hi.op == "<")))
            return False
        sets = []
        for c in (a, b):
            if c.op == "=":
                sets.append({c.value})
            elif c.op == "in":
                sets.append(set(c.value))
            else:
                return False
        return not sets[0] & sets[1]
    if isinstance(a, ir.DateRange) and isinstance(b, ir.DateRange) and a.col == b.col:
        bounds = (a.lo, a.hi, b.lo, b.hi)
        if not all(isinstance(x, date) for x in bounds):
            return False
        return bool(a.hi <= b.lo or b.hi <= a.lo)
    return False


def cond_label(c: ir.Cond) -> str:
    """A short name for a condition, for the column it makes: 'shipped', '2024'."""
    if isinstance(c, ir.Compare):
        values = c.value if isinstance(c.value, list) else [c.value]
        text = "_".join(str(v) for v in values)
    elif isinstance(c, ir.DateRange):
        text = c.words or f"{c.lo}_{c.hi}"
    else:
        text = "match"
    return re.sub(r"\W+", "_", text.lower()).strip("_")[:30]


def measure_alias(func: str, column: str) -> str:
    """The output name of an aggregate of a column: total_amount, avg_price, median_price."""
    return f"{'total' if func == 'sum' else func}_{column}"


def columns_in(value: Any) -> list[ir.Col]:
    """Every column a part of the intermediate form refers to (not inside EXISTS: another source's)."""
    if isinstance(value, ir.Col):
        return [value]
    if isinstance(value, ir.Exists):
        return []
    if hasattr(value, "__dataclass_fields__"):
        return [c for f in value.__dataclass_fields__ for c in columns_in(getattr(value, f))]
    if isinstance(value, list | tuple):
        return [c for x in value for c in columns_in(x)]
    return []


_ENGLISH: dict[str, set[str]] = {}


def zipf_frequency(word: str) -> float:
    """How common a word is in English text (Zipf scale); wordfreq is imported on first use."""
    from wordfreq import zipf_frequency as zipf

    return float(zipf(word, "en"))


def is_english(word: str, *, broad: bool = True) -> bool:
    """A dictionary word, or an inflection of one ('changes', 'catalogued', 'purchases').

    `broad` adds Webster's 1934 list, which knows 'seasonality' and 'weekday' but also archaic
    words that are everyday typos ('frist'): a typo check asks with broad=False.
    """
    w = word.lower().replace("'", "")
    if not w.isalpha():
        return False
    stems = {w, singular(w)}
    for suffix, repl in (
        ("ies", "y"),
        ("es", ""),
        ("s", ""),
        ("ed", ""),
        ("ed", "e"),
        ("d", ""),
        ("ing", ""),
        ("ing", "e"),
        ("ly", ""),
        ("er", ""),
        ("est", ""),
        ("led", "l"),
    ):
        if w.endswith(suffix):
            stems.add(w[: -len(suffix)] + repl)
    if w in FILLERS:
        return True
    # the second list costs a second to load: only for a word the first one does not know
    lists = ("gcide", "web2") if broad else ("gcide",)
    return any(any(len(s) >= 3 and s in english_words(name) for s in stems) for name in lists)


def english_words(name: str) -> set[str]:
    """One word list of the english-words package, loaded on first use."""
    if name not in _ENGLISH:
        from english_words import get_english_words_set

        _ENGLISH[name] = get_english_words_set([name], lower=True, alpha=True)
    return _ENGLISH[name]


# Words that only shape a sentence; an unconsumed one is not worth reporting.
STRUCTURE_WORDS = {
    "up",  # "so all rows end up in orders_all"
    "if",  # "I'd be grateful if you could ..."
    "grateful",
    "join",
    "joined",
    "joining",
    "combine",
    "combined",
    "enrich",
    "enriched",
    "filter",
    "filtered",
    "filtering",
    "keeping",
    "keep",
    "kept",
    "rows",
    "lines",
    "entries",
    "where",
    "whose",
    "which",
    "that",
    "with",
    "and",
    "or",
    "only",
    "than",
    "having",
    "those",
    "ones",
    "status",
    "been",
    "being",
    "everything",
    "also",
    "them",
    "they",
    "there",
    "one",
    "first",
}
# Words the rules read in context; never a sign of an unknown column or value.
KNOWN_WORDS = (
    set(AGGREGATES)
    | set(RANKING)
    | set(UNITS)
    | PRICE_WORDS
    | {
        "and",
        "or",
        "not",
        "first",
        "last",
        "desc",
        "asc",
        "descending",
        "ascending",
        "total",
        "count",
        "number",
        "sum",
        "average",
        "only",
        "all",
        "every",
        "each",
        "any",
        "some",
        "their",
        "rows",
        "more",
        "less",
        "fewer",
        "most",
        "least",
        "than",
        "over",
        "under",
        "per",
        "expensive",
        "cheap",
        "recent",
        "new",
        "old",
        "unique",
        "distinct",
        "duplicate",
        "duplicates",
    }
)
# A word this common in English text (Zipf scale: 3 is once per million words) is a word, not a
# name, even when the dictionaries lack it ('pricey', 'shoppers'): listed as unused, not asked about.
COMMON_ZIPF = 3.0
# Words after a number that say what the number is without naming a column: units of money
# ("under 20 euros" compares the amount itself), "3 times", "20 each", "500 in total".
AFTER_NUMBER = {"dollars", "dollar", "euros", "euro", "eur", "usd", "gbp", "pounds", "pound", "bucks", "quid"}
AFTER_NUMBER |= {"cents", "times", "each", "apiece", "total", "overall"}
# Words that carry a measure, a comparison, a ranking or a negation, and the part of a reading
# that accounts for each: left over while the reading has no such part, they mean a misreading
# ("customers with more than one order" read as a count of all rows), so the planner asks.
# Said again beside a reading that has it ("... with that total"), they are harmless.
# Verbs of any dated event ("placed in 2025", "created after May"): they name no date column of
# their own; another participle before a date ("closed before 2023") must match the column read.
EVENT_VERBS = {
    "placed",
    "made",
    "created",
    "dated",
    "recorded",
    "logged",
    "happened",
    "occurred",
    "ordered",
    "bought",
    "purchased",
    "sold",
    "registered",
    "joined",
    "submitted",
    "received",
    "taken",
    "entered",
    "added",
    "posted",
    "done",
    "seen",
    "started",
    "begun",
}
DATE_PREPOSITIONS = {
    "before",
    "after",
    "since",
    "during",
    "in",
    "on",
    "until",
    "till",
    "by",
    "from",
    "between",
}


def english_prefix(word: str, column: str) -> bool:
    """'opened' and 'opened', 'signed' and 'signup_date': the word and the column share a stem."""
    w = re.sub(r"(?:ed|en|d)$", "", word.lower())
    return any(part[:4] == w[:4] for part in re.split(r"[_\W]+", column.lower()) if len(part) >= 4)


VITAL_WORDS: dict[str, str] = {
    **{
        w: "measure"
        for w in AGGREGATES
        if w not in ("first", "last", "latest", "newest", "earliest", "oldest")
    },
    **dict.fromkeys(("average", "averages", "averaged", "avg", "mean"), "func:avg"),
    **dict.fromkeys(("median", "medians"), "func:median"),
    **dict.fromkeys(("count", "counts", "number", "tally"), "count"),
    **dict.fromkeys(("more", "less", "fewer", "greater"), "compare"),
    **dict.fromkeys(
        ("most", "least", "top", "bottom", "rank", "ranked", "ranking", "busiest", "quietest"), "rank"
    ),
    **dict.fromkeys(("percent", "percentage", "ratio", "share", "proportion", "fraction"), "share"),
    **dict.fromkeys(("running", "cumulative"), "running"),
    **dict.fromkeys(
        (
            "not",
            "never",
            "no",
            "excluding",
            "except",
            "exclude",
            "minus",
            "isn't",
            "aren't",
            "wasn't",
            "weren't",
        ),
        "negation",
    ),
    **dict.fromkeys(("don't", "doesn't", "didn't", "hasn't", "haven't", "hadn't"), "negation"),
    **dict.fromkeys(("missing", "empty", "blank", "null", "nulls"), "missing"),
    **dict.fromkeys(("distinct", "unique"), "distinct"),
    **dict.fromkeys(("difference", "gap", "spread", "minus"), "arithmetic"),
    "many": "many",  # "how many" left over: a second measure asked for and not read
    **dict.fromkeys(("followed", "preceded", "subsequently", "afterwards", "later"), "unread"),
    # "the second most expensive order": an offset in a ranking, which no rule reads
    **dict.fromkeys(("second", "third", "fourth", "fifth", "2nd", "3rd", "4th", "5th"), "unread"),
    **dict.fromkeys(("week", "weeks", "fortnight"), "unread"),  # "the first week of March": not read
    # a ranking word left over: "the cheapest and the most expensive product" read as one ranking
    **dict.fromkeys(("cheapest", "priciest", "dearest", "expensive"), "unread"),
    # a change asked for with no operation that says what it is: 'make the orders better'
    **dict.fromkeys(
        (
            "better",
            "improve",
            "improved",
            "improving",
            "nicer",
            "cleaner",
            "tidier",
            "tidy",
            "neater",
            "prettier",
            "optimise",
            "optimised",
            "optimize",
            "optimized",
            "enhance",
            "enhanced",
            "polish",
            "polished",
            "fix",
            "fixed",
            "meaningful",
            "useful",
            "interesting",
        ),
        "vague",
    ),
    **dict.fromkeys(("fill", "filled", "impute", "imputed", "substitute", "coalesce"), "fill"),
}
# Ranking words read by the rank rule, never linked to a column by synonym.
RANKING_ONLY: set[str] = set(RANKING) | PRICE_WORDS | {"recent", "newest", "oldest", "earliest", "latest"}
