"""`newstagger serve --workers 2` when one worker process fails: the supervisor stops the others
and exits 1, so the container is restarted. Before, a worker whose micro-batcher had died stayed
up: 8 of 20 calls, each on a new connection, got UNAVAILABLE "the batcher has stopped"; the
supervisor's /healthz said 200 and its /readyz 503 ("1 of 2 workers serving") for good, so
Kubernetes left the pod unready (or, probed over gRPC or V2 on the shared port, flapping) and never
restarted it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from service.model.registry import ModelRegistry
from tests.helpers import wait_for
from tests.integration.test_grpc_process import ready, scrape, serve, tag_once

DIE_TEXT = "newstagger test: end the micro-batcher"

#: a sitecustomize.py every process of the test's `serve` imports at start-up (the spawned workers
#: too): tagging DIE_TEXT raises what no batch catches (as a MemoryError might), which ends the
#: micro-batcher's thread, as the single-process test in test_observability.py does in-process
HOOK = f"""
import service.core.tagger as _tagger


class _Died(BaseException):
    pass


_tag = _tagger.Tagger.tag


def _tag_or_die(self, articles, *args, **kwargs):
    if any(article.text == {DIE_TEXT!r} for article in articles):
        raise _Died
    return _tag(self, articles, *args, **kwargs)


_tagger.Tagger.tag = _tag_or_die
"""


def _exited(proc: subprocess.Popen[bytes]) -> int:
    """The supervisor's exit status. A generous bound: it exited 1.5 s after the batcher died and
    0.8 s after the kill (measured)."""
    wait_for(lambda: proc.poll() is not None, timeout=120, what="the supervisor to exit")
    return int(proc.returncode)


def _worker_codes(log: str) -> list[int]:
    found = re.search(r"workers exited with \[([^\]]*)\]", log)
    assert found, log[-3000:]
    return sorted(int(code) for code in found.group(1).split(","))


def test_a_worker_whose_micro_batcher_died_stops_the_supervisor(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOOK)
    with serve(registry.root, tmp_path, "--workers", "2", hooks=hooks) as (proc, port, mport):
        wait_for(lambda: ready(mport), timeout=120, what="/readyz with 2 workers")
        assert tag_once(port).result.model_version == "v1"  # the hook leaves other articles alone
        with pytest.raises(grpc.RpcError) as info:
            tag_once(port, DIE_TEXT)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "the batcher has stopped",
        )
        assert _exited(proc) == 1
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "micro-batcher died: stopping this worker process (exit status 1)" in log
    assert re.search(r"worker \d+ exited with 1; shutting down", log), log[-3000:]
    assert _worker_codes(log) == [0, 1], "the other worker drained and exited 0"


def test_a_killed_worker_stops_the_supervisor(registry: ModelRegistry, tmp_path: Path) -> None:
    """Already so before: the supervisor notices a worker gone, stops the other and exits 1."""
    with serve(registry.root, tmp_path, "--workers", "2") as (proc, _, mport):
        wait_for(lambda: ready(mport), timeout=120, what="/readyz with 2 workers")
        pids = {
            int(dict(labels)["pid"])
            for (name, labels), _ in scrape(mport).items()
            if name == "newstagger_model_info"
        }
        children = {
            int(pid)
            for task in Path(f"/proc/{proc.pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        }
        assert len(pids) == 2 and pids <= children, (pids, children)  # worker processes our process started
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        assert _exited(proc) == 1
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert f"worker {victim} exited with -9; shutting down" in log
    assert _worker_codes(log) == [-9, 0], "the other worker drained and exited 0"
