"""The HTTP JSON API connector end to end: the real client against a scripted local API server.

Each test starts a real `ThreadingHTTPServer` on 127.0.0.1 whose routes are small functions of the
request, reads through `HttpConnector` over real sockets, and checks both sides: the rows (against
the server's own data) and what the server saw (how many requests, which query parameters, which
headers). Nothing of QueryForge is mocked.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pytest

from queryforge.connectors.base import ConnectionConfig, Connector, ReadRequest
from queryforge.connectors.http import HttpConnector, MalformedResponse
from queryforge.errors import (
    ConfigError,
    FailureClass,
    PermissionDenied,
    SpecError,
    TransientError,
    UserError,
)

FAST = {"tries": 3, "backoff": [0.01]}
ROWS: list[dict[str, Any]] = [
    {"id": i, "name": f"customer {i}", "plan": {"tier": "pro" if i % 2 else "free", "seats": i}}
    for i in range(1, 12)
]  # 11 rows: three pages of 4, 4 and 3
FLAT = [
    {"id": r["id"], "name": r["name"], "plan__tier": r["plan"]["tier"], "plan__seats": r["id"]} for r in ROWS
]


# ------------------------------------------------------------------ the fake API


@dataclass(frozen=True)
class Reply:
    """One answer: a dict/list body is sent as JSON, a str as it is with `content_type`."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


Route = Callable[[Seen], Reply]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        seen = Seen(parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items()), time.monotonic())
        reply = self.server.api.answer(seen)
        raw = reply.encoded()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(raw)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)
        except OSError:
            pass  # the client gave up (the timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() waits for the handler threads
    api: FakeApi


