"""JSON over HTTP on the standard library: a timeout per request, bounded retries, Retry-After.

`post_json` serves the LLM planner providers (POST a JSON body, get a JSON body back); `get_json`
serves the HTTP API connector (GET with a query string; the JSON body comes back with the response
headers, which carry `Link` pagination). Retries are for what may pass when tried again (429, 5xx,
a reset or refused connection: at most `tries` requests; a timed-out request is tried once more at
most), waiting as the server's `Retry-After` asks or else 1 s, 4 s, ... and never longer than
`max_delay`. Redirects are not followed, so credentials in the headers never travel to another
host. Errors here are plain transport facts (status, body, reason); callers turn them into
QueryForge errors with a failure class.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import __version__

log = logging.getLogger(__name__)

MAX_BODY = 20_000_000  # bytes of a response we are willing to hold
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpFailure(Exception):
    """A request did not give a usable answer. `url` never carries a query string or user info."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(message)


class HttpStatusError(HttpFailure):
    """The server answered with a non-2xx status (after retries, if the status was retryable)."""

    def __init__(self, url: str, status: int, body: str, retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after
        super().__init__(url, f"HTTP {status} from {url}")


class HttpTimeout(HttpFailure):
    """No answer within the timeout (after one more try)."""


class HttpUnreachable(HttpFailure):
    """The connection failed: refused, reset, name not resolved (after retries)."""


class HttpBadBody(HttpFailure):
    """A 2xx answer whose body is not JSON (or is too large).

    `snippet` is the start of the body and `content_type` its declared type, so callers can say
    what came instead (an HTML login page is the usual suspect); `too_large` marks a body over MAX_BODY.
    """

    def __init__(
        self, url: str, message: str, *, snippet: str = "", content_type: str = "", too_large: bool = False
    ) -> None:
        self.snippet = snippet
        self.content_type = content_type
        self.too_large = too_large
        super().__init__(url, message)


@dataclass(frozen=True)
class JsonResponse:
    """A decoded 2xx answer to `get_json`: header names are lower-case, repeated ones joined by ", "."""

    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 3
    backoff: tuple[float, ...] = (1.0, 4.0, 16.0)
    max_delay: float = 30.0
    timeout_tries: int = 2  # a request that timed out is tried once more, then fails

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        return min(self.backoff[min(attempt, len(self.backoff)) - 1], self.max_delay)


DEFAULT_POLICY = RetryPolicy()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def display_url(url: str) -> str:
    """The URL without user info, query or fragment (those may hold credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx becomes an HTTPError: API keys are not forwarded anywhere else


_OPENER = urllib.request.build_opener(_NoRedirect())


def _read(response: Any) -> bytes:
    data: bytes = response.read(MAX_BODY + 1)
    return data


def _exchange(
    request: Callable[[], urllib.request.Request],
    shown: str,
    *,
    timeout: float,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
) -> tuple[int, Any, bytes]:
    """Send `request()` (a fresh Request per attempt) with the retry policy; (status, headers, body) of a 2xx.

    Raises HttpStatusError, HttpTimeout or HttpUnreachable as `post_json` documents.
    """
    timeouts = 0
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        try:
            with _OPENER.open(request(), timeout=timeout) as response:
                return int(response.status), response.headers, _read(response)
        except urllib.error.HTTPError as exc:
            try:
                text = _read(exc).decode("utf-8", "replace") if exc.fp is not None else ""
            except (OSError, http.client.HTTPException):
                text = ""
            finally:
                exc.close()  # an HTTPError holds the response's socket
            retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            failure: HttpFailure = HttpStatusError(shown, exc.code, text, retry_after)
            if exc.code not in RETRY_STATUSES and exc.code < 500:
                raise failure from None
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                timeouts += 1
                failure = HttpTimeout(shown, f"no answer from {shown} within {timeout:g} s")
                if timeouts >= policy.timeout_tries:
                    raise failure from None
            else:
                failure = HttpUnreachable(shown, f"cannot reach {shown}: {reason}")
        if attempt >= policy.tries:
            raise failure
        wait = policy.delay(attempt, retry_after)
        log.info("%s; trying again in %.1f s (attempt %d of %d)", failure, wait, attempt + 1, policy.tries)
        sleep(wait)


def _check_scheme(url: str, shown: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise HttpUnreachable(shown, f"unsupported URL scheme '{scheme}' (use http or https)")


def _check_size(body: bytes, shown: str) -> None:
    if len(body) > MAX_BODY:
        raise HttpBadBody(shown, f"the answer from {shown} is larger than {MAX_BODY:,} bytes", too_large=True)


def post_json(
    url: str,
    payload: Any,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """POST `payload` as JSON and return the decoded JSON answer.

    Raises:
        HttpStatusError: a non-2xx answer (retryable statuses only after `policy.tries` requests).
        HttpTimeout: the request timed out `policy.timeout_tries` times.
        HttpUnreachable: the connection failed `policy.tries` times.
        HttpBadBody: the answer is not JSON.
    """
    shown = display_url(url)
    _check_scheme(url, shown)
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    all_headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"queryforge/{__version__}",
        **(headers or {}),
    }
    _, _, body = _exchange(
        lambda: urllib.request.Request(url, data=data, headers=all_headers, method="POST"),
        shown,
        timeout=timeout,
        policy=policy,
        sleep=sleep,
    )
    _check_size(body, shown)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpBadBody(shown, f"the answer from {shown} is not JSON ({exc})") from None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def with_query(url: str, params: Mapping[str, Any] | None) -> str:
    """`url` with `params` added to its query string (lists repeat the name; None values are left out)."""
    if not params:
        return url
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    for name, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs += [(name, _query_value(v)) for v in values if v is not None]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def _header_map(headers: Any) -> dict[str, str]:
    """Lower-cased header names; a repeated header (two Link lines) becomes one comma-joined value."""
    merged: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _decode_get(body: bytes, headers: Mapping[str, str], shown: str) -> Any:
    """The JSON of a GET answer; None for an empty body (204 No Content)."""
    _check_size(body, shown)
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpBadBody(
            shown,
            f"the answer from {shown} is not JSON ({exc})",
            snippet=body[:500].decode("utf-8", "replace"),
            content_type=headers.get("content-type", ""),
        ) from None


def get_json(
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> JsonResponse:
    """GET `url` (with `params` added to its query string) and return the decoded JSON and headers.

    Raises the same errors as `post_json`; an HttpBadBody here carries the start of the body.
    """
    full = with_query(url, params)
    shown = display_url(full)
    _check_scheme(full, shown)
    all_headers = {"Accept": "application/json", "User-Agent": f"queryforge/{__version__}", **(headers or {})}
    status, raw_headers, body = _exchange(
        lambda: urllib.request.Request(full, headers=all_headers, method="GET"),
        shown,
        timeout=timeout,
        policy=policy,
        sleep=sleep,
    )
    answer_headers = _header_map(raw_headers)
    return JsonResponse(status, answer_headers, _decode_get(body, answer_headers, shown))
