"""The LLM path as a user meets it: questions, refusals, provider errors, configuration, value hints.

Every test runs the installed `queryforge ask` in a subprocess against a real HTTP server on
127.0.0.1 speaking the OpenAI chat-completions protocol (tests/fakes/openai_server.py), so the real
client code, the CLI's JSON contract and its human output are what is checked -- and the server's
record of each request shows exactly what left the machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.workspace import Workspace
from tests.conftest import CliResult
from tests.fakes.openai_server import FakeLLMServer, Recorded, Reply, api_error, chat

API_KEY = "sk-replies-do-not-print-5151"
FILE_KEY = "sk-from-the-file-reference-6262"
# Personal values of a low-cardinality column: they must never reach a model.
EMAILS = ("ann@example.org", "bob@example.org", "cy@example.org")
PHONES = ("+33 1 23 45 67 89", "+49 30 1234 5678")

# `customer_email` is personal by its name, `callback` by its values (phone numbers).
ORDERS_CSV = f"""\
order_id,country,status,customer_email,callback,amount
1,FR,shipped,{EMAILS[0]},{PHONES[0]},120.50
2,DE,shipped,{EMAILS[1]},{PHONES[1]},80.00
3,FR,cancelled,{EMAILS[2]},{PHONES[0]},35.25
4,ES,shipped,{EMAILS[0]},{PHONES[1]},300.00
5,FR,pending,{EMAILS[1]},{PHONES[0]},12.00
"""

REQUEST = "Orders from France into french_orders"
FRENCH = {
    "name": "french_orders",
    "steps": [
        {"id": "orders", "extract": {"path": "data/orders.csv"}},
        {"id": "french", "filter": {"input": "orders", "where": "country = 'FR'"}},
        {"id": "load", "load": {"input": "french", "table": "french_orders", "mode": "replace"}},
    ],
}
READING = "orders.csv -> rows where country is 'FR' (France) -> new table french_orders"
QUESTION = "Which “France” do you mean: the country column, or orders shipped to a French address?"
CANDIDATES = ["rows where country = 'FR'", "rows whose shipping address is in France"]
REFUSAL = "I can’t help with deleting every customer table — that would destroy data you did not name."


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake
        for request in fake.requests:  # whatever the test did, no personal value left the machine
            for value in (*EMAILS, *PHONES):
                assert value not in request.text, f"{value!r} was sent to the model"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    (root / "data" / "orders.csv").write_text(ORDERS_CSV)
    return root


@pytest.fixture
def ask(qf: Callable[..., CliResult], server: FakeLLMServer, ws: Path) -> Callable[..., CliResult]:
    """`queryforge ask REQUEST --workspace ws [options]` with the fake server as the OpenAI API."""

    def run(*options: str, request: str = REQUEST, env: dict[str, str] | None = None) -> CliResult:
        return qf(
            "ask",
            request,
            "--workspace",
            str(ws),
            *options,
            cwd=ws,
            env=env if env is not None else server.openai_env(API_KEY),
        )

    return run


def reply(value: dict[str, Any]) -> Reply:
    return chat(json.dumps(value, ensure_ascii=False))


def catalog_of(request: Recorded) -> Any:
    """The decoded <catalog> section of a drafting request."""
    user = request.json()["messages"][-1]["content"]
    [found] = re.findall(r"<catalog>\n(.*?)\n</catalog>", user, re.S)
    return json.loads(found)


def runs_of(ws: Path) -> list[Any]:
    with Workspace(ws) as opened:
        return list(opened.list_runs())


def warehouse_tables(ws: Path) -> list[Any]:
    path = ws / ".queryforge" / "warehouse.duckdb"
    if not path.exists():
        return []
    with closing(duckdb.connect(str(path), read_only=True)) as con:
        return con.sql("SELECT table_schema, table_name FROM information_schema.tables").fetchall()


def clean(result: CliResult) -> None:
    """No traceback and no key, on either stream."""
    both = result.stdout + result.stderr
    assert "Traceback" not in both
    assert API_KEY not in both and FILE_KEY not in both


# ---------------------------------------------------------------- a question back


def test_a_question_from_the_model_reaches_a_script_as_needs_input(
    ask: Callable[..., CliResult], server: FakeLLMServer, ws: Path
) -> None:
    server.script(reply({"question": QUESTION, "candidates": CANDIDATES}))

    result = ask("--json")

    assert result.code == 2, result.stdout + result.stderr
    out = result.json()
    assert out["status"] == "needs_input"
    assert out["ask_id"]
    assert out["question"] == QUESTION  # verbatim, typographic quotes and all
    assert out["candidates"] == CANDIDATES
    assert out["pipeline"] is None and out["attempts"] == 0 and out["run_id"] is None
    assert len(server.requests) == 1  # a question is an answer: it is not sent back as invalid
    assert runs_of(ws) == []
    clean(result)


def test_a_question_from_the_model_is_shown_to_a_person_with_its_candidates(
    ask: Callable[..., CliResult], server: FakeLLMServer, ws: Path
) -> None:
    server.script(reply({"question": QUESTION, "candidates": CANDIDATES}))

    result = ask("--commit", "--yes")  # --yes never turns a question into a guess

    assert result.code == 2
    assert f"Question: {QUESTION}" in result.stderr
    for candidate in CANDIDATES:
        assert f"- {candidate}" in result.stderr
    assert "Nothing was drafted or run" in result.stderr
    assert "Drafted pipeline" not in result.stdout
    assert runs_of(ws) == []
    clean(result)


# ---------------------------------------------------------------- a refusal

REFUSALS = {
    "json_refusal": reply({"refusal": REFUSAL}),
    "openai_message_refusal": chat(None, refusal=REFUSAL),
}


@pytest.mark.parametrize("answer", list(REFUSALS.values()), ids=list(REFUSALS))
def test_a_refusal_reaches_the_user_verbatim_and_nothing_runs(
    ask: Callable[..., CliResult], server: FakeLLMServer, ws: Path, answer: Reply
) -> None:
    server.script(answer, answer)

    as_json = ask("--commit", "--yes", "--json", request="Delete every customer table")
    plain = ask("--commit", "--yes", request="Delete every customer table")

    assert as_json.code == 2 and plain.code == 2
    out = as_json.json()
    assert out["status"] == "needs_input" and out["ask_id"]
    assert out["question"] == REFUSAL
    assert out["error"]["class"] == "VALIDATION_FAILED"
    assert "schema" not in json.dumps(out).lower()  # never parsed as a pipeline and rejected
    assert out["pipeline"] is None and out["published"] == []
    assert f"Refused: {REFUSAL}" in plain.stderr
    assert "Drafted pipeline" not in plain.stdout
    assert len(server.requests) == 2  # one per command: a refusal is not argued with
    assert runs_of(ws) == []
    assert warehouse_tables(ws) == []
    clean(as_json)
    clean(plain)


# ---------------------------------------------------------------- provider errors keep the contract

TIMEOUT_ENV = {"QUERYFORGE_LLM_TIMEOUT": "0.3"}
PROVIDER_ERRORS = {
    "401": ([api_error(401, "Incorrect API key provided")], {}, 2, "PERMISSION_DENIED", "HTTP 401"),
    "500": (
        [api_error(500, "boom", **{"Retry-After": "0"})] * 3,
        {},
        3,
        "TRANSIENT",
        "HTTP 500 after 3 tries",
    ),
    "timeout": ([Reply(chat("{}").body, delay=1.5)] * 2, TIMEOUT_ENV, 3, "TIMEOUT", "did not answer in time"),
    "garbage": ([Reply("<html>502 bad gateway</html>")], {}, 3, "MALFORMED_RESPONSE", "not JSON"),
}


@pytest.mark.parametrize(
    ("replies", "env", "code", "failure_class", "message"),
    list(PROVIDER_ERRORS.values()),
    ids=list(PROVIDER_ERRORS),
)
def test_provider_errors_keep_the_json_contract(
    ask: Callable[..., CliResult],
    server: FakeLLMServer,
    ws: Path,
    replies: list[Reply],
    env: dict[str, str],
    code: int,
    failure_class: str,
    message: str,
) -> None:
    server.script(*replies)

    result = ask("--commit", "--yes", "--json", env={**server.openai_env(API_KEY), **env})

    assert result.code == code, result.stdout + result.stderr
    out = result.json()
    assert out["status"] == "failed"
    assert out["ask_id"] and out["request"] == REQUEST
    assert out["error"]["class"] == failure_class
    assert message in out["error"]["message"]
    assert out["error"]["hint"]
    assert out["published"] == [] and out["attempts"] == 0
    assert runs_of(ws) == []
    clean(result)


def test_a_provider_error_is_one_paragraph_for_a_person(
    ask: Callable[..., CliResult], server: FakeLLMServer
) -> None:
    server.script(api_error(401, "Incorrect API key provided"))

    result = ask("--commit", "--yes")

    assert result.code == 2
    assert "Error: The openai API refused the credentials (HTTP 401)" in result.stderr
    assert "Hint: check OPENAI_API_KEY" in result.stderr
    clean(result)


# ---------------------------------------------------------------- configuration in queryforge.yaml


def configure(ws: Path, planner: str) -> None:
    config = ws / "queryforge.yaml"
    config.write_text(config.read_text() + planner)


def file_env(**extra: str) -> dict[str, str]:
    """An environment without QUERYFORGE_LLM* settings (set to empty: unset for the provider)."""
    return {
        "QUERYFORGE_LLM": "",
        "QUERYFORGE_LLM_BASE_URL": "",
        "QUERYFORGE_LLM_MODEL": "",
        "QUERYFORGE_LLM_TIMEOUT": "",
        "OPENAI_API_KEY": "",
        "TEAM_LLM_KEY": FILE_KEY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **extra,
    }


def test_the_planner_section_of_queryforge_yaml_configures_the_llm(
    ask: Callable[..., CliResult], server: FakeLLMServer, ws: Path
) -> None:
    configure(
        ws,
        f"planner:\n  provider: openai\n  model: model-from-file\n  base_url: {server.base_url}\n"
        "  timeout: 30\n  api_key: ${env:TEAM_LLM_KEY}\n",
    )
    server.script(reply({"pipeline": FRENCH, "reading": READING}))

    result = ask("--commit", "--yes", "--json", env=file_env())

    assert result.code == 0, result.stdout + result.stderr
    out = result.json()
    assert out["status"] == "succeeded"
    assert out["reading"] == READING
    [request] = server.requests
    assert request.json()["model"] == "model-from-file"
    assert request.header("Authorization") == f"Bearer {FILE_KEY}"
    with closing(duckdb.connect(str(ws / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        assert con.sql("SELECT order_id FROM french_orders ORDER BY 1").fetchall() == [(1,), (3,), (5,)]
    clean(result)


def test_environment_variables_win_over_the_file(
    ask: Callable[..., CliResult], server: FakeLLMServer, ws: Path
) -> None:
    configure(
        ws,
        "planner:\n  provider: openai\n  model: model-from-file\n"
        "  base_url: http://127.0.0.1:9/v1\n  api_key: ${env:TEAM_LLM_KEY}\n",
    )
    server.script(reply({"question": QUESTION, "candidates": CANDIDATES}))

    result = ask(
        "--json",
        env=file_env(QUERYFORGE_LLM_BASE_URL=server.base_url, QUERYFORGE_LLM_MODEL="model-from-env"),
    )

    assert result.json()["status"] == "needs_input", result.stdout + result.stderr
    [request] = server.requests  # the file's base URL (port 9) was never tried
    assert request.json()["model"] == "model-from-env"
    assert request.header("Authorization") == f"Bearer {FILE_KEY}"  # the file's key reference
    # --provider wins over both: the offline planner drafts without asking the server
    offline = ask("--json", "--provider", "rules", request="Load data/orders.csv into copied_orders")
    assert offline.code != 3 and "openai" not in offline.stdout, offline.stdout + offline.stderr
    assert len(server.requests) == 1


BAD_SECTIONS = {
    "literal_key": ("  api_key: sk-literal-key-7373\n", "planner.api_key", "${env:", "sk-literal-key-7373"),
    "unknown_key": ("  modle: gpt-4o\n", "planner.modle", "did you mean 'model'", None),
    "bad_timeout": ("  timeout: -5\n", "planner.timeout", "positive number", None),
    "bad_url": ("  base_url: ftp://example.org\n", "planner.base_url", "http(s) URL", None),
}


@pytest.mark.parametrize(
    ("line", "setting", "hint", "secret"), list(BAD_SECTIONS.values()), ids=list(BAD_SECTIONS)
)
def test_an_invalid_planner_section_is_one_paragraph_with_its_line(
    ask: Callable[..., CliResult],
    ws: Path,
    line: str,
    setting: str,
    hint: str,
    secret: str | None,
) -> None:
    config = ws / "queryforge.yaml"
    configure(ws, "planner:\n  provider: openai\n" + line)
    at = len(config.read_text().splitlines())

    result = ask("--json", env=file_env())

    assert result.code == 2
    error = result.json()["error"]
    assert error["class"] == "VALIDATION_FAILED"
    assert f"Invalid setting '{setting}' in queryforge.yaml" in error["message"]
    assert error["where"] == f"{config.resolve()}:{at}"
    assert hint in error["hint"] or hint in error["message"]
    if secret is not None:
        assert secret not in result.stdout + result.stderr
    clean(result)


def test_an_unknown_provider_in_the_file_names_its_line(ask: Callable[..., CliResult], ws: Path) -> None:
    config = ws / "queryforge.yaml"
    configure(ws, "planner:\n  provider: opnai\n")
    at = len(config.read_text().splitlines())

    result = ask("--json", env=file_env())

    assert result.code == 2
    error = result.json()["error"]
    assert error["message"] == "Unknown planner provider 'opnai'"
    assert error["where"] == f"{config.resolve()}:{at}"
    assert error["hint"] == "did you mean 'openai'?"


# ---------------------------------------------------------------- value hints


def test_value_hints_reach_the_model_and_personal_values_never_do(
    ask: Callable[..., CliResult], server: FakeLLMServer, ws: Path
) -> None:
    server.script(reply({"pipeline": FRENCH, "reading": READING}))

    result = ask("--commit", "--yes")

    assert result.code == 0, result.stdout + result.stderr
    assert f"Understood: {READING}" in result.stdout
    [request] = server.requests
    [source] = catalog_of(request)["sources"]
    # spelled as the data spells them, so "France" can become 'FR'
    assert source["values"]["country"] == ["DE", "ES", "FR"]
    assert source["values"]["status"] == ["cancelled", "pending", "shipped"]
    # the e-mail (by its name) and phone (by its values) columns are known by name and type only
    assert set(source["values"]) == {"country", "status"}
    assert ["customer_email", "VARCHAR"] in source["columns"]
    for value in (*EMAILS, *PHONES):
        assert value not in request.text
        assert json.dumps(value)[1:-1] not in request.text  # nor JSON-escaped
    clean(result)


def test_a_reply_with_two_answers_is_sent_back_once(
    ask: Callable[..., CliResult], server: FakeLLMServer
) -> None:
    server.script(
        reply({"pipeline": FRENCH, "refusal": REFUSAL}), reply({"pipeline": FRENCH, "reading": READING})
    )

    result = ask("--commit", "--yes", "--json")

    assert result.code == 0, result.stdout + result.stderr
    assert result.json()["reading"] == READING
    second = server.requests[1].json()["messages"][-1]["content"]
    assert 'exactly one of \\"pipeline\\", \\"question\\" or \\"refusal\\"' in second


# ---------------------------------------------------------------- the other vendors' refusal signals


@pytest.mark.parametrize(
    ("provider", "key_env", "answer", "shown"),
    [
        (
            "anthropic",
            "ANTHROPIC_API_KEY",
            Reply(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": "fake-model",
                    "content": [{"type": "text", "text": REFUSAL}],
                    "stop_reason": "refusal",
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }
            ),
            REFUSAL,
        ),
        (
            "gemini",
            "GEMINI_API_KEY",
            Reply({"promptFeedback": {"blockReason": "SAFETY"}}),
            "The gemini API blocked the request (SAFETY)",
        ),
    ],
    ids=["anthropic_stop_reason", "gemini_block_reason"],
)
def test_other_vendors_refusals_are_refusals_too(
    monkeypatch: pytest.MonkeyPatch,
    server: FakeLLMServer,
    ws: Path,
    provider: str,
    key_env: str,
    answer: Reply,
    shown: str,
) -> None:
    for name, value in {
        "QUERYFORGE_LLM": provider,
        "QUERYFORGE_LLM_BASE_URL": server.root_url,
        "QUERYFORGE_LLM_MODEL": "fake-model",
        key_env: API_KEY,
        "NO_PROXY": "127.0.0.1,localhost",
    }.items():
        monkeypatch.setenv(name, value)
    server.script(answer)

    with Workspace(ws) as opened:
        outcome = opened.ask("Delete every customer table", consent=lambda _: True)

    assert outcome.status == "needs_input"
    assert outcome.question is not None and outcome.question.refusal
    assert outcome.question.message == shown
    assert outcome.attempts == [] and len(server.requests) == 1
