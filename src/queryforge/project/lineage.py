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
    ephemeral: tuple[str, ...] = ()  # pipelines inlined into their readers: no table, no run

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
            tuple(o for o in order if graph.nodes[o].ephemeral),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.focus,
            "nodes": list(self.nodes),
            "edges": [{"from": a, "to": b} for a, b in self.edges],
            "upstream": list(self.upstream),
            "downstream": list(self.downstream),
            "ephemeral": list(self.ephemeral),
        }

    def mermaid(self) -> str:
        lines = ["flowchart LR"]
        # An ephemeral pipeline is drawn as a rounded node with a dashed border: a query, not a table.
        lines += [f"  {n}([{n}])" if n in self.ephemeral else f"  {n}[{n}]" for n in self.nodes]
        lines += [f"  {a} --> {b}" for a, b in self.edges]
        lines += [f"  style {n} stroke-dasharray: 5 5" for n in self.ephemeral if n != self.focus]
        if self.focus:
            dashed = ",stroke-dasharray: 5 5" if self.focus in self.ephemeral else ""
            lines.append(f"  style {self.focus} stroke-width:3px{dashed}")
        return "\n".join(lines)

    def dot(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;"]
        for n in self.nodes:
            attrs = ["penwidth=3"] if n == self.focus else []
            attrs += ["style=dashed"] if n in self.ephemeral else []
            shown = " [" + ", ".join(attrs) + "]" if attrs else ""
            lines.append(f'  "{n}"{shown};')
        lines += [f'  "{a}" -> "{b}";' for a, b in self.edges]
        return "\n".join([*lines, "}"])

    def text(self) -> str:
        """Each pipeline on its own line with what it reads, upstream first."""
        reads = {n: [a for a, b in self.edges if b == n] for n in self.nodes}
        out = []
        for n in self.nodes:
            mark = "*" if n == self.focus else " "
            source = f"  <- {', '.join(reads[n])}" if reads[n] else ""
            kind = " (ephemeral)" if n in self.ephemeral else ""
            out.append(f"{mark} {n}{kind}{source}")
        return "\n".join(out)
