"""`queryforge init`: a new workspace with config, example pipelines and a generated sample dataset."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from ..config import CONFIG_FILE, STATE_DIR, WorkspaceConfig
from ..errors import UserError

GITIGNORE = f"{STATE_DIR}/\n"


EXAMPLES = ("jaffle",)  # example projects: scaffold/examples/<name>/pipelines and their data


def create_workspace(folder: Path, *, bare: bool = False, example: str | None = None) -> None:
    """Create the workspace files; refuses to overwrite an existing workspace.

    `example` makes the workspace one of the example projects instead of the default examples."""
    if example is not None and example not in EXAMPLES:
        raise UserError(f"Unknown example '{example}'", hint=f"examples: {', '.join(EXAMPLES)}")
    if (folder / CONFIG_FILE).exists():
        raise UserError(
            f"{folder} is already a QueryForge workspace ({CONFIG_FILE} exists)",
            hint="choose another folder, or use the existing workspace",
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(
        WorkspaceConfig.default(folder.resolve().name or "queryforge").to_yaml()
    )
    (folder / ".gitignore").write_text(GITIGNORE)
    for sub in ("pipelines", "data", STATE_DIR):
        (folder / sub).mkdir(exist_ok=True)
    if bare:
        return
    if example == "jaffle":
        from .jaffle_data import write_jaffle_data

        with resources.as_file(resources.files(__package__) / "examples" / example / "pipelines") as src:
            shutil.copytree(src, folder / "pipelines", dirs_exist_ok=True)
        write_jaffle_data(folder / "data")
        return
    from .sample_data import write_sample_data

    examples = resources.files(__package__) / "pipelines"
    for item in examples.iterdir():
        if item.name.endswith(".yaml"):
            with resources.as_file(item) as path:
                shutil.copy(path, folder / "pipelines" / item.name)
    write_sample_data(folder / "data")
