"""HTTP JSON APIs (`https:` / `http:`): read an endpoint page by page as Arrow; never write.

Each page's records go to Arrow in one call (`pa.array` infers the types in C++), nested objects
become `parent__child` columns (dlt's convention) so SQL reaches them without JSON functions, and
pages are unified with permissive promotion (a column that is int on one page and float on the
next becomes double). Credentials only go to the connection's own host: redirects are not followed
and a next-page link to another host is refused. Messages name the connection and the endpoint,
never a credential or a query string.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import (
    ConfigError,
    FailureClass,
    PermissionDenied,
    QueryForgeError,
    SpecError,
    TerminalError,
    TransientError,
    UserError,
    did_you_mean,
)
from ..libs.http import (
    HttpBadBody,
    HttpFailure,
    HttpStatusError,
    HttpTimeout,
    JsonResponse,
    RetryPolicy,
    display_url,
    get_json,
    with_query,
)
from ..secrets import remember, scrub
from .base import ColumnInfo, ConnectionConfig, Connector, ReadRequest, TableInfo, duckdb_columns

log = logging.getLogger(__name__)

RECORD_KEYS = ("data", "items", "results", "records")  # where a page's records usually are
SNIPPET = 80  # characters of an unreadable body shown in the error
DETAIL = 200  # characters of a server's error message shown in the error
_MISSING = object()
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|session|signature", re.IGNORECASE)


class MalformedResponse(TerminalError):
    """A 2xx answer that cannot be read as records: not JSON, or no list where the records should be."""

    failure_class = FailureClass.MALFORMED_RESPONSE
    exit_code = 2


# ------------------------------------------------------------------ options


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuth(_Strict):
    username: str
    password: str


class Auth(_Strict):
    """Exactly one way to authenticate; every credential is remembered as a secret before use."""

    bearer: str | None = Field(None, min_length=1)
    basic: BasicAuth | None = None
    header: dict[str, str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Auth:
        if sum(v is not None for v in (self.bearer, self.basic, self.header)) != 1:
            raise ValueError("give exactly one of bearer, basic or header")
        return self

    def headers(self) -> dict[str, str]:
        if self.bearer is not None:
            remember(self.bearer)
            return {"Authorization": f"Bearer {self.bearer}"}
        if self.basic is not None:
            token = base64.b64encode(f"{self.basic.username}:{self.basic.password}".encode()).decode()
            remember(self.basic.password)
            remember(token)
            return {"Authorization": f"Basic {token}"}
        for value in (self.header or {}).values():
            remember(value)
        return dict(self.header or {})


class Retry(_Strict):
    tries: int = Field(3, ge=1, le=100)
    backoff: tuple[Annotated[float, Field(ge=0)], ...] = Field((1.0, 4.0, 16.0), min_length=1)
    max_delay: float = Field(30.0, ge=0)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(tries=self.tries, backoff=self.backoff, max_delay=self.max_delay)


class Settings(_Strict):
    """The connection's options in queryforge.yaml (besides url)."""

    auth: Auth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    retry: Retry = Retry()
    timeout: float = Field(30.0, gt=0)
    resources: tuple[str, ...] = ()
    health: str | None = None


Style = Literal["none", "page", "offset", "cursor", "link"]
STYLE_KEYS: dict[str, set[str]] = {
    "none": set(),
    "page": {"page_param", "start", "size_param", "size"},
    "offset": {"offset_param", "limit_param", "limit"},
    "cursor": {"cursor_param", "cursor_path"},
    "link": set(),
}


