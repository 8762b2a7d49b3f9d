"""The registry's write lock: an exclusive advisory lock (``fcntl.flock``) on ``ROOT/.lock``, held
by every change of the ``current`` pointer and ``history`` (promote, rollback) from reading what
is current to writing the new pointer and history line. Two operators, or a CI job and an
operator, promoting at once then take turns instead of interleaving their reads and writes.

Readers (serving processes, ``models list``) take no lock: ``current`` is replaced by rename, so
they always read a whole pointer. A version directory is added by an atomic rename and needs no
lock either. The lock is advisory and per open file: the kernel releases it when its holder
exits, however it exits, so a crashed promote leaves nothing to clean up. It works across hosts
only where the filesystem supports ``flock`` across them (local disks do; NFS v4 does).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.model.errors import ArtifactError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
LOCK_FILE_MODE = 0o644  # as the registry's other files (see service.model.registry)
LOCK_TIMEOUT_SECONDS = 30.0  # how long a promote or rollback waits for another one to finish
_POLL_SECONDS = 0.05


class RegistryLocked(ArtifactError):
    """Another promote or rollback held the registry's lock for the whole wait."""


@contextmanager
def registry_lock(root: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold ``root``'s write lock for the ``with`` block, waiting at most ``timeout`` seconds for it."""
    path = root / LOCK_FILE
    if not root.is_dir():
        raise ArtifactError(f"{root}: no model registry there (no such directory)")
    try:  # read-only is enough for flock: a lock file created by another user still opens
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, LOCK_FILE_MODE)
    except OSError as exc:
        raise ArtifactError(f"cannot open the registry lock {path}: {exc.strerror or exc}") from exc
    try:
        # openable by the registry's other writers, whatever this one's umask
        if os.fstat(fd).st_uid == os.geteuid():
            with contextlib.suppress(OSError):
                os.fchmod(fd, LOCK_FILE_MODE)
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RegistryLocked(
                        f"the registry lock {path} is held: another promote or rollback is running "
                        f"on {root} (waited {timeout:g} s); try again once it has finished"
                    ) from None
                if not waiting:
                    waiting = True
                    logger.warning(
                        "waiting for the registry lock %s: another promote or rollback is running", path
                    )
                time.sleep(_POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # releases the lock