class FakeApi:
    """Routes by path (under /v1); records every request; unknown paths answer 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.release = threading.Event()  # lets a blocking route finish at teardown
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def route(self, path: str, handler: Route) -> None:
        self.routes[f"/v1{path}"] = handler

    def answer(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
        handler = self.routes.get(seen.path)
        return handler(seen) if handler else Reply({"error": "no such route"}, 404)

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == f"/v1{path}"]

    def connector(self, root: Path, **options: Any) -> HttpConnector:
        return HttpConnector(ConnectionConfig(name="api", url=self.base_url, options=options), root=root)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    try:
        yield fake
    finally:
        fake.close()


def read(connector: HttpConnector, endpoint: str, **kwargs: Any) -> pa.Table:
    with connector.session():
        return connector.read(ReadRequest(endpoint=endpoint, **kwargs)).read_all()


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def page_route(seen: Seen) -> Reply:
    page, size = int(seen.query.get("page", 1)), int(seen.query.get("per_page", 4))
    return Reply({"data": ROWS[(page - 1) * size : page * size], "page": page})


# ------------------------------------------------------------------ pagination


def test_page_pagination_with_size_stops_at_a_short_page(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", page_route)
    paginate = {"style": "page", "size_param": "per_page", "size": 4}
    table = read(api.connector(tmp_path), "/customers", options={"paginate": paginate})
    assert rows(table) == FLAT
    assert [r.query["page"] for r in api.seen("/customers")] == ["1", "2", "3"]
    assert {r.query["per_page"] for r in api.seen("/customers")} == {"4"}


def test_page_pagination_without_size_stops_at_an_empty_page(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", page_route)
    table = read(api.connector(tmp_path), "/customers", options={"paginate": {"style": "page"}})
    assert rows(table) == FLAT
    assert len(api.seen("/customers")) == 4


def test_max_pages_is_a_safety_stop(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", page_route)
    table = read(
        api.connector(tmp_path), "/customers", options={"paginate": {"style": "page", "max_pages": 2}}
    )
    assert rows(table) == FLAT[:8]
    assert len(api.seen("/customers")) == 2


def test_offset_pagination_over_a_bare_list(api: FakeApi, tmp_path: Path) -> None:
    def route(seen: Seen) -> Reply:
        start, limit = int(seen.query["skip"]), int(seen.query["take"])
        return Reply(ROWS[start : start + limit])

    api.route("/customers", route)
    paginate = {"style": "offset", "offset_param": "skip", "limit_param": "take", "limit": 5}
    table = read(api.connector(tmp_path), "/customers", options={"paginate": paginate})
    assert rows(table) == FLAT
    assert [r.query["skip"] for r in api.seen("/customers")] == ["0", "5", "10"]


def test_cursor_pagination_follows_the_cursor_until_it_is_null(api: FakeApi, tmp_path: Path) -> None:
    def route(seen: Seen) -> Reply:
        start = int(base64.b64decode(seen.query["after"])) if "after" in seen.query else 0
        end = start + 4
        cursor = base64.b64encode(str(end).encode()).decode() if end < len(ROWS) else None
        return Reply({"items": ROWS[start:end], "meta": {"next": cursor}})

    api.route("/customers", route)
    paginate = {"style": "cursor", "cursor_param": "after", "cursor_path": "meta.next"}
    table = read(api.connector(tmp_path), "/customers", options={"paginate": paginate})
    assert rows(table) == FLAT
    assert len(api.seen("/customers")) == 3
    assert "after" not in api.seen("/customers")[0].query


def test_link_pagination_follows_rel_next(api: FakeApi, tmp_path: Path) -> None:
    def route(seen: Seen) -> Reply:
        page = int(seen.query.get("page", 1))
        links = [f'</v1/customers?page={page + 1}&per_page=4>; rel="next"'] if page < 3 else []
        links.append('</v1/customers?page=3>; rel="last"')
        return Reply({"results": ROWS[(page - 1) * 4 : page * 4]}, headers={"Link": ", ".join(links)})

    api.route("/customers", route)
    options = {"paginate": {"style": "link"}, "params": {"status": "active"}}
    table = read(api.connector(tmp_path), "/customers", options=options)
    assert rows(table) == FLAT
    assert [r.query.get("page") for r in api.seen("/customers")] == [None, "2", "3"]
    assert api.seen("/customers")[0].query == {"status": "active"}


def test_link_to_another_host_is_refused(api: FakeApi, tmp_path: Path) -> None:
    # localhost is the same server, but another host name: the token must not go there
    next_url = f"http://localhost:{api.port}/v1/customers?page=2"
    api.route(
        "/customers", lambda s: Reply({"data": ROWS[:4]}, headers={"Link": f'<{next_url}>; rel="next"'})
    )
    connector = api.connector(tmp_path, auth={"bearer": "link-token-5150"})
    with pytest.raises(MalformedResponse) as caught:
        read(connector, "/customers", options={"paginate": {"style": "link"}})
    assert "another host" in str(caught.value) and "'api'" in str(caught.value)
    assert len(api.requests) == 1


# ------------------------------------------------------------------ auth


AUTHS = [
    pytest.param({"bearer": "good-token-123"}, {"bearer": "wrong-token-987"}, "wrong-token-987", id="bearer"),
    pytest.param(
        {"basic": {"username": "ann", "password": "good-pass-123"}},
        {"basic": {"username": "ann", "password": "wrong-pass-987"}},
        "wrong-pass-987",
        id="basic",
    ),
    pytest.param(
        {"header": {"X-Api-Key": "good-key-123"}},
        {"header": {"X-Api-Key": "wrong-key-987"}},
        "wrong-key-987",
        id="header",
    ),
]


def guarded(seen: Seen) -> Reply:
    """Accepts only the good credentials; echoes what it got, as careless APIs do."""
    good = {
        ("Authorization", "Bearer good-token-123"),
        ("Authorization", "Basic " + base64.b64encode(b"ann:good-pass-123").decode()),
        ("X-Api-Key", "good-key-123"),
    }
    if any(seen.header(name) == value for name, value in good):
        return Reply({"data": ROWS[:2]})
    sent = seen.header("Authorization") or seen.header("X-Api-Key")
    return Reply({"error": {"message": f"invalid credentials {sent}"}}, 401)


@pytest.mark.parametrize(("good", "bad", "secret"), AUTHS)
def test_auth_kinds(
    api: FakeApi, tmp_path: Path, good: dict[str, Any], bad: dict[str, Any], secret: str
) -> None:
    api.route("/customers", guarded)
    assert rows(read(api.connector(tmp_path, auth=good), "/customers")) == FLAT[:2]
    with pytest.raises(PermissionDenied) as caught:
        read(api.connector(tmp_path, auth=bad), "/customers")
    message = str(caught.value)
    assert caught.value.failure_class is FailureClass.PERMISSION_DENIED
    assert "HTTP 401" in message and "'api'" in message and "/customers" in message and "auth" in message
    assert secret not in message
    assert base64.b64encode(f"ann:{secret}".encode()).decode() not in message
    assert len(api.requests) == 2  # a 401 is not retried


# ------------------------------------------------------------------ retries and failures


def test_429_waits_as_retry_after_asks(api: FakeApi, tmp_path: Path) -> None:
    limited = {"done": False}

    def route(seen: Seen) -> Reply:
        if seen.query.get("page") == "2" and not limited["done"]:
            limited["done"] = True
            return Reply({"error": "slow down"}, 429, {"Retry-After": "1"})
        return page_route(seen)

    api.route("/customers", route)
    connector = api.connector(tmp_path, retry={"tries": 3, "backoff": [0.01], "max_delay": 5})
    paginate = {"style": "page", "size_param": "per_page", "size": 4}
    table = read(connector, "/customers", options={"paginate": paginate})
    assert rows(table) == FLAT
    seen = api.seen("/customers")
    assert [r.query["page"] for r in seen] == ["1", "2", "2", "3"]
    assert seen[2].at - seen[1].at >= 0.9  # Retry-After, not the 0.01 s backoff


def test_500_twice_then_success(api: FakeApi, tmp_path: Path) -> None:
    calls = {"n": 0}

    def route(seen: Seen) -> Reply:
        calls["n"] += 1
        return Reply({"error": "oops"}, 500) if calls["n"] <= 2 else Reply({"data": ROWS})

    api.route("/customers", route)
    assert rows(read(api.connector(tmp_path, retry=FAST), "/customers")) == FLAT
    assert len(api.requests) == 3


def test_500_forever_is_transient_after_the_configured_tries(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", lambda s: Reply({"error": {"message": "database on fire"}}, 500))
    connector = api.connector(tmp_path, retry=FAST)
    with pytest.raises(TransientError) as caught:
        read(connector, "/customers", options={"params": {"api_key": "query-secret-4242"}})
    message = str(caught.value)
    assert caught.value.failure_class is FailureClass.TRANSIENT
    assert "HTTP 500 after 3 tries" in message and "database on fire" in message and "/customers" in message
    assert "query-secret-4242" not in message and "?" not in message
    assert len(api.requests) == 3


def test_timeout_is_transient_and_says_timed_out(api: FakeApi, tmp_path: Path) -> None:
    def stuck(seen: Seen) -> Reply:
        api.release.wait(30)
        return Reply({"data": []})

    api.route("/slow", stuck)
    with pytest.raises(TransientError) as caught:
        read(api.connector(tmp_path, retry=FAST, timeout=0.2), "/slow")
    assert "timed out" in str(caught.value) and "/slow" in str(caught.value)
    assert len(api.requests) == 2  # a timed-out request is tried once more


def test_refused_connection_is_transient(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ConnectionConfig(name="api", url=f"http://127.0.0.1:{port}/v1", options={"retry": FAST})
    with pytest.raises(TransientError, match="cannot reach"):
        read(HttpConnector(config, root=tmp_path), "/customers")


def test_404_names_the_endpoint(api: FakeApi, tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        read(api.connector(tmp_path, retry=FAST), "/custmers")
    assert caught.value.failure_class is FailureClass.VALIDATION_FAILED
    assert "/custmers" in str(caught.value) and "HTTP 404" in str(caught.value)
    assert len(api.requests) == 1


def test_redirects_are_not_followed(api: FakeApi, tmp_path: Path) -> None:
    api.route("/old", lambda s: Reply("", 302, {"Location": f"{api.base_url}/new"}))
    api.route("/new", lambda s: Reply({"data": ROWS}))
    with pytest.raises(UserError, match="redirected"):
        read(api.connector(tmp_path, auth={"bearer": "redirect-token-77"}), "/old")
    assert [r.path for r in api.requests] == ["/v1/old"]


def test_html_body_is_a_malformed_response(api: FakeApi, tmp_path: Path) -> None:
    def route(seen: Seen) -> Reply:
        if seen.query.get("page") == "2":
            return Reply("<!DOCTYPE html><html><body>Please log in</body></html>", content_type="text/html")
        return page_route(seen)

    api.route("/customers", route)
    with pytest.raises(MalformedResponse) as caught:
        read(api.connector(tmp_path), "/customers", options={"paginate": {"style": "page"}})
    message = str(caught.value)
    assert caught.value.failure_class is FailureClass.MALFORMED_RESPONSE and caught.value.exit_code == 2
    assert "Connection 'api' returned HTML, not JSON, for /customers (page 2)" in message
    assert "Please log in" in message


def test_broken_json_is_a_malformed_response(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", lambda s: Reply('{"data": [{"id": 1},'))
    with pytest.raises(MalformedResponse, match="not JSON for /customers"):
        read(api.connector(tmp_path), "/customers")


def test_missing_records_path_is_a_malformed_response(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", lambda s: Reply({"data": ROWS, "count": 11}))
    with pytest.raises(MalformedResponse) as caught:
        read(api.connector(tmp_path), "/customers", options={"records": "payload.rows"})
    assert "'payload.rows'" in str(caught.value) and "data, count" in str(caught.value)


def test_records_path_that_is_not_a_list(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", lambda s: Reply({"data": {"id": 1}}))
    with pytest.raises(MalformedResponse, match="an object at 'data', not a list"):
        read(api.connector(tmp_path), "/customers", options={"records": "data"})


# ------------------------------------------------------------------ data shape


def test_nested_objects_are_flattened_and_lists_kept(api: FakeApi, tmp_path: Path) -> None:
    record = {"id": 1, "address": {"city": "Oslo", "geo": {"lat": 59.9, "lon": 10.7}}, "tags": ["a", "b"]}
    api.route("/people", lambda s: Reply({"response": {"people": [record, {"id": 2, "address": None}]}}))
    connector = api.connector(tmp_path)
    table = read(connector, "/people", options={"records": "response.people"})
    assert table.column_names == ["id", "address__city", "address__geo__lat", "address__geo__lon", "tags"]
    assert pa.types.is_list(table.schema.field("tags").type)
    assert table.to_pylist()[0] == {
        "id": 1,
        "address__city": "Oslo",
        "address__geo__lat": 59.9,
        "address__geo__lon": 10.7,
        "tags": ["a", "b"],
    }
    assert table.to_pylist()[1]["address__city"] is None
    described = connector.describe(
        ReadRequest(endpoint="/people", options={"records": "response.people"}), "s"
    )
    assert dict(described)["tags"] == "VARCHAR[]" and dict(described)["address__geo__lat"] == "DOUBLE"


def test_types_are_promoted_across_pages(api: FakeApi, tmp_path: Path) -> None:
    pages = {
        "1": [{"id": 1, "amount": 10, "note": None}],
        "2": [{"id": 2, "amount": 2.5, "note": "late", "coupon": "X1"}],
        "3": [],
    }
    api.route("/invoices", lambda s: Reply({"data": pages[s.query["page"]]}))
    table = read(api.connector(tmp_path), "/invoices", options={"paginate": {"style": "page"}})
    assert table.schema.field("amount").type == pa.float64()
    assert table.schema.field("note").type == pa.string()
    assert table.to_pylist() == [
        {"id": 1, "amount": 10.0, "note": None, "coupon": None},
        {"id": 2, "amount": 2.5, "note": "late", "coupon": "X1"},
    ]


def test_columns_selection_and_unknown_column(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", lambda s: Reply({"data": ROWS}))
    connector = api.connector(tmp_path)
    table = read(connector, "/customers", columns=("id", "plan__tier"))
    assert table.column_names == ["id", "plan__tier"]
    assert table.column("plan__tier").to_pylist() == [r["plan__tier"] for r in FLAT]
    with pytest.raises(UserError, match="did you mean 'plan__tier'"):
        read(connector, "/customers", columns=("id", "plan_tier"))


def test_batches_are_at_most_batch_rows(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", lambda s: Reply({"data": ROWS}))
    reader = api.connector(tmp_path).read(ReadRequest(endpoint="/customers", batch_rows=4))
    sizes = [batch.num_rows for batch in reader]
    assert sum(sizes) == len(ROWS) and max(sizes) <= 4


def test_since_param_is_sent_only_when_since_is_set(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", lambda s: Reply({"data": ROWS[:1]}))
    options = {"since_param": "updated_since", "params": {"status": "active"}}
    connector = api.connector(tmp_path)
    read(
        connector,
        "/customers",
        options=options,
        cursor="updated_at",
        since=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    read(connector, "/customers", options=options)
    first, second = api.seen("/customers")
    assert first.query == {"status": "active", "updated_since": "2026-01-02T03:04:05+00:00"}
    assert second.query == {"status": "active"}


def test_an_endpoint_without_records(api: FakeApi, tmp_path: Path) -> None:
    api.route("/empty", lambda s: Reply({"data": []}))
    connector = api.connector(tmp_path)
    table = read(connector, "/empty")
    assert (table.num_rows, table.num_columns) == (0, 0)
    assert read(connector, "/empty", columns=("id",)).column_names == ["id"]
    with pytest.raises(UserError, match="returned no records for /empty, so its columns are unknown"):
        connector.describe(ReadRequest(endpoint="/empty"), "pipelines/p.yaml: steps[0]")


# ------------------------------------------------------------------ describe, test, introspect


def test_describe_keeps_the_first_page_for_read(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", page_route)
    connector = api.connector(tmp_path)
    request = ReadRequest(endpoint="/customers", options={"paginate": {"style": "page", "size": 4}})
    assert connector.describe(request, "s") == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("plan__tier", "VARCHAR"),
        ("plan__seats", "BIGINT"),
    ]
    assert len(api.requests) == 1
    assert rows(connector.read(request).read_all()) == FLAT
    assert [r.query["page"] for r in api.seen("/customers")] == ["1", "2", "3"]  # page 1 only once


def test_test_gets_the_base_url_or_the_health_path(api: FakeApi, tmp_path: Path) -> None:
    api.routes["/v1"] = lambda s: Reply({"name": "fake api"})
    api.route("/health", lambda s: Reply({"ok": True}))
    assert api.connector(tmp_path).test() == f"HTTP 200 from {api.base_url}"
    assert api.connector(tmp_path, health="/health").test() == f"HTTP 200 from {api.base_url}/health"
    api.routes["/v1"] = guarded
    with pytest.raises(PermissionDenied):
        api.connector(tmp_path, auth={"bearer": "nope-token-1"}).test()


def test_introspect_lists_the_configured_resources(api: FakeApi, tmp_path: Path) -> None:
    api.route("/customers", lambda s: Reply({"data": ROWS}))
    api.route("/empty", lambda s: Reply({"data": []}))
    tables = api.connector(tmp_path, resources=["customers", "empty"]).introspect()
    assert [t.name for t in tables] == ["customers", "empty"]
    assert [(c.name, c.type) for c in tables[0].columns][:2] == [("id", "BIGINT"), ("name", "VARCHAR")]
    assert tables[1].columns == ()
    assert api.connector(tmp_path).introspect() == []


def test_registered_and_never_writable(tmp_path: Path) -> None:
    assert Connector.registry["https"] is HttpConnector and Connector.registry["http"] is HttpConnector
    connector = HttpConnector(ConnectionConfig(name="api", url="https://x.test", writable=True), tmp_path)
    with pytest.raises(PermissionDenied, match="cannot be written to"):
        connector.ensure_writable("pipelines/p.yaml: steps[1]")


# ------------------------------------------------------------------ option validation


@pytest.mark.parametrize(
    ("options", "message", "hint"),
    [
        (
            {"paginate": {"style": "page", "page_parm": "p"}},
            "Unknown option 'paginate.page_parm'",
            "'page_param'",
        ),
        ({"paginate": {"style": "pages"}}, "Invalid value 'pages' for option 'paginate.style'", "'page'"),
        ({"recrods": "data"}, "Unknown option 'recrods'", "'records'"),
        ({"paginate": {"style": "cursor"}}, "needs cursor_path", None),
        ({"paginate": {"style": "page", "limit": 5}}, "'limit' belongs to style 'offset'", None),
    ],
)
def test_bad_read_options_are_spec_errors(
    api: FakeApi, tmp_path: Path, options: dict[str, Any], message: str, hint: str | None
) -> None:
    where = "pipelines/p.yaml: steps[0].extract.options"
    with pytest.raises(SpecError) as caught:
        api.connector(tmp_path).describe(ReadRequest(endpoint="/x", options=options), where)
    assert message in caught.value.message and caught.value.where == where
    assert hint is None or hint in (caught.value.hint or "")
    assert api.requests == []


def test_bad_connection_options_are_config_errors(api: FakeApi, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        api.connector(tmp_path, retyr={"tries": 2}).test()
    assert "Unknown option 'retyr' of connection 'api'" in caught.value.message
    assert caught.value.hint == "did you mean 'retry'?"
    with pytest.raises(ConfigError, match="exactly one of bearer, basic or header"):
        api.connector(tmp_path, auth={"bearer": "token-aaaa", "header": {"X": "y"}}).test()
    assert api.requests == []
