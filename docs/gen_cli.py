"""Generate docs/cli.md from the `--help` of every `queryforge` command.

Run it after changing a command, an option or a help text:

    .venv/bin/python docs/gen_cli.py           # rewrite docs/cli.md
    .venv/bin/python docs/gen_cli.py --check   # exit 1 if docs/cli.md is out of date

`tests/unit/test_docs.py` fails while docs/cli.md differs from what this script writes.

The help texts are rendered in a child process with a fixed environment (100 columns, no colour,
no CI variables), so the result does not depend on the terminal it is run from.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
TARGET = DOCS / "cli.md"
WIDTH = 100
# Only these variables reach the child: colour, width and CI settings would change the output.
PASSED_ENV = ("PATH", "HOME", "PYTHONPATH", "SYSTEMROOT", "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV")

HEADER = """\
<!--
  GENERATED FILE - do not edit. It is written by docs/gen_cli.py from the `--help` of every
  command; regenerate it with `.venv/bin/python docs/gen_cli.py`. tests/unit/test_docs.py fails
  when it is out of date.
-->

# CLI reference

`queryforge` and its short alias `qf` are the same program. Every command that touches a workspace
finds it in the current folder or a parent (or takes `--workspace DIR`), prints one JSON document
with `--json`, shows tracebacks only with `--debug`, and exits with 0 (ok), 1 (an error-severity
data check failed), 2 (a user error: bad spec, unknown name, refused commit) or 3 (an internal
error). The guides explain the commands in context: [pipelines](pipelines.md), [runs](runs.md),
[checks](checks.md), [connectors](connectors.md), [planner](planner.md),
[configuration](configuration.md).

This page is generated from the program's own help, so it is always the exact current interface.
"""


def command_paths() -> list[tuple[str, ...]]:
    """Every command and command group, as argument paths: (), ('init',), ..., ('runs', 'list')."""
    import typer

    from queryforge.cli.app import app

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        # A group's sub-commands, in the order they are defined (which is the order --help shows).
        for name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


def render() -> str:
    """The whole page, rendered in this process (call it through `generate()`)."""
    from typer.testing import CliRunner

    from queryforge.cli.app import app

    runner = CliRunner()
    parts = [HEADER]
    for path in command_paths():
        result = runner.invoke(app, [*path, "--help"], prog_name="queryforge")
        if result.exit_code != 0:
            raise RuntimeError(f"'queryforge {' '.join(path)} --help' exited {result.exit_code}")
        lines = [line.rstrip() for line in result.output.splitlines()]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        title = " ".join(("queryforge", *path))
        parts.append(f"## `{title}`\n\n```text\n" + "\n".join(lines) + "\n```\n")
    return "\n".join(parts)


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    env.update(
        COLUMNS=str(WIDTH),
        TERMINAL_WIDTH=str(WIDTH),
        LINES="50",
        NO_COLOR="1",
        TERM="dumb",
        PYTHONUTF8="1",
        PYTHONIOENCODING="utf-8",
    )
    return env


def generate() -> str:
    """The page docs/cli.md should contain now."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--render"],
        env=child_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rendering the CLI help failed:\n{result.stderr}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/cli.md from the CLI's --help.")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is out of date")
    parser.add_argument("--render", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        sys.stdout.write(render())
        return 0
    text = generate()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if args.check:
        if current != text:
            print(f"{TARGET} is out of date: run python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET}")
    else:
        print(f"{TARGET} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
