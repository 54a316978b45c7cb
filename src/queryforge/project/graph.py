"""A folder of pipelines as one project: who reads whose output, in which order, and selections.

Edges come from `extract: {ref: other}` steps only (the data dependency); `after:` stays the event
trigger of queued runs. The graph is read from the raw YAML, so a project of hundreds of pipelines
is ordered without compiling any of them, and a broken file is reported where it is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, QueryForgeError, SpecError, did_you_mean
from ..spec.loader import PipelineSource, load_file


@dataclass(frozen=True)
class Node:
    name: str
    path: Path  # the pipeline file
    refs: tuple[str, ...]  # pipelines whose output it reads (names, without a step)
    tags: tuple[str, ...] = ()
    description: str | None = None
    needs: tuple[str, ...] = ()  # parameters without a default
    error: str | None = None  # the file could not be read; reported when the pipeline is used
    ephemeral: bool = False  # publishes nothing: inlined into the pipelines that ref it, never run alone
    source: PipelineSource | None = field(default=None, compare=False)  # parsed once, by scan

    def load(self) -> PipelineSource:
        """The parsed pipeline (a file that did not parse raises its error here, where it is used)."""
        return self.source if self.source is not None else load_file(self.path, display=shown(self.path))


def shown(path: Path) -> str:
    """A pipeline file as errors name it: relative to the current folder when under it."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def required_params(raw: Mapping[str, Any]) -> list[str]:
    """Parameters without a default: a pipeline with any cannot run (or compile) on its own."""
    declared = raw.get("params") or {}
    if not isinstance(declared, dict):
        return []
    return [
        str(name)
        for name, spec in declared.items()
        if (spec.get("default") if isinstance(spec, dict) else spec) is None
    ]


def ref_pipeline(ref: str) -> str:
    """`stg_orders.load_step` -> `stg_orders`."""
    return ref.split(".", 1)[0]


def _refs(raw: Mapping[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for step in raw.get("steps") or []:
        body = step.get("extract") if isinstance(step, dict) else None
        if isinstance(body, dict) and isinstance(body.get("ref"), str):
            name = ref_pipeline(body["ref"])
            if name not in out:
                out.append(name)
    return tuple(out)


@dataclass
class ProjectValidation:
    """What `validate` of a project found: the compiled plans, upstream first, and what it skipped."""

    plans: list[tuple[str, Any]] = field(default_factory=list)  # (pipeline, ExecutionPlan)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (pipeline, why)


class ProjectGraph:
    def __init__(self, nodes: Mapping[str, Node], root: Path | None = None) -> None:
        self.nodes = dict(nodes)
        self.root = root  # the workspace: `path:` selections are relative to it

    @classmethod
    def scan(cls, folder: Path) -> ProjectGraph:
        """Every pipeline under `folder` (sub-folders too), by its `name:`."""
        nodes: dict[str, Node] = {}
        for path in sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
            try:
                source = load_file(path, display=shown(path))
                raw = source.raw
            except QueryForgeError as exc:
                nodes.setdefault(path.stem, Node(path.stem, path, (), error=exc.render()))
                continue
            name = str(raw.get("name") or path.stem)
            if name in nodes:
                raise SpecError(
                    f"Two pipeline files are both named '{name}': {nodes[name].path} and {path}",
                    hint="pipeline names are unique within a project; rename one",
                )
            tags = raw.get("tags")
            tags = tags if isinstance(tags, list) else []
            desc = raw.get("description")
            nodes[name] = Node(
                name,
                path,
                _refs(raw),
                tuple(str(t) for t in tags),
                str(desc) if isinstance(desc, str) else None,
                tuple(required_params(raw)),
                source=source,
                ephemeral=raw.get("ephemeral") is True,
            )
        return cls(nodes, folder.parent)

    # ------------------------------------------------------------ checks and order
    def check(self) -> None:
        """Every ref names a pipeline of the project, and no pipeline reads its own output through others."""
        for node in self.nodes.values():
            for ref in node.refs:
                if ref not in self.nodes:
                    raise SpecError(
                        f"Pipeline '{node.name}' reads 'ref: {ref}', which is not a pipeline of this project",
                        where=str(node.path),
                        hint=did_you_mean(ref, self.nodes) or "check the name after 'ref:'",
                    )
        try:
            TopologicalSorter({n.name: n.refs for n in self.nodes.values()}).prepare()
        except CycleError as exc:
            cycle = " -> ".join(reversed(exc.args[1]))
            raise SpecError(
                f"Pipelines read each other's output in a cycle: {cycle}",
                hint="a pipeline cannot depend on its own output; remove one of these refs",
            ) from None

    def order(self, names: Iterable[str] | None = None) -> list[str]:
        """Upstream first; ties in name order, so the order is the same on every machine."""
        self.check()
        wanted = set(self.nodes if names is None else names)
        sorter = TopologicalSorter(
            {n: [r for r in self.nodes[n].refs if r in wanted] for n in sorted(wanted)}
        )
        sorter.prepare()
        out: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            out.extend(ready)
            sorter.done(*ready)
        return out

    def upstream(self, name: str) -> set[str]:
        return self._walk(name, lambda n: self.nodes[n].refs)

    def downstream(self, name: str) -> set[str]:
        return self._walk(name, lambda n: tuple(o for o, node in self.nodes.items() if n in node.refs))

    def _walk(self, start: str, step: Any) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for other in step(todo.pop()):
                if other not in seen and other in self.nodes:
                    seen.add(other)
                    todo.append(other)
        return seen

    # ------------------------------------------------------------ selection
    def select(self, expression: str) -> list[str]:
        """Pipelines a dbt-style selection names, upstream first.

        Terms are separated by spaces or commas and united: `name`, `name+` (and everything
        downstream), `+name` (and everything upstream), `+name+`, `tag:daily`, `path:pipelines/marts`.
        """
        terms = [t for t in expression.replace(",", " ").split() if t]
        if not terms:
            raise SpecError(
                "The selection is empty", hint="e.g. --select stg_orders+  or  --select tag:daily"
            )
        chosen: set[str] = set()
        for term in terms:
            chosen |= self._term(term)
        return self.order(chosen)

    def _term(self, term: str) -> set[str]:
        if term.startswith("tag:"):
            tag = term[4:]
            found = {n.name for n in self.nodes.values() if tag in n.tags}
            if not found:
                tags = sorted({t for n in self.nodes.values() for t in n.tags})
                raise NotFoundError(
                    f"No pipeline has the tag '{tag}'",
                    hint=did_you_mean(tag, tags)
                    or (f"tags in use: {', '.join(tags)}" if tags else "no tags yet"),
                )
            return found
        if term.startswith("path:"):
            base = Path(term[5:])
            folder = (
                self.root / base if self.root is not None and not base.is_absolute() else base
            ).resolve()
            found = {
                n.name
                for n in self.nodes.values()
                if n.path.resolve() == folder or n.path.resolve().is_relative_to(folder)
            }
            if not found:
                raise NotFoundError(
                    f"No pipeline file under '{term[5:]}'", hint="paths are relative to the workspace"
                )
            return found
        up, down = term.startswith("+"), term.endswith("+")
        name = term.strip("+")
        if name not in self.nodes:
            raise NotFoundError(
                f"No pipeline named '{name}' in this project",
                hint=did_you_mean(name, self.nodes) or "queryforge lineage lists what there is",
            )
        out = {name}
        if up:
            out |= self.upstream(name)
        if down:
            out |= self.downstream(name)
        return out
