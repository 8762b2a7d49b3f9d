"""ModelRegistry: model versions side by side in a directory, and an atomic ``current`` pointer.

Layout (works on a shared volume: plain files, renames only)::

    ROOT/versions/<version>/   one artifact per version (written atomically by save_artifact),
                               named after the version its manifest records (see below)
    ROOT/versions/.<name>...   staging of a version being written (ignored; see ``leftovers``)
    ROOT/current               the served version's name, replaced with os.replace (atomic)
    ROOT/history               one line per pointer change: "<utc time> promote|rollback <version>"

Consistency: a version directory appears whole (rename) before ``current`` can name it, and
``current`` is only ever replaced by rename, so a crash at any point leaves either the old
pointer (the new version merely unpromoted) or the new one — never a half-written file.
``history`` is written after the pointer; a crash in between loses one history line, which
``rollback`` tolerates because it reads the served version from ``current``, not from history.

A version folder must be named after the version its manifest records (``versions/v3`` holding
a v2 would be served as v2): otherwise it is listed as broken, not promoted and not loaded.

Concurrent promotions and rollbacks take turns: each holds the registry's lock (``ROOT/.lock``,
see ``registry_lock``) from reading what is current to writing the pointer and history. A
promotion decided against a given current version (``train``'s quality gate) passes it as
``if_current``: checked under the lock, so it never lands over a version it was not compared with.

Rollback walks back: promotions push onto a stack and each rollback pops one, so
v1 → v2 → v3, rollback, rollback serves v1 (not v2 and back to v3).

Permissions: a registry is read by serving processes that often run as another user than the one
that trained (the image's uid 10001, with the registry mounted read-only), so whatever the umask
of the writer, the entries a promotion or rollback makes servable are readable by every user:
the root, ``versions/``, the version and ``current``/``history`` (directories 0755, files 0644;
nothing group- or world-writable). Entries owned by another user keep their modes. Keep a
registry private by where it lives (a volume only the pods mount, a parent directory closed to
others), not by its modes.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from service.model.artifact import MODEL_FILE, LoadedModel, load_artifact
from service.model.errors import ArtifactError, CurrentChanged, HeadsChanged
from service.model.manifest import MANIFEST_FILE, Manifest, check_recorded_version, lost_heads, read_manifest
from service.model.registry_lock import LOCK_TIMEOUT_SECONDS, registry_lock

CURRENT = "current"
HISTORY = "history"
VERSIONS = "versions"
#: A version's name: a plain directory name (no path separator, not hidden), as train writes it.
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DIR_MODE = 0o755  # readable by the serving user, whoever wrote it (see the module docstring)
FILE_MODE = 0o644


class _Any(Enum):
    CURRENT = "any"  # ``promote(if_current=...)``'s default: whatever is current


@dataclass(frozen=True)
class HistoryEntry:
    time: str
    action: str  # "promote" | "rollback"
    version: str


class ModelRegistry:
    def __init__(self, root: Path, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout  # how long a promote or rollback waits for another one

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS

    def _version_dirs(self) -> list[Path]:
        if not self.versions_dir.is_dir():
            return []
        return [p for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def versions(self) -> list[str]:
        """Every version with a readable manifest that records its folder's name, oldest first."""
        found: list[tuple[str, str]] = []
        for p in self._version_dirs():
            try:
                found.append((_read_version(p).created_at, p.name))
            except ArtifactError:
                continue
        return [name for _, name in sorted(found)]

    def broken(self) -> dict[str, str]:
        """Version directories whose manifest is missing, unreadable or records another version,
        with the reason."""
        out = {}
        for p in self._version_dirs():
            try:
                _read_version(p)
            except ArtifactError as exc:
                out[p.name] = str(exc)
        return out

    def leftovers(self) -> list[Path]:
        """Hidden staging directories left by interrupted writes (safe to delete when no
        ``newstagger train`` is running against this registry)."""
        if not self.versions_dir.is_dir():
            return []
        stale = [p for p in self.versions_dir.iterdir() if p.name.startswith(".")]
        stale += [p for p in self.root.glob(".current.*")]
        return sorted(stale)

    def path(self, version: str) -> Path:
        """The directory of ``version``. It must resolve inside ``versions/`` (a version that is a
        symlink to, or holds symlinks to, files elsewhere is refused)."""
        path = self.versions_dir / version
        if not version or "/" in version or version.startswith(".") or not (path / MANIFEST_FILE).is_file():
            raise ArtifactError(f"no version {version!r} in {self.root} (see `newstagger models list`)")
        try:
            inside = self.versions_dir.resolve()
            resolved = path.resolve()
            files = [resolved / MANIFEST_FILE, resolved / MODEL_FILE]
            outside = resolved.parent != inside or any(f.resolve().parent != resolved for f in files)
        except RuntimeError as exc:  # a symlink loop (Python 3.11 raises this, not OSError)
            raise ArtifactError(f"version {version!r} in {self.root}: {exc}") from exc
        if outside:
            raise ArtifactError(f"version {version!r} in {self.root} resolves outside the registry: refused")
        return path

    def manifest(self, version: str) -> Manifest:
        return _read_version(self.path(version))

    def load(self, version: str) -> LoadedModel:
        return load_artifact(self.path(version), version)

    def current(self) -> str | None:
        try:
            name = (self.root / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise ArtifactError(f"{self.root}: is a file, not a model registry (a directory)") from None
        return name or None

    def current_path(self) -> Path | None:
        version = self.current()
        return None if version is None else self.path(version)

    def entries(self) -> list[HistoryEntry]:
        try:
            lines = (self.root / HISTORY).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) == 2:  # the first format: "<time> <version>"
                out.append(HistoryEntry(parts[0], "promote", parts[1]))
            elif len(parts) == 3:
                out.append(HistoryEntry(parts[0], parts[1], parts[2]))
        return out

    def lineage(self) -> list[str]:
        """The rollback stack: the served version last, the one a rollback returns to before it."""
        stack: list[str] = []
        for entry in self.entries():
            if entry.action == "rollback":
                while stack and stack[-1] != entry.version:
                    stack.pop()
                if not stack:
                    stack.append(entry.version)
            elif not stack or stack[-1] != entry.version:
                stack.append(entry.version)
        current = self.current()
        if current is not None and (not stack or stack[-1] != current):
            stack.append(current)  # a pointer changed without a history line (crash, manual edit)
        return stack

    def new_version_dir(self, version: str) -> Path:
        """Where a new artifact for ``version`` should be written."""
        return self.versions_dir / version

    def check_new_version(self, version: str) -> None:
        """Raise ArtifactError unless ``version`` is a valid name (``VERSION_NAME``) not yet taken."""
        check_version_name(version)
        if (self.versions_dir / version).exists():
            raise ArtifactError(f"version {version!r} already exists in {self.root}")

    def promote(
        self,
        version: str,
        verify: bool = True,
        allow_head_changes: bool = False,
        if_current: str | None | _Any = _Any.CURRENT,
    ) -> str | None:
        """Make ``version`` current, atomically; returns the version it replaced.

        With ``verify`` the artifact is loaded (checksum, trusted types) first and a broken one
        raises ArtifactError without touching the pointer. A version that would take away from
        callers what the current one serves (``lost_heads``) raises HeadsChanged, unless
        ``allow_head_changes``. With ``if_current`` (a version, or None for no current one), only
        if that is what is current under the lock, else CurrentChanged (naming what is): a
        decision taken against one current version is never applied over another. Holds the
        registry's lock from that check on; RegistryLocked if another promote or rollback holds
        it for ``lock_timeout`` seconds."""
        path = self.path(version)
        if verify:  # before the lock: a version's files never change once it is in the registry
            load_artifact(path, version)
        with registry_lock(self.root, self.lock_timeout):
            current = self.current()
            if if_current is not _Any.CURRENT and current != if_current:
                raise CurrentChanged(
                    f"not promoting {version}: {current or 'no version'} is current, not "
                    f"{if_current or 'no version'} (another promote or rollback ran since)",
                    current,
                )
            if not allow_head_changes:
                self.check_heads(version)
            return self._point(version, "promote")

    def check_heads(self, version: str) -> None:
        """Raise HeadsChanged if ``version`` lacks a head, a head's kind or a label that the
        current version has (a current one that does not read has nothing to protect; a version
        that does not read is refused by verifying it)."""
        current = self.current()
        if current is None or current == version:
            return
        try:
            old, new = self.manifest(current), self.manifest(version)
        except ArtifactError:
            return
        lost = lost_heads(old, new)
        if lost:
            raise HeadsChanged(
                f"refusing to promote {version} over {current}: {'; '.join(lost)} (callers relying "
                "on them would get errors or nothing); pass --allow-head-changes to promote it anyway",
                lost,
            )

    def rollback(self) -> str:
        """Make the version that was current before the current one current again (under the
        registry's lock, as ``promote``)."""
        with registry_lock(self.root, self.lock_timeout):
            stack = self.lineage()
            if len(stack) < 2:
                raise ArtifactError(f"nothing to roll back to in {self.root} (history: {stack or 'empty'})")
            target = stack[-2]
            load_artifact(self.path(target), target)
            self._point(target, "rollback")
        return target

    def _point(self, version: str, action: str) -> str | None:
        """Make ``version`` current and record it in history (the caller holds the lock)."""
        path = self.path(version)
        previous = self.current()
        _make_readable(self.root, self.versions_dir, path, *path.iterdir())
        tmp = self.root / f".current.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # not less the umask: see the module docstring
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(version + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.root / CURRENT)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.root)
        if previous != version:
            with (self.root / HISTORY).open("a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {action} {version}\n")
                fh.flush()
                os.fsync(fh.fileno())
            _make_readable(self.root / HISTORY)
        return previous


def check_version_name(version: str) -> None:
    """Raise ArtifactError unless ``version`` is a valid version name (``VERSION_NAME``)."""
    if not VERSION_NAME.fullmatch(version):
        raise ArtifactError(
            f"version {version!r}: must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _make_readable(*paths: Path) -> None:
    """Give ``paths`` the registry's modes (see the module docstring); another user's keep theirs."""
    for path in paths:
        if not path.is_symlink() and path.stat().st_uid == os.geteuid():
            os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_version(path: Path) -> Manifest:
    """The manifest of the version folder ``path``, refused unless it records ``path.name``."""
    manifest = read_manifest(path)
    check_recorded_version(path, path.name, manifest)
    return manifest
