"""The HTTP side door every process opens: /metrics, /healthz (alive) and /readyz (ready).

/healthz fails only on what a restart cures (the micro-batcher's thread died), never on a
dependency (no model yet, the broker down): those make /readyz fail, and a restart would not help.

Each connection serves one request and has ``SOCKET_TIMEOUT_SECONDS`` in all to do it: one that
sends its request a byte at a time is closed then, like a silent one (a per-read timeout alone
never fires while a byte arrives every second). At most ``max_connections`` are open at once: a
new one past that closes the oldest, so connections held open use up neither threads nor
descriptors, nor keep a health probe out (it is always the newest).
"""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from service.core.errors import NewstaggerError

logger = logging.getLogger(__name__)

SOCKET_TIMEOUT_SECONDS = 10.0  # the most one connection may take, from accept to close
SWEEP_SECONDS = 0.25  # how often connections past that are looked for

#: Returns (ready, reason). Reason is shown on /readyz: e.g. "model not loaded".
ReadinessCheck = Callable[[], tuple[bool, str]]


def default_max_connections() -> int:
    """The most connections the HTTP API, the gRPC server and this metrics endpoint may each hold: a
    quarter of the open-file limit, between 64 and 1,000; the rest stays for Kafka and the model
    files, so a caller holding connections cannot starve the others of descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 4096
    return max(64, min(1000, limit // 4))


class HealthServer:
    """A small threaded HTTP server; ``start`` returns the bound port (``port=0`` picks one)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: ReadinessCheck,
        host: str,
        port: int,
        max_connections: int | None = None,
        alive: ReadinessCheck | None = None,
    ) -> None:
        handler = _make_handler(registry, ready, alive or _always_alive)
        try:
            self._server = _BoundedServer((host, port), handler, max_connections or default_max_connections())
        except OSError as exc:
            raise NewstaggerError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                "(choose another --metrics-port, or 0 for none)"
            ) from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._sweeper = threading.Thread(target=self._server.sweep, name="http-deadlines", daemon=True)

    def start(self) -> int:
        self._thread.start()
        self._sweeper.start()
        logger.info("metrics and health endpoint on port %d", self.port)
        return self.port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.stopped.set()
        self._server.server_close()


class _BoundedServer(ThreadingHTTPServer):
    """Tracks open connections, oldest first: closes each at its deadline, or the oldest past the cap."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], cap: int) -> None:
        super().__init__(address, handler)
        self.cap = cap
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._lock:
            oldest = next(iter(self._deadlines)) if len(self._deadlines) >= self.cap else None
            self._deadlines[request] = time.monotonic() + SOCKET_TIMEOUT_SECONDS
        if oldest is not None:  # the newest caller (a health probe, say) gets in; the oldest goes
            with contextlib.suppress(OSError):
                oldest.shutdown(socket.SHUT_RDWR)
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._deadlines.pop(request, None)
        super().shutdown_request(request)

    def sweep(self) -> None:
        while not self.stopped.wait(SWEEP_SECONDS):
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, deadline in self._deadlines.items() if deadline <= now]
            for sock in late:  # the handler's blocked read or write then ends, and its thread with it
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _always_alive() -> tuple[bool, str]:
    return True, "ok"


def _make_handler(
    registry: CollectorRegistry, ready: ReadinessCheck, alive: ReadinessCheck
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_SECONDS  # a connection that stalls mid-request is closed, freeing its thread

        def handle(self) -> None:
            try:
                super().handle()
            except OSError:  # closed at its deadline, or by the caller, mid-request
                logger.debug("http connection closed mid-request")

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(registry), content_type)
            elif path in ("/healthz", "/readyz"):
                check = alive if path == "/healthz" else ready
                try:
                    ok, reason = check()
                except Exception as exc:  # a failing check means not ready, not a crash
                    what = "liveness" if path == "/healthz" else "readiness"
                    ok, reason = False, f"{what} check failed: {type(exc).__name__}"
                self._send(200 if ok else 503, (reason or ("ready" if ok else "not ready")).encode() + b"\n")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
            logger.debug("http %s", format % args)

    return Handler
