"""The HTTP side door every process opens: /metrics, /healthz (alive) and /readyz (ready)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from service.core.errors import NewstaggerError

logger = logging.getLogger(__name__)

SOCKET_TIMEOUT_SECONDS = 10.0

#: Returns (ready, reason). Reason is shown on /readyz: e.g. "model not loaded".
ReadinessCheck = Callable[[], tuple[bool, str]]


class HealthServer:
    """A small threaded HTTP server; ``start`` returns the bound port (``port=0`` picks one)."""

    def __init__(self, registry: CollectorRegistry, ready: ReadinessCheck, host: str, port: int) -> None:
        handler = _make_handler(registry, ready)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise NewstaggerError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                "(choose another --metrics-port, or 0 for none)"
            ) from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> int:
        self._thread.start()
        logger.info("metrics and health endpoint on port %d", self.port)
        return self.port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(registry: CollectorRegistry, ready: ReadinessCheck) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_SECONDS  # a connection that stalls mid-request is closed, freeing its thread

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(registry), content_type)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                try:
                    ok, reason = ready()
                except Exception as exc:  # a failing check means not ready, not a crash
                    ok, reason = False, f"readiness check failed: {type(exc).__name__}"
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
