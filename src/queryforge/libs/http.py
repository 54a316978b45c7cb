"""JSON over HTTP on the standard library: a timeout per request, bounded retries, Retry-After.

Only what the LLM planner providers need: POST a JSON body, get a JSON body back. Retries are for
what may pass when tried again (429, 5xx, a reset or refused connection: at most `tries` requests;
a timed-out request is tried once more at most), waiting as the server's `Retry-After` asks or
else 1 s, 4 s, ... and never longer than `max_delay`. Redirects are not followed, so credentials in
the headers never travel to another host. Errors here are plain transport facts (status, body,
reason); callers turn them into QueryForge errors with a failure class.
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
from urllib.parse import urlsplit, urlunsplit

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
    """A 2xx answer whose body is not JSON (or is too large)."""


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
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise HttpUnreachable(shown, f"unsupported URL scheme '{scheme}' (use http or https)")
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    all_headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"queryforge/{__version__}",
        **(headers or {}),
    }
    timeouts = 0
    attempt = 0
    while True:
        attempt += 1
        request = urllib.request.Request(url, data=data, headers=all_headers, method="POST")
        retry_after: float | None = None
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                body = _read(response)
            break
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
    if len(body) > MAX_BODY:
        raise HttpBadBody(shown, f"the answer from {shown} is larger than {MAX_BODY:,} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpBadBody(shown, f"the answer from {shown} is not JSON ({exc})") from None
