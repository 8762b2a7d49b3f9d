"""ModelRegistry: model versions side by side in a directory, and an atomic ``current`` pointer.

Layout (works on a shared volume: plain files, renames only)::

    ROOT/versions/<version>/   one artifact per version (written atomically by save_artifact)
    ROOT/current               the served version's name, replaced with os.replace (atomic)
    ROOT/history               one line per promotion: "<utc time> <version>", for rollback

A crash between writing a version and switching the pointer leaves the old ``current`` in
place and the new version merely unpromoted: the registry is always consistent.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from service.core.errors import ArtifactError
from service.model.artifact import MANIFEST_FILE, Manifest, load_artifact, read_manifest

CURRENT = "current"
HISTORY = "history"
VERSIONS = "versions"


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS

    def versions(self) -> list[str]:
        """Every complete version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        found = [
            p
            for p in self.versions_dir.iterdir()
            if (p / MANIFEST_FILE).is_file() and not p.name.startswith(".")
        ]
        return [p.name for p in sorted(found, key=lambda p: (read_manifest(p).created_at, p.name))]

    def path(self, version: str) -> Path:
        path = self.versions_dir / version
        if "/" in version or version.startswith(".") or not (path / MANIFEST_FILE).is_file():
            raise ArtifactError(f"no version {version!r} in {self.root} (see `newstagger models list`)")
        return path

    def manifest(self, version: str) -> Manifest:
        return read_manifest(self.path(version))

    def current(self) -> str | None:
        try:
            name = (self.root / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def current_path(self) -> Path | None:
        version = self.current()
        return None if version is None else self.path(version)

    def history(self) -> list[str]:
        try:
            lines = (self.root / HISTORY).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [line.split()[-1] for line in lines if line.strip()]

    def new_version_dir(self, version: str) -> Path:
        """Where a new artifact for ``version`` should be written."""
        return self.versions_dir / version

    def promote(self, version: str, verify: bool = True) -> None:
        """Make ``version`` current, atomically. With ``verify`` the artifact is loaded first."""
        path = self.path(version)
        if verify:
            load_artifact(path)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".current.", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / CURRENT)
        with (self.root / HISTORY).open("a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {version}\n")

    def rollback(self) -> str:
        """Promote the version that was current before the current one."""
        current = self.current()
        previous = [v for v in self.history() if v != current]
        if not previous:
            raise ArtifactError(f"nothing to roll back to in {self.root}")
        self.promote(previous[-1])
        return previous[-1]


def resolve_model_path(path: Path) -> Path:
    """A registry's current artifact, or ``path`` itself if it is an artifact directory."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    registry = ModelRegistry(path)
    current = registry.current_path()
    if current is None:
        raise ArtifactError(
            f"no model in {path} — run `newstagger train` (or `newstagger models promote VERSION`)"
        )
    return current
