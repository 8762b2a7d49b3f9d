"""A real ``newstagger serve`` process for the benchmarks, run from a chosen checkout
(``spawn_server``): start it on a free loopback port and wait until gRPC health says it serves (and
every ``--workers`` process is up), and read its CPU time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVICE = "newstagger.v1.TaggerService"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its descendants that are alive now."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(model_dir: Path, code: Path, *args: str) -> subprocess.Popen[bytes]:
    """``newstagger serve`` of the checkout ``code`` (its directory first on the server's path, so
    another worktree's service/ runs against the same model and load), metrics on a free port,
    WARNING logs, no reload polling; ``args`` add to or override that."""
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--model-dir", str(model_dir)]
        + ["--metrics-port", "0", "--log-level", "WARNING", "--reload-interval-seconds", "0", *args],
        cwd=code,
    )


def start_server(model_dir: Path, workers: int, code: Path) -> tuple[subprocess.Popen[bytes], int]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    proc = spawn_server(model_dir, code, "--port", str(port), "--workers", str(workers))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                request = health_pb2.HealthCheckRequest(service=SERVICE)
                serving = health_pb2_grpc.HealthStub(channel).Check(request, timeout=1).status == 1
            if serving and (workers == 1 or len(_children(proc.pid)) >= workers):
                time.sleep(3 if workers > 1 else 0)  # health answered by one worker: let the others load
                return proc, port
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def _children(pid: int) -> list[int]:
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]
