"""Run planner evaluation cases in-process and compare the published tables with expected DuckDB queries.

A case is one request (plus optional setup requests) and an expectation:

* `{table: T, sql: S}`: the ask must succeed and table T must hold exactly the rows of S, a DuckDB query
  run with the evaluation data folder as its file search path (SQLite tables appear as
  `<file stem>__<table>`, e.g. `legacy__accounts`).
* `{status: failed, absent: [...], unchanged: [...]}`: the ask must not succeed (a question or a refusal);
  the `absent` tables must not exist afterwards and the `unchanged` tables (made by the setup) must hold
  the same rows as before the ask.
* `{status: needs_input, ...}`: as `failed`, but the ask must end in a clarifying question.

For both kinds of must-not-publish expectation, the warehouse must also hold no table that was not
there before the ask: a question or refusal that still published something is a failure.

The comparison semantics are those of the shared `run_eval.py`: rows compared as multisets, column
names and order ignored, numbers rounded to 2 places, timestamps at midnight shown as dates. They are
re-implemented here (`norm`, `as_multiset`) because ../shared is not part of the repository.

Each case runs in a fresh copy of a template workspace (bare, with the data in data/) made once per
`Harness`. A planner exception is a failed case with its message, never a crashed evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA_DIR = REPO / "tests" / "fixtures" / "planner" / "data"
FAMILIES = HERE / "families.yaml"
MUST_ASK = HERE / "must_ask.yaml"
DEV_CASES = HERE / "dev_cases.yaml"
# held-out sets, scored only on request (README "Held-out set"): <name>.yaml and <name>_must_ask.yaml
HELD_OUT = ("holdout", "holdout2", "holdout3")
ROW_CAP = 1_000_000  # far above any table the data can produce
NOT_PUBLISHED = {"needs_input", "failed"}  # the two must-not-publish expectations
KINDS = {  # phrasing kinds of the family suites (README, "Shapes and kinds")
    "plain",
    "synonym",
    "passive",
    "typo",
    "lowercase",
    "long-winded",
    "british",
    "terse",
    "question",
}


# ---------------------------------------------------------------- comparison (as run_eval.py)
def norm(v: Any) -> Any:
    """Normalise one value so that equal data compares equal across engines and JSON."""
    if v is None:
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float, Decimal)):
        return f"{round(float(v), 2):.2f}"
    if isinstance(v, datetime):
        s = v.isoformat(sep=" ")
        return s[:10] if s.endswith("00:00:00") else s
    if isinstance(v, date):
        return v.isoformat()
    s = str(v).strip()
    try:
        return f"{round(float(s), 2):.2f}"
    except ValueError:
        pass
    s = s.replace("T", " ") if len(s) >= 19 and s[4] == "-" and s[10] == "T" else s
    if len(s) >= 19 and s[4] == "-" and s[10] == " ":
        s = s[:19]
        return s[:10] if s.endswith("00:00:00") else s
    return s


def as_multiset(rows: Iterable[Iterable[Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(sorted(("\0" if x is None else x) for x in map(norm, r))) for r in rows)


def describe_difference(got: list[Any], want: list[Any]) -> str:
    a, b = as_multiset(got), as_multiset(want)
    extra, missing = list((a - b).keys())[:1], list((b - a).keys())[:1]
    return f"rows differ: got {len(got)}, want {len(want)}; e.g. extra {extra} missing {missing}"


# ---------------------------------------------------------------- expected rows
class Expected:
    """Expected rows of DuckDB SQL over the data folder, cached per query."""

    def __init__(self, data_dir: Path = DATA_DIR) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._cache: dict[str, list[tuple[Any, ...]]] = {}

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            con = duckdb.connect()
            con.execute("SET file_search_path = ?", [str(self.data_dir)])
            for db in sorted(self.data_dir.glob("*.sqlite")):
                src = sqlite3.connect(db)
                try:
                    tables = [t for (t,) in src.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                    for table in tables:
                        cur = src.execute(f'SELECT * FROM "{table}"')
                        cols = [d[0] for d in cur.description]
                        rows = cur.fetchall()
                        marks = "(" + ",".join(["?"] * len(cols)) + ")"
                        con.execute(
                            f'CREATE TABLE "{db.stem}__{table}" AS SELECT * FROM '
                            f"(VALUES {','.join([marks] * len(rows))}) t({','.join(cols)})",
                            [x for r in rows for x in r],
                        )
                finally:
                    src.close()
            self._con = con
        return self._con

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if sql not in self._cache:
            self._cache[sql] = self._connection().execute(sql).fetchall()
        return self._cache[sql]

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


# ---------------------------------------------------------------- cases
@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    prompt: str
    expect: dict[str, Any]
    suite: str  # family | must_ask | dev | <held-out name> | <held-out name>_must_ask
    setup: tuple[str, ...] = ()
    family: str = ""
    shape: str = ""
    kind: str = ""
    category: str = ""
    novel: bool = False  # held-out family whose task or shape families.yaml does not have

    @property
    def task(self) -> str:
        """`novel` or `seen` (a task families.yaml also has): the held-out set's extra breakdown."""
        return "novel" if self.novel else "seen"

    @property
    def must_not_publish(self) -> bool:
        return self.expect.get("status") in NOT_PUBLISHED


