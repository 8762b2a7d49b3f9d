"""The registry's write lock: concurrent promotions and rollbacks take turns (a real
`newstagger models promote` process waits while the lock is held and proceeds once it is
released), and one that cannot get the lock fails with an error naming the lock file."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from typing import IO

import pytest

from service.model.registry import ModelRegistry
from service.model.registry_lock import LOCK_FILE, RegistryLocked, registry_lock
from tests.helpers import REPO
from tests.unit.test_registry import add_version


def _promote_process(registry: ModelRegistry, version: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSTAGGER_")}
    env["PYTHONPATH"] = str(REPO)
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "models",
        "promote",
        version,
        "--registry",
        str(registry.root),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env
    )


def _lines(stream: IO[str] | None) -> tuple[queue.Queue[str], threading.Thread]:
    """The lines of ``stream`` as they come, read by a thread (so the test can wait with a bound),
    and that thread."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream or ():
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def test_a_promote_waits_while_another_holds_the_lock_then_proceeds(registry: ModelRegistry) -> None:
    add_version(registry, "v2")
    with registry_lock(registry.root):  # as another operator's promote would, mid-way
        proc = _promote_process(registry, "v2")
        stderr, reader = _lines(proc.stderr)
        try:
            said = stderr.get(timeout=120)  # it found the lock held: the event that it waits
            assert said.startswith(f"waiting for the registry lock {registry.root / LOCK_FILE}"), said
            assert proc.poll() is None, "it waits for the lock, it does not give up or go ahead"
            assert registry.current() == "v1" and [e.version for e in registry.entries()] == ["v1"]
        except BaseException:
            with proc:  # closes its pipes
                proc.kill()
            raise
    # released: the waiting promote takes the lock and finishes
    assert proc.wait(120) == 0
    reader.join(30)
    with proc:
        out = proc.stdout.read() if proc.stdout else ""
    assert f"promoted v2 to current in {registry.root} (was: v1)" in out
    assert registry.current() == "v2"
    assert [(e.action, e.version) for e in registry.entries()] == [("promote", "v1"), ("promote", "v2")]


def test_a_promote_or_rollback_that_cannot_get_the_lock_fails_naming_it(registry: ModelRegistry) -> None:
    add_version(registry, "v2")
    registry.promote("v2")
    add_version(registry, "v3")
    impatient = ModelRegistry(registry.root, lock_timeout=0.2)
    held = re.escape(
        f"the registry lock {registry.root / LOCK_FILE} is held: another promote or rollback is running"
    )
    with registry_lock(registry.root):
        with pytest.raises(RegistryLocked, match=held):
            impatient.promote("v3")
        with pytest.raises(RegistryLocked, match=held):
            impatient.rollback()
    assert registry.current() == "v2"  # nothing written by either
    assert [e.version for e in registry.entries()] == ["v1", "v2"]
    assert impatient.rollback() == "v1"  # released: the same registry object goes ahead
    assert registry.lineage() == ["v1"]
