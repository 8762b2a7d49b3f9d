"""``serve --workers N``: N serving processes share one port with SO_REUSEPORT (the kernel spreads
connections across them), so inference uses every core despite the GIL. Each process loads the
model once and runs its own batcher.

The supervisor (this process) loads no model. It sets PROMETHEUS_MULTIPROC_DIR (a temporary
directory unless already set; a set one is cleared of a previous run's files) before starting the
workers, so every worker writes its samples there, and serves /metrics (aggregated over all
workers), /healthz and /readyz (ready when every worker is serving) itself. SIGTERM/SIGINT is
forwarded to the workers, which drain gracefully; the supervisor exits 0 when all of them did.

A worker that exits on its own (killed, or stopped because its micro-batcher's thread died: it
could never tag again) makes the supervisor stop the others and exit 1: the container is then
restarted whatever the probes ask, rather than kept with one process failing every call it gets.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from service.http import HealthServer
from service.logs import configure_logging
from service.runtime import SidecarFactory, install_stop_handlers
from service.settings import Settings

logger = logging.getLogger(__name__)

ServeProcess = Callable[..., int]


def _worker(
    serve: ServeProcess, settings: Settings, sidecar: SidecarFactory | None, flag: Synchronized[int]
) -> None:
    configure_logging(settings.log_level, settings.log_format)

    def on_health(serving: bool) -> None:
        flag.value = 1 if serving else 0

    code = serve(settings, sidecar, serve_http=False, reuse_port=True, on_health=on_health)
    raise SystemExit(code)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _clear_metric_files(directory: Path) -> None:
    """Remove a previous run's metric files (a container restarted on the same volume), which
    prometheus-client would otherwise add to this run's totals."""
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def run_workers(settings: Settings, sidecar: SidecarFactory | None, serve: ServeProcess) -> int:
    """Run ``serve`` (``main.serve_process``, passed in: this module does not import main) in
    ``settings.workers`` processes."""
    own_dir = None
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        _clear_metric_files(Path(given))
    else:
        own_dir = tempfile.mkdtemp(prefix="newstagger-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        return _supervise(settings, sidecar, serve)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _supervise(settings: Settings, sidecar: SidecarFactory | None, serve: ServeProcess) -> int:
    from prometheus_client import multiprocess

    from service.metrics_registry import build_registry

    if settings.port == 0:  # every worker must bind the same port
        settings = settings.model_copy(update={"port": _free_port(settings.host)})
    child_settings = settings.model_copy(update={"workers": 1})
    ctx = multiprocessing.get_context("spawn")
    flags = [ctx.Value("i", 0) for _ in range(settings.workers)]
    procs: list[Any] = [
        ctx.Process(
            target=_worker,
            args=(serve, child_settings, sidecar if index == 0 else None, flag),
            name=f"newstagger-worker-{index}",
        )
        for index, flag in enumerate(flags)
    ]
    stop = threading.Event()
    install_stop_handlers(stop)
    for proc in procs:
        proc.start()
    logger.info("gRPC serving on %s:%d with %d worker processes", settings.host, settings.port, len(procs))

    def ready() -> tuple[bool, str]:
        serving = sum(1 for p, f in zip(procs, flags, strict=True) if p.is_alive() and f.value)
        if serving < len(procs):
            return False, f"{serving} of {len(procs)} workers serving"
        return True, f"ready: {serving} workers serving"

    http = None
    if settings.metrics_port:
        http = HealthServer(build_registry(), ready, settings.metrics_host, settings.metrics_port)
        logger.info("metrics and health on http://%s:%d", settings.metrics_host, http.start())
    try:
        while not stop.wait(0.5):
            for proc in procs:
                if not proc.is_alive():
                    logger.error("worker %s exited with %s; shutting down", proc.pid, proc.exitcode)
                    stop.set()
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(settings.grace_seconds + 10)
            if proc.is_alive():
                logger.error("worker %s did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join(5)
            if proc.pid is not None:
                multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
    finally:
        if http is not None:
            http.stop()
    codes = [proc.exitcode for proc in procs]
    logger.info("workers exited with %s", codes)
    return 0 if all(code == 0 for code in codes) else 1