@dataclasses.dataclass
class Result:
    case: Case
    ok: bool
    detail: str
    status: str | None = None  # the ask's own status (succeeded, needs_input, failed, ...)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        c = self.case
        return {
            "id": c.id,
            "suite": c.suite,
            "family": c.family,
            "shape": c.shape,
            "kind": c.kind,
            "category": c.category,
            "prompt": c.prompt,
            "ok": self.ok,
            "status": self.status,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], case: Case) -> Result:
        return cls(case, data["ok"], data["detail"], data.get("status"), data.get("seconds", 0.0))


def _yaml(path: Path) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def load_families(path: Path = FAMILIES) -> list[dict[str, Any]]:
    return list(_yaml(path)["families"])


def family_cases(family: dict[str, Any], suite: str = "family") -> list[Case]:
    out = []
    for i, p in enumerate(family["phrasings"], 1):
        out.append(
            Case(
                id=f"{family['id']}#{i}",
                prompt=p["text"],
                expect=family["expect"],
                suite=suite,
                setup=tuple(family.get("setup") or ()),
                family=family["id"],
                shape=family["shape"],
                kind=p["kind"],
                novel=bool(family.get("novel", False)),
            )
        )
    return out


def load_family_cases(path: Path = FAMILIES, suite: str = "family") -> list[Case]:
    return [c for f in load_families(path) for c in family_cases(f, suite)]


def load_must_ask(path: Path = MUST_ASK, suite: str = "must_ask") -> list[Case]:
    return [
        Case(
            id=c["id"],
            prompt=c["prompt"],
            expect=c["expect"],
            suite=suite,
            setup=tuple(c.get("setup") or ()),
            category=c.get("category", ""),
        )
        for c in _yaml(path)["cases"]
    ]


def held_out_paths(name: str) -> tuple[Path, Path]:
    """The families file and the must-ask file of the held-out set `name`."""
    return HERE / f"{name}.yaml", HERE / f"{name}_must_ask.yaml"


def load_held_out_cases(name: str) -> list[Case]:
    """A held-out set's families (suite `name`) and must-ask requests (suite `<name>_must_ask`)."""
    families, must_ask = held_out_paths(name)
    return load_family_cases(families, name) + load_must_ask(must_ask, f"{name}_must_ask")


def load_dev_cases(path: Path = DEV_CASES) -> list[Case]:
    return [
        Case(
            id=c["id"],
            prompt=c["prompt"],
            expect=c["expect"],
            suite="dev",
            setup=tuple(c.get("setup") or ()),
        )
        for c in _yaml(path)["cases"]
    ]


