"""Secrets are masked in every form a driver may echo (defect 11 of issue 10).

A password holding `/`, `#`, `?`, `@` or `:` inside a connection URL is cut apart by the URL parser;
drivers then quote one piece ("Port could not be cast to integer value as 'LeakyHead77'"), which
masking the whole substituted URL never caught.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml

from queryforge.connectors.base import ConnectionConfig
from queryforge.connectors.registry import ConnectionSet
from queryforge.secrets import MASK, remember, scrub, secret_forms
from queryforge.workspace import Workspace
from tests.conftest import CliResult

# Each password puts a long piece after a delimiter the URL parser splits at.
PASSWORDS = [
    "Leaky/Head77#Frag99?Quux55",
    "Zq9x?LeakyHead77/Tail88#Endz0",
    "pw:LeakyHead77@xk:Wobble8",
    "ab#LeakyHead77",
]


def windows(secret: str, size: int = 4) -> set[str]:
    """Every fragment of `secret` of `size` characters: none of them may be shown."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


@pytest.mark.parametrize("password", PASSWORDS)
def test_every_form_and_every_url_piece_is_masked(password: str) -> None:
    remember(password)
    pieces = re.split(r"[/#?@:]", password)
    for shown in [password, quote(password), quote(password, safe=""), quote_plus(password), *pieces]:
        text = scrub(f"driver says: '{shown}' is wrong")
        if len(shown) >= 4:
            assert shown not in text and MASK in text


def test_a_whole_url_secret_masks_its_password_but_not_host_or_port() -> None:
    url = "postgresql://user:Sec/ret77#Hidden@db.example.com:5432/sales"
    forms = secret_forms(url)
    assert {url, "Sec/ret77#Hidden", "ret77", "Hidden", "Sec%2Fret77%23Hidden"} <= forms
    assert not {"5432", "postgresql", "db.example.com", "sales"} & forms


def test_short_pieces_are_not_masked() -> None:
    assert secret_forms("ab/cdefgh") >= {"cdefgh", "ab/cdefgh"}
    assert "ab" not in secret_forms("ab/cdefgh")


def test_connections_remember_the_env_secret_not_just_the_substituted_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QF_TEST_PW", "Opaque/Piece42#Other77")
    conns = ConnectionSet(
        {"db": ConnectionConfig("db", "postgresql://u:${env:QF_TEST_PW}@127.0.0.1:5432/db")}, tmp_path, "db"
    )
    conns.get("db")
    assert scrub("port 'Other77' and path '/Piece42'") == "port '***' and path '/***'"
    assert "127.0.0.1:5432" in scrub("server at 127.0.0.1:5432")  # the URL's other pieces are no secret
    conns.close()


# ---------------------------------------------------------------- end to end, through the CLI


def leaky_workspace(root: Path) -> Path:
    Workspace.init(root, bare=True).close()
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"]["src"] = {"url": "postgresql://qf_nobody:${env:QF_LEAKY_PW}@127.0.0.1:5432/qf_none"}
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "pipelines" / "copy.yaml").write_text(
        "name: copy\nsteps:\n"
        "  - id: src\n    extract: {connection: src, table: t}\n"
        "  - id: publish\n    load: {input: src, table: t}\n"
    )
    return root


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_fragment_of_a_url_password_reaches_output_or_the_run_record(
    qf: Callable[..., CliResult], tmp_path: Path, password: str
) -> None:
    ws = leaky_workspace(tmp_path / "ws")
    env = {"QF_LEAKY_PW": password}
    plain = qf("run", "copy", cwd=ws, env=env)
    as_json = qf("run", "copy", "--json", cwd=ws, env=env)
    tested = qf("connections", "test", "src", "--json", cwd=ws, env=env)
    assert plain.code == 2 and as_json.code == 2, (plain, as_json)  # a user error, never "internal"
    assert "Connection 'src'" in plain.stderr
    assert as_json.json()["error"]["message"].startswith("Connection 'src'")
    # The connection fails while the run is compiled, so no run may be recorded; whatever is, and
    # every file of the workspace (the metadata DB included), is searched.
    with Workspace(ws) as opened:
        stored = [json.dumps([r.error_message, r.result], default=str) for r in opened.list_runs()]
    on_disk = [p.read_bytes().decode("utf-8", "replace") for p in ws.rglob("*") if p.is_file()]
    for where, text in [
        ("stderr", plain.stderr + as_json.stderr + tested.stderr),
        ("stdout", plain.stdout + as_json.stdout + tested.stdout),
        ("run records", "\n".join(stored)),
        ("workspace files", "\n".join(on_disk)),
    ]:
        leaked = sorted(w for w in windows(password) if w in text)
        assert not leaked, f"{where} shows {leaked} of the password: {text[:2000]}"
