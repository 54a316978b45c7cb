"""End-to-end: hostile or broken input files end in one clear `Error:` paragraph with exit code 2.

Issue 10, defects 10 and 13: YAML alias bombs, duplicate keys, deep nesting, files that are not
UTF-8, broken gzip, a 60 MB line, ragged CSV rows and an LLM that answers in prose. Each case runs
the real CLI and checks the exit code, that the file (and line) is named, and that nothing says
"Internal error" or shows a traceback.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.e2e.test_bad_input import error_paragraph, write_pipeline
from tests.fakes.openai_server import FakeLLMServer, chat
from tests.unit.test_spec import BILLION_LAUGHS

Qf = Callable[..., Any]


def bad(r: Any) -> str:
    """The one error paragraph of a user error, which is never an internal one."""
    para = error_paragraph(r)
    assert "Internal error" not in r.stderr + r.stdout
    return para


def extract_pipeline(ws: Path, name: str, path: str, options: str = "") -> str:
    """pipelines/<name>.yaml: extract `path` (with `options`), load it into table <name>."""
    extra = f", options: {options}" if options else ""
    return write_pipeline(
        ws,
        name,
        f"""
        name: {name}
        steps:
          - id: src
            extract: {{path: {path}{extra}}}
          - id: load
            load: {{input: src, table: {name}, mode: replace}}
        """,
    )


def table_rows(ws: Path, table: str) -> list[tuple[Any, ...]]:
    with closing(duckdb.connect(str(ws / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return con.sql(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def tables(ws: Path) -> list[str]:
    """Every table of the warehouse, staging included (none when it was never created)."""
    path = ws / ".queryforge" / "warehouse.duckdb"
    if not path.exists():
        return []
    with closing(duckdb.connect(str(path), read_only=True)) as con:
        return [name for (name,) in con.sql("SELECT table_name FROM information_schema.tables").fetchall()]


# ---------------------------------------------------------------- YAML


def test_an_alias_bomb_pipeline_fails_fast(qf: Qf, demo: Path) -> None:
    shown = write_pipeline(demo, "bomb", BILLION_LAUGHS)
    # the harness's timeout bounds it; before, validate grew to 6 GB (memory is asserted in test_spec)
    r = qf("validate", shown, cwd=demo, timeout=60)
    para = bad(r)
    assert "YAML anchors and aliases are not allowed in pipelines" in para
    assert f"({shown}:2)" in para


def test_a_duplicate_key_names_the_key_and_the_second_line(qf: Qf, demo: Path) -> None:
    shown = write_pipeline(
        demo,
        "dup",
        """
        name: dup
        steps:
          - id: src
            extract: {path: data/products.csv}
          - id: load
            load: {input: src, table: dup_t, mode: replace}
            load: {input: src, table: other_t, mode: append}
        """,
    )
    para = bad(qf("validate", shown, cwd=demo))
    assert "Duplicate key 'load' (first written on line 6)" in para
    assert f"({shown}:7)" in para


def test_deeply_nested_yaml_is_a_user_error(qf: Qf, demo: Path) -> None:
    shown = write_pipeline(demo, "deep", "name: deep\nsteps: " + "[" * 5000 + "]" * 5000 + "\n")
    para = bad(qf("validate", shown, cwd=demo))
    assert "YAML nested more than 64 levels deep" in para
    assert f"({shown}:2)" in para


def test_a_broken_file_in_pipelines_does_not_break_running_another(qf: Qf, demo: Path) -> None:
    """Running looks at every pipeline's `after:`; a deep file there used to crash every run."""
    write_pipeline(demo, "deep", "name: deep\nsteps: " + "[" * 5000 + "]" * 5000 + "\n")
    good = extract_pipeline(demo, "good_t", "data/products.csv")
    r = qf("run", good, cwd=demo)
    assert r.code == 0, r.stderr
    assert len(table_rows(demo, "good_t")) == 100