# ---------------------------------------------------------------- running
class Harness:
    """Runs cases in fresh copies of one template workspace. Not thread-safe; one per process."""

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        data_dir: Path = DATA_DIR,
        provider: str | None = "rules",
    ) -> None:
        self._own_tmp = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="qf-planner-eval-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir)
        self.provider = provider
        self.expected = Expected(data_dir)
        self._template: Path | None = None
        self._count = 0

    # -- workspaces
    def template(self) -> Path:
        """A bare workspace with the data in data/, made once; its state folder is left empty."""
        if self._template is None:
            from queryforge.catalog.cache import CatalogCache
            from queryforge.planner.catalog import file_sources
            from queryforge.workspace import Workspace

            root = self.work_dir / "template"
            if root.exists():
                shutil.rmtree(root)
            Workspace.init(root, bare=True).close()
            shutil.rmtree(root / ".queryforge")
            (root / ".queryforge").mkdir()
            data = root / "data"
            data.mkdir(exist_ok=True)
            for f in sorted(self.data_dir.iterdir()):
                if f.is_file():
                    shutil.copyfile(f, data / f.name)
            # The data files' planner profiles, made once: every copy keeps the files' mtimes, so each
            # case's ask finds them in its catalog cache instead of profiling the same files again.
            file_sources(root, "data", CatalogCache(root / ".queryforge" / "catalog"))
            self._template = root
        return self._template

    def _fresh(self) -> Path:
        self._count += 1
        target = self.work_dir / f"case-{self._count:04d}"
        shutil.copytree(self.template(), target)
        return target

    def close(self) -> None:
        self.expected.close()
        if self._own_tmp:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one case
    def run(self, case: Case) -> Result:
        start = time.perf_counter()
        folder = None
        try:
            folder = self._fresh()
            ok, detail, status = self._run_in(case, folder)
        except Exception as exc:  # the harness itself must never crash the evaluation
            ok, detail, status = False, f"harness error {type(exc).__name__}: {exc}", None
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        return Result(case, ok, detail, status, time.perf_counter() - start)

    def run_many(self, cases: Iterable[Case]) -> list[Result]:
        return [self.run(c) for c in cases]

    def _ask(self, ws: Any, request: str) -> tuple[Any, str | None]:
        """The ask's outcome, or (None, reason) when the planner raised."""
        try:
            outcome = ws.ask(request, consent=lambda _o: True, provider=self.provider)
        except Exception as exc:  # a crash of the tool under test is a failed case with its message
            where = traceback.extract_tb(exc.__traceback__)[-1]
            return None, f"crash {type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
        return outcome, None

    def _run_in(self, case: Case, folder: Path) -> tuple[bool, str, str | None]:
        from queryforge.workspace import Workspace

        ws = Workspace(folder)
        try:
            for prompt in case.setup:
                outcome, crash = self._ask(ws, prompt)
                if crash or outcome.status != "succeeded":
                    why = crash or _outcome_text(outcome)
                    return False, f"setup {prompt!r} failed: {why}", None
            before = self._snapshot(ws) if case.must_not_publish else {}
            outcome, crash = self._ask(ws, case.prompt)
            if crash:
                return False, crash, None
            status = outcome.status
            if case.must_not_publish:
                return (*self._check_not_published(case, ws, outcome, before), status)
            return (*self._check_table(case, ws, outcome), status)
        finally:
            ws.close()

    # -- checks
    def _tables(self, ws: Any) -> set[str]:
        entry = ws.catalog(ws.config.target, refresh=True)[0]
        return {t.name.lower() for t in entry.tables}

    def _rows(self, ws: Any, table: str) -> list[tuple[Any, ...]]:
        result = ws.query(f'SELECT * FROM "{table}"', limit=ROW_CAP)
        return list(result.rows)

    def _snapshot(self, ws: Any) -> dict[str, Counter[tuple[Any, ...]]]:
        return {t: as_multiset(self._rows(ws, t)) for t in sorted(self._tables(ws))}

    def _check_not_published(
        self, case: Case, ws: Any, outcome: Any, before: dict[str, Counter[tuple[Any, ...]]]
    ) -> tuple[bool, str]:
        exp = case.expect
        status = outcome.status
        if status == "succeeded" or outcome.published:
            names = ", ".join(t.table for t in outcome.published) or "?"
            return False, f"published {names} (status {status}) instead of asking or refusing"
        if exp["status"] == "needs_input" and status != "needs_input":
            return False, f"expected a clarifying question, got status {status!r}: {_outcome_text(outcome)}"
        if status not in NOT_PUBLISHED:
            return False, f"expected a question or refusal, got status {status!r}"
        after = self._tables(ws)
        present = [t for t in exp.get("absent", []) if t.lower() in after]
        if present:
            return False, f"table(s) {present} exist after a {status} ask"
        new = sorted(after - set(before))
        if new:
            return False, f"new table(s) {new} appeared after a {status} ask"
        for t in exp.get("unchanged", []):
            if t.lower() not in before:
                return False, f"setup did not create {t}"
            if t.lower() not in after:
                return False, f"table {t} disappeared"
            if as_multiset(self._rows(ws, t)) != before[t.lower()]:
                return False, f"table {t} changed"
        for t, rows in before.items():  # no table may change, named or not
            if t in after and as_multiset(self._rows(ws, t)) != rows:
                return False, f"table {t} changed"
        return True, f"{status}: {_question_text(outcome)}"

    def _check_table(self, case: Case, ws: Any, outcome: Any) -> tuple[bool, str]:
        exp = case.expect
        if outcome.status != "succeeded":
            return False, f"status {outcome.status!r}: {_outcome_text(outcome)}"
        table = exp["table"]
        try:
            got = self._rows(ws, table)
        except Exception as exc:
            published = ", ".join(t.table for t in outcome.published) or "nothing"
            return False, f"cannot read {table} (published {published}): {type(exc).__name__}: {exc}"
        want = self.expected.rows(exp["sql"])
        if as_multiset(got) == as_multiset(want):
            return True, f"{len(got)} rows match"
        return False, describe_difference(got, want)


