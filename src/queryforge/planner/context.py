"""What the planner may know about a workspace: sources, their columns and types, small domains.

Built from the catalog of the workspace (files under data/, database files there, the
warehouse's tables). `for_prompt()` is the sanitised view that may be sent to an LLM:
identifiers reduced to a safe character set, untrusted text truncated, no sample rows. Domains
(distinct values of low-cardinality text columns) go along as value hints -- so a model spells
"France" as the data's "FR" -- except for sensitive columns, whose values never leave the machine.

A column is sensitive when the catalog tags it (`Source.sensitive`) or when its name or any of its
values looks personal (`looks_sensitive`): e-mail, phone, names, addresses, birth dates, ids,
credentials, payment data. When in doubt a column counts as sensitive: a missing hint costs a
question, a leaked value cannot be taken back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SAFE_IDENT = re.compile(r"[^A-Za-z0-9_./-]")
MAX_NAME = 64
MAX_DESCRIPTION = 200  # characters of a table's or column's description sent to a model
MAX_HINT_VALUE = 64  # characters of one value hint; a longer value is not a code or a category

# Words of a column name that mark personal or secret data (name split on _, -, . and camelCase).
SENSITIVE_WORDS = frozenset(
    {
        "email", "mail", "phone", "mobile", "tel", "telephone", "fax", "ssn", "sin", "nin",
        "passport", "license", "licence", "birth", "birthday", "birthdate", "dob", "born", "age",
        "address", "street", "addr", "zip", "zipcode", "postcode", "postal", "city", "ip", "ipaddress",
        "mac", "password", "passwd", "pwd", "secret", "token", "apikey", "key", "credential",
        "credentials", "iban", "bic", "swift", "card", "cc", "cvv", "cvc", "pan", "account", "salary",
        "income", "wage", "gender", "sex", "religion", "ethnicity", "race", "health", "medical",
        "diagnosis", "firstname", "lastname", "fullname", "surname", "forename", "givenname", "username",
        "login", "user", "person", "customer", "patient", "employee", "contact", "owner", "latitude",
        "longitude", "lat", "lon", "lng", "geo", "location", "device", "imei", "signature",
    }
)  # fmt: skip
# Values that are personal whatever the column is called: e-mails and IPv4 addresses ...
SENSITIVE_VALUE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+|\b\d{1,3}(?:\.\d{1,3}){3}\b")
# ... and runs of 9+ digits (phone, card, account or id numbers; a date has 8).
DIGIT_RUN = re.compile(r"\+?\d[\d ()./-]*\d")
MIN_ID_DIGITS = 9
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T][\d:.]+)?(?:Z|[+-]\d{2}:?\d{2})?$")


@dataclass(frozen=True)
class Source:
    """A readable thing: a file (path relative to the workspace) or a table of a connection."""

    name: str  # what a person calls it: 'orders.csv', 'orders', 'legacy.accounts'
    kind: str  # 'file' | 'table'
    columns: tuple[tuple[str, str], ...]
    path: str | None = None
    connection: str | None = None
    table: str | None = None
    rows: int | None = None
    domains: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    sensitive: frozenset[str] = field(default=frozenset(), compare=False)  # columns tagged PII/secret
    description: str | None = field(default=None, compare=False)  # from the project's YAML
    column_descriptions: dict[str, str] = field(default_factory=dict, compare=False)

    def value_hints(self) -> dict[str, list[str]]:
        """The distinct values of low-cardinality columns that may go to a model: none of sensitive ones.

        A column whose name is not a plain identifier gets none either: the model only sees its
        sanitised name, so it could not use the hint, and such names are where injections hide.
        """
        tagged = {c.lower() for c in self.sensitive}
        return {
            column: list(values)
            for column, values in self.domains.items()
            if values
            and clean_identifier(column) == column
            and column.lower() not in tagged
            and not looks_sensitive(column, values)
            and all(len(v) <= MAX_HINT_VALUE for v in values)
        }

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def type_of(self, column: str) -> str:
        for c, t in self.columns:
            if c.lower() == column.lower():
                return t.upper()
        return ""

    @property
    def stem(self) -> str:
        base = (self.table or self.name).rsplit("/", 1)[-1]
        return base.split(".", 1)[0]

    def extract_spec(self) -> dict[str, Any]:
        if self.path is not None:  # a data file, or a table inside a database file
            return {"path": self.path, "table": self.table} if self.table else {"path": self.path}
        return {"connection": self.connection, "table": self.table}


@dataclass(frozen=True)
class PlannerContext:
    sources: tuple[Source, ...]
    target_connection: str
    data_dir: str = "data"

    def files(self) -> list[Source]:
        return [s for s in self.sources if s.kind == "file"]

    def tables(self) -> list[Source]:
        return [s for s in self.sources if s.kind == "table"]

    def for_prompt(self) -> list[dict[str, Any]]:
        """The sanitised catalog for an LLM prompt: names and types, and value hints where safe.

        `values` (only when there are some) maps a column to all its distinct values; sensitive
        columns are never in it.
        """
        out: list[dict[str, Any]] = []
        for s in self.sources:
            entry: dict[str, Any] = {
                "source": clean_identifier(s.name),
                "kind": s.kind,
                "extract": {k: clean_identifier(str(v)) for k, v in s.extract_spec().items()},
                "columns": [[clean_identifier(c), clean_identifier(t)] for c, t in s.columns[:200]],
                "rows": s.rows,
            }
            if s.description:
                entry["description"] = clean_text(s.description)
            if s.column_descriptions:
                entry["column_descriptions"] = {
                    clean_identifier(c): clean_text(d) for c, d in list(s.column_descriptions.items())[:200]
                }
            hints = s.value_hints()
            if hints:
                entry["values"] = {clean_identifier(c): v for c, v in hints.items()}
            out.append(entry)
        return out


def clean_text(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """A description as it may go into a prompt: one line of printable text, truncated."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def name_words(column: str) -> set[str]:
    """The lower-case words of a column name: customerEmail, customer_email -> {customer, email}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column)
    words = {w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w}
    return words | {"".join(sorted(words, key=spaced.lower().find))}  # first_name -> firstname


def looks_sensitive(column: str, values: tuple[str, ...] | list[str] = ()) -> bool:
    """Whether a column's values may be personal or secret, judged by its name and its values."""
    words = name_words(column)
    if words & SENSITIVE_WORDS or words == {"name"}:  # a bare "name" is as often a person's as not
        return True
    return any(SENSITIVE_VALUE.search(v) or _long_number(v) for v in values)


def _long_number(value: str) -> bool:
    if ISO_DATE.match(value):  # a date or timestamp is not an identifier
        return False
    return any(sum(ch.isdigit() for ch in m.group(0)) >= MIN_ID_DIGITS for m in DIGIT_RUN.finditer(value))


def clean_identifier(text: str) -> str:
    """Untrusted names (columns, files) reduced to a safe character set and length."""
    return SAFE_IDENT.sub("_", text)[:MAX_NAME]
