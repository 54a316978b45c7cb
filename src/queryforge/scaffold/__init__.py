"""`queryforge init`: a new workspace with config, example pipelines and a generated sample dataset."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from ..config import CONFIG_FILE, STATE_DIR, WorkspaceConfig
from ..errors import UserError

GITIGNORE = f"{STATE_DIR}/\n"


def create_workspace(folder: Path, *, bare: bool = False) -> None:
    """Create the workspace files; refuses to overwrite an existing workspace."""
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
    from .sample_data import write_sample_data

    examples = resources.files(__package__) / "pipelines"
    for item in examples.iterdir():
        if item.name.endswith(".yaml"):
            with resources.as_file(item) as path:
                shutil.copy(path, folder / "pipelines" / item.name)
    write_sample_data(folder / "data")
