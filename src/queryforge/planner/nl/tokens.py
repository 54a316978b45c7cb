"""Split a request into tokens that remember where they came from, with normalised spellings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .lexicon import NUMBER_WORDS, SPELLING

FILE = r"(?:[\w.-]+/)*[\w-][\w.-]*\.(?:csv|tsv|ndjson|jsonl|json|parquet|sqlite3?|db|duckdb|txt)(?:\.gz)?\b"
TOKEN = re.compile(
    rf"""
    (?P<quoted>'[^']*'|"[^"]*"|`[^`]*`|“[^”]*”|‘[^’]*’)
  | (?P<file>(?<![\w/]){FILE})
  | (?P<date>\d{{4}}-\d{{1,2}}-\d{{1,2}}(?:[ T]\d{{1,2}}:\d\d(?::\d\d)?)?)
  | (?P<slashdate>\d{{1,2}}/\d{{1,2}}/\d{{4}})
  | (?P<clock>\d{{1,2}}(?::\d\d)?\s?(?:am|pm)\b|\d{{1,2}}:\d\d\b)
  | (?P<number>[$€£]?(?:(?<![\w)])-)?\d+(?:[.,]\d+)*(?:\s?%|k\b|m\b)?)
  | (?P<op>>=|<=|!=|<>|==|=|>|<|≥|≤)
  | (?P<path>(?<![\w])/[\w][\w/.-]*)
  | (?P<word>[A-Za-z_][\w]*(?:['’][a-z]+)?(?:-[A-Za-z_][\w]*)*)
  | (?P<punct>[,;:()?!&+*/.@-])
    """,
    re.X | re.I,
)


@dataclass
class Token:
    raw: str  # as written
    norm: str  # lower case, one spelling
    kind: str  # quoted | file | date | slashdate | clock | number | op | path | word | punct
    start: int
    end: int
    index: int = 0
    tags: dict[str, object] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The number a number token (or number word) stands for."""
        if self.kind == "number":
            text = self.norm.lstrip("$€£").replace(" ", "")
            scale = 1.0
            if text.endswith("%"):
                text = text[:-1]
            elif text.endswith("k"):
                text, scale = text[:-1], 1000.0
            elif text.endswith("m"):
                text, scale = text[:-1], 1_000_000.0
            if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
                text = text.replace(",", "")
            text = text.replace(",", ".")
            try:
                return float(text) * scale
            except ValueError:
                return None
        if self.kind == "word" and self.norm in NUMBER_WORDS:
            return float(NUMBER_WORDS[self.norm])
        return None


# Fixed phrases read as the words the rules know: "per cent" is "percent", "A to Z" ascending,
# "multiple orders" more than 1 order.
PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("per", "cent"), "percent"),
    # quantities said in words, as the comparison rules read them
    (("more", "than", "one"), "more than 1"),
    (("more", "than", "once"), "more than 1 times"),
    (("at", "least", "twice"), "at least 2 times"),
    (("twice", "or", "more"), "2 or more times"),
    (("called", "off"), "cancelled"),  # "orders that were called off" names no table 'off'
    (("call", "off"), "cancel"),
    (("partitioned", "by"), "per"),  # window words as SQL says them
    (("partition", "by"), "per"),
    (("multiple",), "more than 1"),
    (("several",), "more than 1"),
    (("a", "to", "z"), "ascending"),
    (("z", "to", "a"), "descending"),
    (("a", "z"), "ascending"),  # "A-Z"
    (("z", "a"), "descending"),
)


# SQL aggregate calls as analysts type them in terse requests ('amount > avg(amount)'), read as the
# words the rules know; a call whose argument is not one plain name is left as it is.
CALLS = {
    "avg": "average",
    "average": "average",
    "mean": "average",
    "sum": "total",
    "min": "minimum",
    "max": "maximum",
    "median": "median",
    "cumsum": "running total of",
    "cumulative_sum": "running total of",
    "running_sum": "running total of",
    "running_total": "running total of",
}


def calls(tokens: list[Token], text: str) -> list[Token]:
    """`f(x)`, `count(*)`, `count(distinct x)` rewritten to words: 'average x', 'count of rows';
    '3+' is '3 or more'."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.norm == "+" and out and out[-1].kind == "number" and out[-1].end == t.start:
            out += [Token(t.raw, "or", "word", t.start, t.end), Token("", "more", "word", t.start, t.end)]
            i += 1
            continue
        inner = _call_argument(tokens, i)
        if inner is None:
            out.append(t)
            i += 1
            continue
        distinct, arg, end = inner
        fn = t.norm
        if fn == "count":
            words = (
                ["count", "of", "rows"]
                if arg in ("*", "1")
                else ["number", "of"] + (["distinct"] if distinct else []) + [arg]
            )
        elif fn in CALLS and not distinct and arg not in ("*", "1"):
            words = [*CALLS[fn].split(), arg]
        else:
            out.append(t)
            i += 1
            continue
        start, stop = t.start, tokens[end].end
        for k, w in enumerate(words):
            kind = "word"
            if w == arg:
                kind = tokens[end - 1].kind
            out.append(Token(text[start:stop] if k == 0 else "", w, kind, start, stop))
        i = end + 1
    return out


def _call_argument(tokens: list[Token], i: int) -> tuple[bool, str, int] | None:
    """(distinct?, argument, index of ')') when tokens[i:] is `name ( [distinct] arg )`."""
    t = tokens[i]
    if t.kind != "word" or t.norm not in (*CALLS, "count") or i + 3 >= len(tokens) + 0:
        return None
    if tokens[i + 1].norm != "(" or tokens[i + 1].start != t.end:
        return None
    k = i + 2
    distinct = tokens[k].norm == "distinct" if k < len(tokens) else False
    if distinct:
        k += 1
    if k + 1 >= len(tokens) or tokens[k + 1].norm != ")":
        return None
    arg = tokens[k]
    if arg.kind == "word" or (arg.kind == "punct" and arg.norm == "*") or arg.norm == "1":
        return distinct, arg.norm, k + 1
    return None


def _norm_word(word: str) -> str:
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    elif w.endswith("s'"):
        w = w[:-1]
    return SPELLING.get(w, w)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    for m in TOKEN.finditer(text):
        kind = m.lastgroup or "word"
        raw = m.group(0)
        if kind == "word":
            # e-mail → email; non-cancelled → non + cancelled; year-over-year stays hyphenated parts
            parts = raw.split("-")
            if len(parts) > 1 and parts[0].lower() in ("e",):
                parts = ["".join(parts)]
            elif len(parts) == 2 and parts[0].lower() in ("de", "re") and len(parts[1]) >= 4:
                parts = ["".join(parts)]  # de-duplicate, re-name: one word
            offset = m.start()
            for part in parts:
                if part:
                    possessive = part.lower().endswith(("'s", "’s"))
                    tok = Token(part, _norm_word(part), "word", offset, offset + len(part))
                    if possessive:
                        tok.tags["possessive"] = True
                    tokens.append(tok)
                offset += len(part) + 1
            continue
        norm = raw.lower()
        if kind == "quoted":
            norm = raw[1:-1]
        tokens.append(Token(raw, norm, kind, m.start(), m.end()))
    return phrases(calls(tokens, text), text)


def phrases(tokens: list[Token], text: str) -> list[Token]:
    """Fixed phrases rewritten to the words the rules read; run again after typos are corrected."""
    merged: list[Token] = []
    for t in tokens:
        merged.append(t)
        for words, norm in PHRASES:
            tail = merged[-len(words) :]
            if len(tail) == len(words) and all(
                x.kind == "word" and x.norm == w for x, w in zip(tail, words, strict=True)
            ):
                start, end = tail[0].start, t.end
                raw = text[start:end]
                parts = norm.split()
                merged[-len(words) :] = [
                    Token(
                        raw if k == 0 else "",
                        part,
                        "number" if part.isdigit() else "word",
                        start,
                        end,
                        tags=dict(tail[0].tags),
                    )
                    for k, part in enumerate(parts)
                ]
                break
    for i, t in enumerate(merged):
        t.index = i
    return merged


def singular(word: str) -> str:
    w = word.lower()
    if len(w) <= 3:
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("sses", "xes", "ches", "shes", "tuses", "buses")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w
