"""Which model a path names: a registry's current version, or an artifact directory itself.

What ``tag``, ``evaluate``, ``demo``, ``newstagger.load`` and the reloader accept as ``--model`` /
``--model-dir``. A registry's version is loaded with the version its folder is named after, so a
folder holding another version's manifest is refused (see ``registry``)."""

from __future__ import annotations

from pathlib import Path

from service.model.artifact import MODEL_FILE, LoadedModel, load_artifact
from service.model.errors import ArtifactError
from service.model.manifest import MANIFEST_FILE
from service.model.registry import ModelRegistry


def load_model(path: Path) -> LoadedModel:
    """Load the model ``path`` names: a registry's current version or an artifact directory."""
    return load_artifact(*resolve_model(path))


def resolve_model_path(path: Path) -> Path:
    """A registry's current artifact, or ``path`` itself if it is an artifact directory."""
    return resolve_model(path)[0]


def resolve_model(path: Path) -> tuple[Path, str]:
    """A registry's current artifact and its version, or ``path`` itself and "" (an artifact
    directory, which may be named anything)."""
    path = Path(path)
    if path.is_file():
        hint = f"; did you mean {path.parent}?" if path.name in (MANIFEST_FILE, MODEL_FILE) else ""
        raise ArtifactError(f"{path}: is a file, not a model directory (an artifact or a registry){hint}")
    if (path / MANIFEST_FILE).is_file():
        return path, ""
    registry = ModelRegistry(path)
    current = registry.current()
    if current is None:
        raise ArtifactError(
            f"no model in {path} — run `newstagger train` (or `newstagger models promote VERSION`)"
        )
    return registry.path(current), current