class Paginate(_Strict):
    style: Style = "none"
    max_pages: int = Field(1000, ge=1)
    page_param: str = "page"
    start: int = 1
    size_param: str | None = None
    size: int | None = Field(None, ge=1)
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(100, ge=1)
    cursor_param: str = "cursor"
    cursor_path: str | None = None

    @model_validator(mode="after")
    def _fits_style(self) -> Paginate:
        stray = sorted(self.model_fields_set - {"style", "max_pages"} - STYLE_KEYS[self.style])
        if stray:
            owner = next(s for s, keys in STYLE_KEYS.items() if stray[0] in keys)
            raise ValueError(f"'{stray[0]}' belongs to style '{owner}', not '{self.style}'")
        if self.style == "cursor" and not self.cursor_path:
            raise ValueError("style 'cursor' needs cursor_path, the dotted path to the next cursor")
        if self.size_param and self.size is None:
            raise ValueError("size_param needs size, the number of records per page")
        return self

    def first_params(self) -> dict[str, Any]:
        """The paging part of the first request's query string."""
        if self.style == "page":
            sized = {self.size_param: self.size} if self.size_param else {}
            return {self.page_param: self.start, **sized}
        if self.style == "offset":
            return {self.offset_param: 0, self.limit_param: self.limit}
        return {}


Scalar = str | int | float | bool


class ReadOptions(_Strict):
    """An extract step's `options` for an HTTP connection."""

    params: dict[str, Scalar | list[Scalar] | None] = Field(default_factory=dict)
    records: str | None = None
    paginate: Paginate = Paginate()
    since_param: str | None = None


