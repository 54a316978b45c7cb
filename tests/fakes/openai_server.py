"""A scripted LLM API on 127.0.0.1: a real HTTP server speaking OpenAI chat completions.

It answers each POST with the next scripted reply and records every request, so tests can drive
the real client code over real HTTP and then look at exactly what was sent:

    with FakeLLMServer() as server:
        server.script(chat(pipeline_json), Reply(status=401, body={"error": {...}}))
        ... QUERYFORGE_LLM_BASE_URL=server.base_url ...
        assert len(server.requests) == 2

`chat()` builds an OpenAI chat-completion answer (`refusal=` for OpenAI's own refusal field);
`anthropic_message()` and `gemini_response()` build the Anthropic and Gemini answer shapes, for the
same server. `Reply(delay=...)` answers late, to exercise the client's timeout. When the script runs out, the
server answers 400 "no scripted reply left" (not retried by clients, so a test fails loudly).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENDPOINTS = re.compile(r"^/(?:v1/chat/completions|v1/messages|v1beta/models/[^/]+:generateContent)$")


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer. A dict/list body is sent as JSON, a str as it is; `delay` seconds late."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, str | bytes):
            raw = self.body.encode() if isinstance(self.body, str) else self.body
            return raw, "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def chat(
    content: str | None, *, finish_reason: str = "stop", model: str = "fake-model", refusal: str | None = None
) -> Reply:
    """An OpenAI chat-completions answer whose message content is `content`.

    `refusal` sets the message's `refusal` field, as OpenAI does when a model refuses a structured
    output request (its content is then null).
    """
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    return Reply(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )


def anthropic_message(text: str) -> Reply:
    """An Anthropic Messages API answer with one text block."""
    return Reply(
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "fake-model",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
    )


def gemini_response(text: str) -> Reply:
    """A Gemini generateContent answer with one text part."""
    return Reply(
        {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}
            ],
            "modelVersion": "fake-model",
        }
    )


def api_error(status: int, message: str, **headers: str) -> Reply:
    """An OpenAI-style error answer."""
    return Reply({"error": {"message": message, "type": "fake_error", "code": status}}, status, headers)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        fake = self.server.fake
        request = Recorded("POST", self.path, dict(self.headers.items()), body)
        if not fake._ours(request):
            fake.stray.append(request)
            self.send_error(404, "not an LLM API endpoint of this fake")
            return
        reply = fake._record(request)
        if reply.delay:
            time.sleep(reply.delay)
        raw, content_type = reply.encoded()
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        try:
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test): nobody is left to answer

    def do_GET(self) -> None:
        self.send_error(404, "the fake LLM API only answers POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() waits for handler threads: nothing outlives the test
    fake: FakeLLMServer


class FakeLLMServer:
    """Start with `with FakeLLMServer() as server:`; `base_url` is the OpenAI-style base (…/v1)."""

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.stray: list[Recorded] = []  # requests that were not from QueryForge's client (answered 404)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeLLMServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses
    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def openai_env(self, api_key: str = "sk-test") -> dict[str, str]:
        """The environment that points QueryForge's OpenAI-compatible provider at this server."""
        return {
            "QUERYFORGE_LLM": "openai",
            "QUERYFORGE_LLM_BASE_URL": self.base_url,
            "QUERYFORGE_LLM_MODEL": "fake-model",
            "OPENAI_API_KEY": api_key,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    # -- the script
    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._replies)

    @staticmethod
    def _ours(request: Recorded) -> bool:
        """Only QueryForge's client gets scripted replies: another process's stray connection to a
        reused port (tests run in parallel) must not eat the script."""
        agent = request.header("User-Agent") or ""
        return agent.startswith("queryforge/") and bool(ENDPOINTS.match(request.path))

    def _record(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        return api_error(400, "fake LLM server: no scripted reply left")
