"""Entry point of ``newstagger serve``: one serving process, or N of them sharing the port.

One process: build the runtime (model, batcher, metrics, reloader), start /metrics, serve gRPC
until SIGTERM/SIGINT, then drain (health NOT_SERVING, refuse new calls, let in-flight calls finish
within ``grace_seconds``), stop the stream worker, close the batcher and exit 0.

``--workers N`` (N > 1): see ``service.grpc_api.workers``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

from service.logs import configure_logging
from service.runtime import Sidecar, SidecarFactory, build_runtime, install_stop_handlers
from service.settings import Settings

logger = logging.getLogger(__name__)

GIL_SWITCH_SECONDS = 0.001


def run_serve(settings: Settings, sidecar: SidecarFactory | None = None) -> int:
    """``sidecar``: what runs beside the server (the stream worker), in one process only."""
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        from service.grpc_api.workers import run_workers

        return run_workers(settings, sidecar, serve_process)
    return serve_process(settings, sidecar)


def serve_process(
    settings: Settings,
    sidecar: SidecarFactory | None = None,
    serve_http: bool = True,
    reuse_port: bool = False,
    on_health: Callable[[bool], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code. ``on_health`` is told whether this
    process is serving (the multi-process supervisor aggregates it into /readyz). A sidecar that
    fails stops the process with exit status 1. So does, under a supervisor (``on_health``
    given), the micro-batcher's thread dying: the process can never tag again, and the supervisor
    then stops the other workers and exits 1, so the container is restarted whichever process a
    probe reaches (the supervisor's /healthz, or a worker's V2 liveness on the shared port)."""
    from service.grpc_api.server import build_server
    from service.http_api.server import build_http_api

    # The server loop thread shares the GIL with the model thread. At CPython's default 5 ms switch
    # interval the loop waits up to 5 ms each time it gets the GIL back after I/O, so under load it
    # falls behind and even refusals come late; 1 ms keeps it responsive.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    stop = threading.Event()
    install_stop_handlers(stop)
    runtime = build_runtime(settings)
    server, port = build_server(runtime, settings, reuse_port=reuse_port)
    api = build_http_api(runtime, settings, reuse_port=reuse_port)
    # /readyz says what gRPC health says: not ready before the server has started, nor once it
    # drains (it stayed 200 through the drain, while health was NOT_SERVING)
    runtime.readiness.append(lambda: (server.serving, "gRPC server not serving (starting or draining)"))
    side: Sidecar | None = None
    code = 0
    try:
        if sidecar is not None:
            side = sidecar(runtime, stop.set)
            side.start()
        if api is not None:  # listening before /readyz can answer
            logger.info("REST and V2 HTTP API on %s:%d", settings.host, api.start())
        if serve_http:
            http_port = runtime.start_http()
            if http_port is not None:
                logger.info("metrics and health on http://%s:%d", settings.metrics_host, http_port)
        server.start()
        logger.info("gRPC serving on %s:%d", settings.host, port)
        last: bool | None = None
        while not stop.wait(0.2):
            if on_health is None:
                continue
            if runtime.batcher.died():
                logger.error("micro-batcher died: stopping this worker process (exit status 1)")
                code = 1
                break
            if server.serving != last:
                last = server.serving
                on_health(last)
        if on_health is not None:
            on_health(False)
        # Every front door drains at once, within one grace period: gRPC health turns NOT_SERVING
        # while HTTP requests in flight finish, not after them.
        if side is not None:
            side.stop()
        if api is not None:
            api.begin_stop(settings.grace_seconds)
        server.drain(settings.grace_seconds)
        if api is not None:
            api.stop(settings.grace_seconds)
    finally:
        if side is not None:
            side.stop()
            code = side.join() or code
        runtime.close(timeout=settings.grace_seconds)
    logger.info("stopped")
    return code