def test_a_pipeline_that_is_not_utf8_names_file_and_line(qf: Qf, demo: Path) -> None:
    path = demo / "pipelines" / "latin.yaml"
    path.write_bytes("name: latin\ndescription: café\nsteps: []\n".encode("latin-1"))
    para = bad(qf("validate", "pipelines/latin.yaml", cwd=demo))
    assert "File is not valid UTF-8 (byte 0xe9 on line 2) (pipelines/latin.yaml:2)" in para
    assert "save the file as UTF-8" in para


@pytest.mark.parametrize(
    ("raw", "message", "line"),
    [
        ("name: w\n# café\n".encode("latin-1"), "File is not valid UTF-8 (byte 0xe9 on line 2)", 2),
        (b"name: w\nname: v\n", "Duplicate key 'name' (first written on line 1)", 2),
        (b"name: &n w\nengine: *n\n", "YAML anchors and aliases are not allowed in queryforge.yaml", 1),
    ],
    ids=["latin-1", "duplicate-key", "alias"],
)
def test_a_bad_queryforge_yaml_names_file_and_line(
    qf: Qf, demo: Path, raw: bytes, message: str, line: int
) -> None:
    (demo / "queryforge.yaml").write_bytes(raw)
    para = bad(qf("validate", "pipelines/daily_sales.yaml", cwd=demo))
    assert message in para
    assert f"queryforge.yaml:{line})" in para


# ---------------------------------------------------------------- CSV input


def test_a_csv_that_is_not_utf8_is_a_user_error_with_the_encoding_hint(qf: Qf, demo: Path) -> None:
    (demo / "data" / "latin.csv").write_bytes("id,name\n1,café\n2,naïve\n".encode("latin-1"))
    shown = extract_pipeline(demo, "latin_t", "data/latin.csv")
    for command in ("validate", "run"):
        para = bad(qf(command, shown, cwd=demo))
        assert "latin.csv' is not valid UTF-8" in para
        assert f"{shown}:4, step 'src'" in para
        assert "options: {encoding: latin-1}" in para
    # ... and the hint works.
    fixed = extract_pipeline(demo, "latin_t", "data/latin.csv", "{encoding: latin-1}")
    assert qf("run", fixed, cwd=demo).code == 0
    assert table_rows(demo, "latin_t") == [(1, "café"), (2, "naïve")]


def test_a_non_utf8_byte_after_the_sniffed_sample_fails_the_run_clearly(qf: Qf, demo: Path) -> None:
    rows = "id,name\n" + "".join(f"{i},n{i}\n" for i in range(60_000))
    (demo / "data" / "late.csv").write_bytes(rows.encode() + "60000,café\n".encode("latin-1"))
    shown = extract_pipeline(demo, "late_t", "data/late.csv")
    assert qf("validate", shown, cwd=demo).code == 0  # the sniffer reads a sample only
    para = bad(qf("run", shown, cwd=demo))
    assert "late.csv' is not valid UTF-8" in para and "encoding: latin-1" in para


_GZIP = gzip.compress(("id,name\n" + "".join(f"{i},name{i}\n" for i in range(200_000))).encode())
_TRUNCATED_GZIP = _GZIP[: len(_GZIP) // 2]


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"id,name\n1,a\n", "Input is not a GZIP stream"),
        (_TRUNCATED_GZIP, "Unexpected end of GZIP stream"),
    ],
    ids=["not-gzip", "truncated"],
)
def test_a_corrupt_gzip_csv_is_a_user_error(qf: Qf, demo: Path, content: bytes, detail: str) -> None:
    (demo / "data" / "broken.csv.gz").write_bytes(content)
    shown = extract_pipeline(demo, "gz_t", "data/broken.csv.gz")
    para = bad(qf("validate", shown, cwd=demo))
    assert f"broken.csv.gz' is not a readable gzip file ({detail})" in para
    assert f"{shown}:4, step 'src'" in para


@pytest.fixture
def long_line_csv(demo: Path) -> Iterator[Path]:
    path = demo / "data" / "long.csv"
    with path.open("w") as f:
        f.write("id,payload\n1," + "x" * 60_000_000 + "\n2,y\n")
    yield path
    path.unlink()