# ---------------------------------------------------------------- results shared by pytest-xdist workers
def shared_results(
    key: str, cases: list[Case], harness: Harness, shared: Path, *, wait_s: float = 900.0
) -> list[Result]:
    """The results of `cases`, run once per test run by whichever worker claims `key` first.

    `shared` is a folder every worker sees; the results are stored there as `<key>.json`. A worker that
    finds the key claimed waits up to `wait_s` for the results, then runs the cases itself.
    """
    done = shared / f"{key}.json"
    claim = shared / f"{key}.claim"

    def read() -> list[Result]:
        data = json.loads(done.read_text())
        return [Result.from_dict(d, c) for d, c in zip(data, cases, strict=True)]

    if done.exists():
        return read()
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:  # another worker is running it: wait for its results
        deadline = time.monotonic() + wait_s
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if done.exists():
            return read()
    results = harness.run_many(cases)
    tmp = done.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps([r.as_dict() for r in results]))
    os.replace(tmp, done)
    return results


def _outcome_text(outcome: Any) -> str:
    if outcome is None:
        return ""
    parts = []
    question = getattr(outcome, "question", None)
    if question is not None:
        parts.append(f"question: {getattr(question, 'message', question)}")
    error = getattr(outcome, "error", None)
    if error is not None:
        parts.append(f"error: {getattr(error, 'message', error)}")
    for a in (getattr(outcome, "attempts", None) or [])[-1:]:
        if getattr(a, "error", None):
            parts.append(f"attempt: {a.error}")
    text = "; ".join(parts) or (getattr(outcome, "reading", None) or "")
    return text[:300]


def _question_text(outcome: Any) -> str:
    return _outcome_text(outcome)[:160]
