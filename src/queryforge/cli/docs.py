"""`queryforge docs build|serve`: the project's documentation as a static site."""

from __future__ import annotations

import functools
import http.server
import os
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from . import render
from .app import DebugOpt, JsonOpt, WorkspaceOpt, app, handled, open_workspace

docs_app = typer.Typer(
    help="Document the project: a static site of pipelines, tables, columns, checks, lineage and runs.",
    no_args_is_help=True,
)
app.add_typer(docs_app, name="docs")

OutOpt = Annotated[
    Path | None, typer.Option("--out", help="folder of the site (default: build/docs in the workspace)")
]


@docs_app.command("build")
def build(
    out: OutOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False
) -> None:
    """Write the site: index.html (search, lineage graph, pipelines, tables), a page per pipeline and
    per published table, docs.json. Open index.html in a browser; no server is needed."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        docs, folder, files = ws.docs_build(out)
        broken = [p.name for p in docs.pipelines if p.error]
        if as_json:
            render.print_json({"out": str(folder), "files": len(files), **docs.to_json()})
            return
        render.out.print(
            f"Documented {len(docs.pipelines)} pipelines and {len(docs.tables)} tables: "
            f"{len(files)} files in {os.path.relpath(folder)}",
            highlight=False,
        )
        if broken:
            render.err.print(
                f"{len(broken)} pipeline(s) do not compile and are documented with their error: "
                + ", ".join(broken),
                highlight=False,
            )
        render.out.print(f"Open {os.path.relpath(folder / 'index.html')}, or: queryforge docs serve")


@docs_app.command("serve")
def serve(
    out: OutOpt = None,
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1")] = 8080,
    rebuild: Annotated[bool, typer.Option("--build/--no-build", help="build the site first")] = True,
    workspace: WorkspaceOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Build the site, then serve it on http://127.0.0.1:PORT until Ctrl-C (a convenience: the
    site is plain files)."""
    with handled(False, debug):
        with open_workspace(workspace) as ws:
            folder = out if out is not None else ws.root / "build" / "docs"
            if rebuild:
                ws.docs_build(folder)
            elif not (folder / "index.html").is_file():
                raise UserError(f"No site in {folder}", hint="run: queryforge docs build")
        handler = functools.partial(_QuietHandler, directory=str(folder))
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError as exc:
            raise UserError(
                f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}", hint="choose another with --port"
            ) from None
        render.out.print(
            f"Serving {folder} on http://127.0.0.1:{server.server_port}/ (Ctrl-C stops)",
            highlight=False,
            soft_wrap=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return
