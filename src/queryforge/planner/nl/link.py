"""Tie the words of a request to the catalog: sources, columns (by name, part, synonym) and values.

Values come from the local index of low-cardinality text columns (`Source.domains`), matched
exactly, by country name or code, or by spelling distance (canceled → cancelled). Nothing here
leaves the machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz import fuzz, process

from ..context import Source
from .tokens import singular

NUMERIC_TYPES = ("INT", "DOUBLE", "DECIMAL", "FLOAT", "REAL", "NUMERIC", "HUGEINT")
TEMPORAL_TYPES = ("DATE", "TIME")
KEYISH = re.compile(r"(?:^|_)(?:id|key|code|no|nr|number)$")

# Generic analytics words → the column-name parts they usually refer to.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "revenue": ("amount", "revenue", "total", "sales", "value"),
    "sales": ("amount", "sales", "revenue", "total"),
    "turnover": ("amount", "revenue", "sales"),
    "spend": ("amount", "spend", "total"),
    "spent": ("amount", "spend", "total"),
    "spending": ("amount", "spend", "total"),
    "paid": ("amount", "paid", "total"),
    "money": ("amount", "total", "revenue"),
    "value": ("amount", "value", "total"),
    "worth": ("amount", "value", "price", "balance"),
    "cost": ("price", "cost", "amount"),
    "costs": ("price", "cost", "amount"),
    "priced": ("price",),
    "prices": ("price",),
    "expensive": ("price", "amount"),
    "cheap": ("price", "amount"),
    "cheapest": ("price", "amount"),
    "cheaper": ("price", "amount"),
    "priciest": ("price", "amount"),
    "size": ("amount", "quantity", "size"),
    "when": ("date", "ts", "time", "timestamp", "at"),
    "time": ("ts", "time", "timestamp", "date"),
    "timestamp": ("ts", "timestamp", "time"),
    "placed": ("order_date", "date", "placed"),
    "ordered": ("order_date", "date"),
    "signed": ("signup", "signup_date"),
    "signup": ("signup", "signup_date"),
    "signups": ("signup", "signup_date"),
    "registered": ("signup", "registered", "signup_date"),
    "registration": ("signup", "registered", "signup_date"),
    "mail": ("email",),
    "address": ("email", "address"),
    "type": ("type", "kind", "category"),
    "kind": ("type", "kind", "category"),
    "category": ("category", "type"),
    "categories": ("category",),
    "nation": ("country",),
    "state": ("status", "state"),
    "owner": ("owner", "name"),
    "holder": ("owner", "name"),
    "page": ("page", "url", "path"),
    "url": ("page", "url"),
    "opening": ("opened",),
}


@dataclass(frozen=True)
class ColumnRef:
    source: Source
    column: str
    score: int  # 100 exact … 60 fuzzy

    @property
    def type(self) -> str:
        return self.source.type_of(self.column)

    @property
    def numeric(self) -> bool:
        return any(k in self.type for k in NUMERIC_TYPES)

    @property
    def temporal(self) -> bool:
        return any(k in self.type for k in TEMPORAL_TYPES)

    @property
    def keyish(self) -> bool:
        return bool(KEYISH.search(self.column.lower()))


@dataclass(frozen=True)
class ValueRef:
    source: Source
    column: str
    value: str  # as the data spells it
    score: int


def is_numeric_type(t: str) -> bool:
    return any(k in t.upper() for k in NUMERIC_TYPES)


def is_temporal_type(t: str) -> bool:
    return any(k in t.upper() for k in TEMPORAL_TYPES)


@lru_cache(maxsize=1)
def _countries() -> dict[str, tuple[str, str]]:
    """Country names (common, official, demonym-free) → (alpha-2, alpha-3), lower case."""
    import pycountry  # imported lazily: only value linking of country codes needs it

    out: dict[str, tuple[str, str]] = {}
    for c in pycountry.countries:
        for name in (c.name, getattr(c, "common_name", None), getattr(c, "official_name", None)):
            if name:
                out.setdefault(name.lower(), (c.alpha_2, c.alpha_3))
    extra = {
        "usa": "US",
        "america": "US",
        "united states of america": "US",
        "the us": "US",
        "uk": "GB",
        "britain": "GB",
        "great britain": "GB",
        "england": "GB",
        "holland": "NL",
        "the netherlands": "NL",
        "german": "DE",
        "germans": "DE",
        "french": "FR",
        "spanish": "ES",
        "italian": "IT",
        "dutch": "NL",
        "polish": "PL",
        "british": "GB",
        "american": "US",
        "americans": "US",
        "swiss": "CH",
        "austrian": "AT",
        "belgian": "BE",
        "danish": "DK",
        "swedish": "SE",
        "norwegian": "NO",
        "finnish": "FI",
        "irish": "IE",
        "portuguese": "PT",
        "greek": "GR",
        "czech": "CZ",
        "japanese": "JP",
        "chinese": "CN",
        "indian": "IN",
        "canadian": "CA",
        "mexican": "MX",
        "brazilian": "BR",
        "australian": "AU",
    }
    for name, a2 in extra.items():
        import pycountry as pc

        hit = pc.countries.get(alpha_2=a2)
        if hit is not None:
            out.setdefault(name, (a2, hit.alpha_3))
    return out


class Vocabulary:
    """Column and value lookups over a set of sources (the ones a request reads, or all of them)."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    # ------------------------------------------------------------ columns
    def columns(self, phrase: str, *, sources: list[Source] | None = None) -> list[ColumnRef]:
        """Every column a phrase may name, best first (several when ambiguous)."""
        p = phrase.strip().lower().strip("'\"`")
        if not p:
            return []
        words = p.replace("_", " ").split()
        joined = "_".join(words)
        variants = {joined, "_".join(singular(w) for w in words), p}
        if joined.endswith("s"):
            variants.add(joined[:-1])  # "product_ids", "ids"
        hits: dict[tuple[int, str], ColumnRef] = {}

        def put(ref: ColumnRef) -> None:
            key = (id(ref.source), ref.column)
            if key not in hits or hits[key].score < ref.score:
                hits[key] = ref

        for s in sources if sources is not None else self.sources:
            for c in s.column_names:
                cl = c.lower()
                parts = cl.split("_")
                if cl in variants or cl.replace("_", "") == joined.replace("_", ""):
                    put(ColumnRef(s, c, 100))
                elif len(words) == 1 and words[0] in SYNONYMS and cl in SYNONYMS[words[0]]:
                    put(ColumnRef(s, c, 85))
                elif len(words) == 1 and singular(words[0]) + "_id" == cl:
                    put(ColumnRef(s, c, 80))
                elif len(words) == 1 and (words[0] in parts or singular(words[0]) in parts):
                    put(ColumnRef(s, c, 70 if not KEYISH.search(cl) else 65))
                elif len(words) == 1 and words[0] in SYNONYMS and set(SYNONYMS[words[0]]) & set(parts):
                    put(ColumnRef(s, c, 68))
                elif len(joined) >= 5 and fuzz.ratio(joined, cl) >= 88:
                    put(ColumnRef(s, c, 60))
        return sorted(hits.values(), key=lambda r: -r.score)

    def best_column(self, phrase: str, *, sources: list[Source] | None = None) -> ColumnRef | None:
        """The column a phrase names when one candidate stands out; None when none or a tie."""
        refs = self.columns(phrase, sources=sources)
        if not refs:
            return None
        top = [r for r in refs if r.score == refs[0].score]
        names = {r.column.lower() for r in top}
        return top[0] if len(names) == 1 else None

    # ------------------------------------------------------------ values
    def values(self, phrase: str, *, sources: list[Source] | None = None) -> list[ValueRef]:
        """Domain values a phrase names: exact, country names for code columns, close spellings."""
        p = phrase.strip().lower()
        if not p or (len(p) < 2 and p.isalnum()):
            return []  # one letter is no value; one sign may be ('/', the root page)
        out: list[ValueRef] = []
        for s in sources if sources is not None else self.sources:
            for column, domain in s.domains.items():
                lower = {v.lower(): v for v in domain}
                if p in lower:
                    out.append(ValueRef(s, column, lower[p], 100))
                    continue
                if p in ROOT_PAGE and "/" in lower:  # "the home page" of a column of URL paths
                    out.append(ValueRef(s, column, lower["/"], 90))
                    continue
                if p.rstrip("s") in lower and len(p) > 3:  # "pendings", plural of a status
                    out.append(ValueRef(s, column, lower[p.rstrip("s")], 90))
                    continue
                if p + "s" in lower and len(p) >= 3:  # "toy" for 'toys': the singular of a plural value
                    out.append(ValueRef(s, column, lower[p + "s"], 90))
                    continue
                stems = {_stem(v): orig for v, orig in lower.items() if " " not in v}
                if " " not in p and len(p) >= 5 and _stem(p) in stems and len(_stem(p)) >= 4:
                    # another form of the same word: "cancellation" for 'cancelled', "shipment" for 'shipped'
                    out.append(ValueRef(s, column, stems[_stem(p)], 88))
                    continue
                if _code_column(domain):
                    hit = _countries().get(p)
                    if hit is not None:
                        for code in hit:
                            if code.lower() in lower:
                                out.append(ValueRef(s, column, lower[code.lower()], 95))
                                break
                        continue
                bare = {re.sub(r"[^a-z0-9]+", "", v): orig for v, orig in lower.items()}
                phrasal = re.fullmatch(
                    r"([a-z]+?)(?:ing|ed|s)? (up|in|out|on|off)", p
                )  # "signing up": sign up
                if phrasal and phrasal.group(1) + phrasal.group(2) in bare and len(p) >= 5:
                    out.append(ValueRef(s, column, bare[phrasal.group(1) + phrasal.group(2)], 80))
                    continue
                if re.sub(r"[^a-z0-9]+", "", p) in bare and len(p) >= 3:
                    # "help" for '/help': the value without its punctuation; weaker than the spelling
                    out.append(ValueRef(s, column, bare[re.sub(r"[^a-z0-9]+", "", p)], 80))
                    continue
                if len(p) >= 5 and not _code_column(domain):
                    match = process.extractOne(p, list(lower), scorer=fuzz.ratio, score_cutoff=84)
                    if match:
                        out.append(ValueRef(s, column, lower[match[0]], int(match[1]) - 10))
        return sorted(out, key=lambda r: -r.score)


def _stem(word: str) -> str:
    """A crude stem of one word: cancellation, cancelled, cancels → cancel; shipment, shipped → ship."""
    w = re.sub(r"[^a-z]", "", word.lower())
    for suffix in ("ations", "ation", "ments", "ment", "ies", "ed", "es", "s", "e"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 4:
            w = w[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    if len(w) >= 5 and w[-1] == w[-2] and w[-1] not in "aeiou":
        w = w[:-1]  # cancell → cancel, shipp → ship
    return w


ROOT_PAGE = {"home", "homepage", "home page", "root", "root page", "landing page", "front page", "index"}


def _code_column(domain: tuple[str, ...]) -> bool:
    """A column of short upper-case codes (country, currency): names map to codes, no fuzzy match."""
    return bool(domain) and all(re.fullmatch(r"[A-Z]{2,3}", v) for v in domain)
