"""The fold processes of cross-validation fit the CPUs the process may use, not the node's: in a pod
limited to 2 CPUs on a 16-CPU node, `os.cpu_count()` said 16 and training started 5 fold processes
(~360 MiB each), past the Helm chart's memory limit for the retraining job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs to restrict to 1")
def test_cv_workers_follow_the_cpus_the_process_may_use() -> None:
    # A CPU set of one CPU (what a static CPU manager or `taskset` gives); a cgroup CPU quota is
    # honoured the same way by joblib's count.
    script = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " + (
        "from training.cv import cv_workers; print(cv_workers(5), cv_workers(1))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LOKY_MAX_CPU_COUNT", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, check=True
    )
    assert done.stdout.split() == ["1", "1"]