def test_a_60_mb_line_is_a_user_error_with_the_max_line_size_hint(
    qf: Qf, demo: Path, long_line_csv: Path
) -> None:
    shown = extract_pipeline(demo, "long_t", "data/long.csv")
    r = qf("validate", shown, cwd=demo)
    para = bad(r)
    assert "long.csv' is longer than DuckDB's maximum line size of 2,000,000 bytes" in para
    assert "max_line_size" in para
    assert len(r.stderr) < 2_000  # DuckDB quotes the whole line in its own message
    fixed = extract_pipeline(demo, "long_t", "data/long.csv", "{max_line_size: 100000000}")
    assert qf("run", fixed, cwd=demo).code == 0


def test_ragged_rows_sniffed_as_one_column_are_refused(qf: Qf, demo: Path) -> None:
    (demo / "data" / "ragged.csv").write_text("id,name,amount\n1,a,3\n2,b\n3,c,4,5,6\n4\n")
    shown = extract_pipeline(demo, "ragged_t", "data/ragged.csv")
    for command in ("validate", "run"):
        para = bad(qf(command, shown, cwd=demo))
        assert "ragged.csv' was read as one single column, though its first line contains ','" in para
        assert f"{shown}:4, step 'src'" in para
        assert "options: {delim: ',', null_padding: true}" in para
    assert "ragged_t" not in tables(demo)  # nothing was audited or published
    fixed = extract_pipeline(demo, "ragged_t", "data/ragged.csv", "{delim: ',', null_padding: true}")
    assert qf("run", fixed, cwd=demo).code == 0
    assert table_rows(demo, "ragged_t") == [
        (1, "a", 3, None, None),
        (2, "b", None, None, None),
        (3, "c", 4, 5, 6),
        (4, None, None, None, None),
    ]


def test_a_real_one_column_csv_is_still_fine(qf: Qf, demo: Path) -> None:
    (demo / "data" / "names.csv").write_text("name\nAda\nGrace\n")
    shown = extract_pipeline(demo, "names_t", "data/names.csv")
    assert qf("run", shown, cwd=demo).code == 0
    assert table_rows(demo, "names_t") == [("Ada",), ("Grace",)]


# ---------------------------------------------------------------- LLM replies


@pytest.fixture
def llm(demo: Path) -> Iterator[tuple[FakeLLMServer, dict[str, str]]]:
    with FakeLLMServer() as server:
        yield server, server.openai_env("sk-test-bad-input")


def ask(qf: Qf, demo: Path, env: dict[str, str]) -> Any:
    return qf(
        "ask", "Delete all rows from customers", "--workspace", str(demo), cwd=demo, env=env, timeout=60
    )


def test_an_llm_that_answers_in_prose_is_reported_as_declining(
    qf: Qf, demo: Path, llm: tuple[FakeLLMServer, dict[str, str]]
) -> None:
    server, env = llm
    refusal = "I'm sorry, but I can't help with that: deleting every row would destroy data."
    server.script(chat(refusal), chat(refusal))
    para = bad(ask(qf, demo, env))
    assert "The openai model answered in prose instead of a pipeline, twice; it may have declined" in para
    assert "deleting every row" in para
    assert "schema" not in para and "Missing required field" not in para
    assert len(server.requests) == 2


def test_an_llm_alias_bomb_reply_is_refused_without_running_out_of_memory(
    qf: Qf, demo: Path, llm: tuple[FakeLLMServer, dict[str, str]]
) -> None:
    server, env = llm
    server.script(chat(BILLION_LAUGHS), chat(BILLION_LAUGHS))
    r = ask(qf, demo, env)  # the harness's timeout bounds it; before, the reply ran out of memory
    assert r.code == 3, r.stderr  # MALFORMED_RESPONSE: the provider's fault, not the user's
    assert "YAML anchors and aliases are not allowed in planner replies" in r.stderr
    assert "Internal error" not in r.stderr and "Traceback" not in r.stderr
