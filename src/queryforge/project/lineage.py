"""The project graph around one pipeline, as text, Mermaid, Graphviz dot or JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .graph import ProjectGraph


@dataclass(frozen=True)
class Lineage:
    focus: str | None  # the pipeline asked about; None: the whole project
    nodes: tuple[str, ...]  # upstream first
    edges: tuple[tuple[str, str], ...]  # (upstream, downstream): downstream reads upstream's output
    upstream: tuple[str, ...] = ()
    downstream: tuple[str, ...] = ()

    @classmethod
    def of(cls, graph: ProjectGraph, focus: str | None = None) -> Lineage:
        if focus is None:
            names = set(graph.nodes)
            up: set[str] = set()
            down: set[str] = set()
        else:
            graph.select(focus)  # an unknown name is refused with a did-you-mean
            up, down = graph.upstream(focus), graph.downstream(focus)
            names = {focus} | up | down
        order = graph.order(names)
        edges = tuple((r, n) for n in order for r in graph.nodes[n].refs if r in names)
        return cls(
            focus,
            tuple(order),
            edges,
            tuple(o for o in order if o in up),
            tuple(o for o in order if o in down),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.focus,
            "nodes": list(self.nodes),
            "edges": [{"from": a, "to": b} for a, b in self.edges],
            "upstream": list(self.upstream),
            "downstream": list(self.downstream),
        }

    def mermaid(self) -> str:
        lines = ["flowchart LR"]
        lines += [f"  {n}[{n}]" for n in self.nodes]
        lines += [f"  {a} --> {b}" for a, b in self.edges]
        if self.focus:
            lines.append(f"  style {self.focus} stroke-width:3px")
        return "\n".join(lines)

    def dot(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;"]
        lines += [f'  "{n}"{" [penwidth=3]" if n == self.focus else ""};' for n in self.nodes]
        lines += [f'  "{a}" -> "{b}";' for a, b in self.edges]
        return "\n".join([*lines, "}"])

    def text(self) -> str:
        """Each pipeline on its own line with what it reads, upstream first."""
        reads = {n: [a for a, b in self.edges if b == n] for n in self.nodes}
        out = []
        for n in self.nodes:
            mark = "*" if n == self.focus else " "
            source = f"  <- {', '.join(reads[n])}" if reads[n] else ""
            out.append(f"{mark} {n}{source}")
        return "\n".join(out)