def _model_at(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    """The nested options model at `loc` (for listing the valid keys there)."""
    current: type[BaseModel] | None = model
    for part in loc:
        field = current.model_fields.get(part) if current else None
        if field is None:
            return None
        kinds = (field.annotation, *get_args(field.annotation))
        current = next(
            (k for k in kinds if get_origin(k) is None and isinstance(k, type) and issubclass(k, BaseModel)),
            None,
        )
    return current


def _explain(exc: ValidationError, model: type[BaseModel], what: str) -> tuple[str, str | None]:
    """The first validation problem as (message, did-you-mean hint), never echoing a value but a style."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    name = ".".join(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        found = _model_at(model, loc[:-1])
        return f"Unknown option '{name}' {what}", did_you_mean(loc[-1], found.model_fields if found else ())
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        value = str(err["input"])
        return f"Invalid value '{value}' for option '{name}' {what}", did_you_mean(value, allowed)
    if kind == "missing":
        return f"Missing option '{name}' {what}", None
    message = str(err["msg"]).removeprefix("Value error, ")
    return (
        f"Invalid option '{name}' {what}: {message}" if name else f"Invalid options {what}: {message}"
    ), None


# ------------------------------------------------------------------ pages and records


class _BadPage(Exception):
    """A page we cannot use; the connector adds the connection, endpoint and page number."""

    def __init__(self, what: str, hint: str | None = None, detail: str | None = None) -> None:
        self.what = what
        self.hint = hint
        self.detail = detail
        super().__init__(what)


@dataclass(frozen=True)
class _Call:
    """One GET: the URL and the query parameters to add to it."""

    url: str
    params: Mapping[str, Any]

    @property
    def full(self) -> str:
        return with_query(self.url, self.params)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def _lookup(body: Any, path: str) -> Any:
    """The value at a dotted path (digits index lists); _MISSING when any step is absent."""
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _keys_hint(body: Any) -> str:
    keys = ", ".join(list(body)[:12]) if isinstance(body, dict) else ""
    shown = f" (the page's top-level keys: {keys})" if keys else ""
    return f"set options.records to the dotted path of the list of records{shown}"


def _records(body: Any, path: str | None) -> list[Any]:
    """The records of one page: at `path`, else the body itself or its data/items/results/records list."""
    if body is None:
        return []  # an empty answer (204) is a page without records
    if path is not None:
        found = _lookup(body, path)
        if found is _MISSING:
            raise _BadPage(f"a page without '{path}'", _keys_hint(body))
        if found is None:
            return []
        if not isinstance(found, list):
            raise _BadPage(f"{_kind(found)} at '{path}', not a list of records", _keys_hint(body))
        return found
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in RECORD_KEYS:
            if isinstance(body.get(key), list):
                return list(body[key])
    raise _BadPage(f"{_kind(body)} with no list of records", _keys_hint(body))


def _flatten(name: str, array: pa.Array) -> Iterator[tuple[str, pa.Array]]:
    """Struct children become `name__child` columns, recursively; lists stay list columns."""
    if not pa.types.is_struct(array.type):
        yield name, array
        return
    for field, child in zip(array.type, array.flatten(), strict=True):
        yield from _flatten(f"{name}__{field.name}" if name else field.name, child)


def _page_table(records: list[Any]) -> pa.Table | None:
    """One page as a flat Arrow table (None for a page without records)."""
    if not records:
        return None
    try:
        array = pa.array(records)
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
        raise _BadPage("records Arrow cannot type", detail=str(exc)) from None
    if not pa.types.is_struct(array.type):
        raise _BadPage(f"records that are not JSON objects (Arrow type {array.type})")
    columns = list(_flatten("", array))
    return pa.Table.from_arrays([a for _, a in columns], names=[n for n, _ in columns])


def _combine(tables: list[pa.Table]) -> pa.Table | None:
    """All pages as one table; columns missing on a page are null there, types are widened."""
    if not tables:
        return None
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise _BadPage("pages whose columns do not agree", detail=str(exc)) from None


_LINK = re.compile(r"<([^>]*)>([^<]*)")
_REL = re.compile(r';\s*rel\s*=\s*(?:"([^"]*)"|([^;,\s]+))', re.IGNORECASE)


def next_link(header: str | None) -> str | None:
    """The target of the rel="next" link in an RFC 8288 `Link` header, if any."""
    for target, params in _LINK.findall(header or ""):
        for match in _REL.finditer(params):
            if "next" in (match.group(1) or match.group(2) or "").lower().split():
                return str(target)
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _since_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def _detail(body: str) -> str:
    """The server's own error message, short and on one line."""
    text = body
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        for candidate in (
            error.get("message") if isinstance(error, dict) else error,
            data.get("message"),
            data.get("detail"),
        ):
            if isinstance(candidate, str) and candidate.strip():
                text = candidate
                break
    text = " ".join(text.split())
    return (text[:DETAIL] + "...") if len(text) > DETAIL else (text or "no message")


# ------------------------------------------------------------------ the connector


class HttpConnector(Connector):
    """A JSON API: `endpoint`s relative to the connection url are read as tables; nothing is written."""

    scheme = "https"
    aliases = ("http",)
    can_write = False

    def __init__(self, config: ConnectionConfig, root: Path) -> None:
        super().__init__(config, root)
        self._first_pages: dict[str, JsonResponse] = {}  # describe's first page, kept for read

    # -------------------------------------------------- settings
    @cached_property
    def settings(self) -> Settings:
        """The connection options, checked once when first needed (a bad one fails only its users)."""
        parts = urlsplit(self.config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"Connection '{self.name}' needs an http(s) URL with a host",
                where="queryforge.yaml",
                hint="e.g. url: https://api.example.com/v1",
            )
        if parts.username or parts.password:
            raise ConfigError(
                scrub(f"Connection '{self.name}' has credentials in its url"),
                where="queryforge.yaml",
                hint="move them to auth: {basic: {username: ..., password: ...}}",
            )
        try:
            return Settings.model_validate(self.config.options)
        except ValidationError as exc:
            message, hint = _explain(exc, Settings, f"of connection '{self.name}'")
            raise ConfigError(scrub(message), where="queryforge.yaml", hint=hint) from None

    @cached_property
    def _headers(self) -> dict[str, str]:
        """Extra headers, then auth; a credential put in `headers` by hand is kept secret too."""
        for name, value in self.settings.headers.items():
            if _SECRET_HEADER.search(name):
                remember(value)
        auth = self.settings.auth.headers() if self.settings.auth else {}
        return {**self.settings.headers, **auth}

    @property
    def base_url(self) -> str:
        return self.config.url

    def _endpoint_url(self, endpoint: str | None, where: str | None) -> str:
        if not endpoint:
            return self.base_url
        if "://" in endpoint or endpoint.startswith("//"):
            raise SpecError(
                f"Endpoint '{display_url(endpoint)}' of connection '{self.name}' is a full URL",
                where=where,
                hint="give a path relative to the connection url, e.g. /customers",
            )
        return f"{self.base_url.rstrip('/')}/{endpoint.lstrip('/')}"

    def _label(self, endpoint: str | None) -> str:
        """How messages name an endpoint: its path, without the query string."""
        path = urlsplit(endpoint or "").path
        return f"/{path.lstrip('/')}" if path else display_url(self.base_url)

    def _options(self, request: ReadRequest, where: str | None) -> ReadOptions:
        if request.query is not None:
            raise SpecError(
                f"Connection '{self.name}' is an HTTP API and cannot run a query",
                where=where,
                hint="extract with endpoint: /path (and options: params) instead of query:",
            )
        try:
            return ReadOptions.model_validate(dict(request.options))
        except ValidationError as exc:
            what = f"in the extract from connection '{self.name}'"
            message, hint = _explain(exc, ReadOptions, what)
            raise SpecError(scrub(message), where=where, hint=hint) from None

    def _first_call(self, request: ReadRequest, options: ReadOptions, where: str | None) -> _Call:
        params: dict[str, Any] = dict(options.params)
        if options.since_param and request.since is not None:
            params[options.since_param] = _since_text(request.since)
        params.update(options.paginate.first_params())
        return _Call(self._endpoint_url(request.endpoint or request.table, where), params)

    # -------------------------------------------------- requests and errors
    def _get(self, call: _Call, label: str, page: int | None, where: str | None) -> JsonResponse:
        try:
            return get_json(
                call.url,
                params=call.params,
                headers=self._headers,
                timeout=self.settings.timeout,
                policy=self.settings.retry.policy(),
            )
        except HttpFailure as exc:
            raise self._http_error(exc, label, f" (page {page})" if page else "", where) from None

    def _http_error(self, exc: HttpFailure, label: str, page: str, where: str | None) -> QueryForgeError:
        """One clear, scrubbed error per kind of failure, with the failure class that drives retries."""
        cls, message, hint = self._classify(exc, f"Connection '{self.name}'", f"{label}{page}")
        return cls(scrub(message), where=where, hint=scrub(hint) if hint else None)

    def _classify(
        self, exc: HttpFailure, who: str, what: str
    ) -> tuple[type[QueryForgeError], str, str | None]:
        if isinstance(exc, HttpStatusError):
            return self._classify_status(exc, who, what)
        if isinstance(exc, HttpTimeout):
            return (
                TransientError,
                f"{who} timed out for {what}: no answer within {self.settings.timeout:g} s",
                "raise the connection's timeout (seconds per request) if the API is slow",
            )
        if isinstance(exc, HttpBadBody):
            return (MalformedResponse, *self._bad_body(exc, who, what))
        return (
            TransientError,
            f"{who} cannot reach the API for {what}: {exc}",
            "check the url and the network",
        )

    def _classify_status(
        self, exc: HttpStatusError, who: str, what: str
    ) -> tuple[type[QueryForgeError], str, str | None]:
        status, detail = exc.status, _detail(exc.body)
        if status in (401, 403):
            hint = (
                f"check the auth setting of connection '{self.name}' in queryforge.yaml"
                if self.settings.auth
                else f"connection '{self.name}' has no auth setting; add auth: {{bearer: ...}}"
            )
            return PermissionDenied, f"{who} was refused access to {what}: HTTP {status}, {detail}", hint
        if status == 404:
            hint = f"check the endpoint; it is relative to the connection url {display_url(self.base_url)}"
            return UserError, f"{who} has no endpoint {what}: HTTP 404", hint
        if 300 <= status < 400:
            return (
                UserError,
                f"{who} was redirected for {what}: HTTP {status}; redirects are not followed, "
                "so credentials never travel elsewhere",
                "use the final address in the connection url or the endpoint",
            )
        if status == 429 or status >= 500 or status == 408:
            tries = self.settings.retry.tries
            return (
                TransientError,
                f"{who} kept failing for {what}: HTTP {status} after {tries} tries, {detail}",
                "the API is unavailable or rate-limiting; try again later, or raise retry.tries",
            )
        return (
            UserError,
            f"{who} rejected the request for {what}: HTTP {status}, {detail}",
            "check the extract's params and paginate options",
        )

    @staticmethod
    def _bad_body(exc: HttpBadBody, who: str, what: str) -> tuple[str, str | None]:
        if exc.too_large:
            return f"{who} returned a page too large to read for {what}", "ask for smaller pages"
        start = " ".join(exc.snippet.split())
        shown = f": {start[:SNIPPET]!r}" if start else ""
        if "html" in exc.content_type.lower() or start.startswith("<"):
            return (
                f"{who} returned HTML, not JSON, for {what}{shown}",
                "check the url and endpoint; a login or error page is the usual cause",
            )
        return f"{who} returned a body that is not JSON for {what}{shown}", "check the url and endpoint"

    def _malformed(self, bad: _BadPage, label: str, page: int, where: str | None) -> MalformedResponse:
        message = f"Connection '{self.name}' returned {bad.what} for {label} (page {page})"
        message += f": {bad.detail}" if bad.detail else ""
        return MalformedResponse(scrub(message), where=where, hint=scrub(bad.hint) if bad.hint else None)

    # -------------------------------------------------- paging
    def _fetch(self, call: _Call, label: str, page: int, where: str | None) -> JsonResponse:
        """A page's answer; the first one may already be here from `describe`."""
        cached = self._first_pages.pop(call.full, None) if page == 1 else None
        return cached if cached is not None else self._get(call, label, page, where)

    def _next_call(
        self, paginate: Paginate, call: _Call, response: JsonResponse, records: list[Any]
    ) -> _Call | None:
        """The request for the page after this one; None when this was the last page."""
        params = dict(call.params)
        if paginate.style == "page":
            if not records or (paginate.size is not None and len(records) < paginate.size):
                return None
            params[paginate.page_param] = int(params[paginate.page_param]) + 1
            return _Call(call.url, params)
        if paginate.style == "offset":
            if len(records) < paginate.limit:
                return None
            params[paginate.offset_param] = int(params[paginate.offset_param]) + len(records)
            return _Call(call.url, params)
        if paginate.style == "cursor":
            return self._next_cursor(paginate, call, response)
        if paginate.style == "link":
            return self._next_link(call, response)
        return None

    @staticmethod
    def _next_cursor(paginate: Paginate, call: _Call, response: JsonResponse) -> _Call | None:
        cursor = _lookup(response.body, paginate.cursor_path or "")
        if cursor is _MISSING or cursor is None or cursor == "":
            return None
        if isinstance(cursor, dict | list):
            raise _BadPage(f"{_kind(cursor)} at cursor_path '{paginate.cursor_path}', not a cursor")
        if call.params.get(paginate.cursor_param) == cursor:
            raise _BadPage(f"the same cursor twice at '{paginate.cursor_path}' (paging would never end)")
        return _Call(call.url, {**call.params, paginate.cursor_param: cursor})

    def _next_link(self, call: _Call, response: JsonResponse) -> _Call | None:
        target = next_link(response.headers.get("link"))
        if target is None:
            return None
        url = urljoin(call.full, target)
        if _origin(url) != _origin(self.base_url):
            raise _BadPage(
                f"a next-page link to another host ({display_url(url)}), which was not followed",
                f"credentials are only sent to {display_url(self.base_url)}; ask the API owner why it "
                "links elsewhere",
            )
        return _Call(url, {})

    def _pages(self, request: ReadRequest, where: str | None) -> Iterator[pa.Table]:
        """Each page with records as a flat table, following the paginate style until the last page."""
        options = self._options(request, where)
        paginate, label = options.paginate, self._label(request.endpoint or request.table)
        call: _Call | None = self._first_call(request, options, where)
        page = 0
        while call is not None:
            page += 1
            if page > paginate.max_pages:
                log.warning(
                    "Connection '%s': stopped reading %s after max_pages=%d pages; more may remain",
                    self.name,
                    label,
                    paginate.max_pages,
                )
                return
            response = self._fetch(call, label, page, where)
            try:
                records = _records(response.body, options.records)
                table = _page_table(records)
                call = self._next_call(paginate, call, response, records)
            except _BadPage as bad:
                raise self._malformed(bad, label, page, where) from None
            if table is not None:
                yield table

    def _select(
        self, table: pa.Table | None, columns: tuple[str, ...] | None, label: str, where: str | None
    ) -> pa.Table:
        if table is None:  # no records at all: the asked-for columns, typeless and empty
            return pa.table({c: pa.nulls(0) for c in columns or ()})
        if columns is None:
            return table
        for column in columns:
            if column not in table.column_names:
                raise UserError(
                    f"Column '{column}' is not in what connection '{self.name}' returned for {label}",
                    where=where,
                    hint=did_you_mean(column, table.column_names),
                )
        return table.select(list(columns))

    # -------------------------------------------------- the Connector interface
    def read(self, request: ReadRequest) -> pa.RecordBatchReader:
        """All pages of the endpoint as one reader (pages are unified first, so types can widen)."""
        label = self._label(request.endpoint or request.table)
        tables = list(self._pages(request, None))
        try:
            combined = _combine(tables)
        except _BadPage as bad:
            message = f"Connection '{self.name}' returned {bad.what} for {label}: {bad.detail}"
            raise MalformedResponse(scrub(message)) from None
        table = self._select(combined, request.columns, label, None)
        return pa.RecordBatchReader.from_batches(
            table.schema, table.to_batches(max_chunksize=max(request.batch_rows, 1))
        )

    def describe(self, request: ReadRequest, where: str) -> list[tuple[str, str]]:
        """Columns and types of the first page only; the page is kept so the next `read` skips fetching it."""
        schema = self._first_schema(request, where, keep=True)
        if schema is None:
            raise UserError(
                f"Connection '{self.name}' returned no records for "
                f"{self._label(request.endpoint or request.table)}, so its columns are unknown",
                where=where,
                hint="check the endpoint and its params; validation needs at least one record",
            )
        return duckdb_columns(schema)

    def _first_schema(self, request: ReadRequest, where: str | None, *, keep: bool) -> pa.Schema | None:
        options = self._options(request, where)
        label = self._label(request.endpoint or request.table)
        call = self._first_call(request, options, where)
        response = self._fetch(call, label, 1, where)
        if keep:
            self._first_pages[call.full] = response
        try:
            table = _page_table(_records(response.body, options.records))
        except _BadPage as bad:
            raise self._malformed(bad, label, 1, where) from None
        if table is None:
            return None
        return self._select(table, request.columns, label, where).schema

    def introspect(self) -> list[TableInfo]:
        """One table per configured resource, typed from its first page (no columns when it is empty)."""
        tables = []
        for resource in self.settings.resources:
            schema = self._first_schema(ReadRequest(endpoint=resource), None, keep=False)
            columns = duckdb_columns(schema) if schema is not None else []
            tables.append(TableInfo(name=resource, columns=tuple(ColumnInfo(n, t) for n, t in columns)))
        return tables

    def test(self) -> str:
        """GET the base url (or the `health` path) once; say which status answered."""
        endpoint = self.settings.health
        url = self._endpoint_url(endpoint, None)
        response = self._get(_Call(url, {}), self._label(endpoint), None, None)
        return f"HTTP {response.status} from {display_url(url)}"
