"""The HTTP server: uvicorn serving the Starlette app on its own event loop thread, with TLS like
the gRPC server (``--tls-cert``/``--tls-key``, mutual TLS with ``--tls-client-ca``).
``build_http_api(runtime, settings)`` wires it; ``start`` returns the bound port, ``stop(grace)``
stops accepting and lets requests in flight finish within ``grace`` seconds."""

from __future__ import annotations

import logging
import socket
import ssl
import threading

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.core.errors import NewstaggerError
from service.dispatch import Dispatcher
from service.http import default_max_connections
from service.http_api.app import build_app, guard_routes
from service.http_api.openapi import build_openapi
from service.http_api.protocol import bounded_protocol
from service.http_api.rest import RestApi
from service.http_api.v2 import V2Api
from service.runtime import Runtime
from service.settings import Settings

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0


class HttpConfigError(NewstaggerError):
    """The HTTP server cannot start as configured."""


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HttpConfigError(f"cannot bind HTTP to {host}:{port}: {exc.strerror}") from exc
    return sock


class HttpApiServer:
    def __init__(self, config: uvicorn.Config, sock: socket.socket) -> None:
        self._server = uvicorn.Server(config)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._run, name="http-api", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> int:
        self._thread.start()
        pause = threading.Event()
        for _ in range(int(START_TIMEOUT_SECONDS / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            pause.wait(0.01)
        if not self._server.started:
            raise HttpConfigError("the HTTP server did not start (see the log)")
        return self.port

    def begin_stop(self, grace: float) -> None:
        """Stop accepting; requests in flight get ``grace`` seconds from now. Returns at once."""
        self._server.config.timeout_graceful_shutdown = max(1, int(grace))
        self._server.should_exit = True

    def stop(self, grace: float) -> None:
        """``begin_stop`` (unless begun), then wait for the requests in flight to finish."""
        if not self._server.should_exit:
            self.begin_stop(grace)
        self._thread.join(grace + 5)
        self._sock.close()


def build_http_api(runtime: Runtime, settings: Settings, reuse_port: bool = False) -> HttpApiServer | None:
    """The REST + V2 HTTP server on ``--http-port`` (None when it is 0), bound, not started."""
    if not settings.http_port:
        return None
    token = settings.admin_token.get_secret_value() if settings.admin_token is not None else None
    dispatcher = Dispatcher(runtime.tagger, runtime.batcher, runtime.metrics)
    rest = RestApi(dispatcher, runtime.reloader, settings.max_request_articles, token)
    v2 = V2Api(dispatcher, settings.max_request_articles)
    openapi = build_openapi()

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    routes = guard_routes(rest.routes()) + v2.routes() + [Route("/openapi.json", openapi_json)]
    app = build_app(routes, runtime.metrics, settings.http_max_body_bytes)
    tls = settings.tls_cert is not None and settings.tls_key is not None  # else gRPC already refused
    client_ca = settings.tls_client_ca if tls else None
    config = uvicorn.Config(
        app,
        # uvloop (a runtime dependency; asyncio's loop costs the REST path its CPU target, see
        # benchmarks/README.md "## http"); asyncio's where uvloop does not install (Windows)
        loop="auto",
        http=bounded_protocol(default_max_connections()),  # bounds on connections, heads, slow requests
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.grace_seconds)),
        ssl_certfile=settings.tls_cert if tls else None,
        ssl_keyfile=settings.tls_key if tls else None,
        ssl_ca_certs=str(client_ca) if client_ca is not None else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca is not None else ssl.CERT_NONE,
    )
    return HttpApiServer(config, _bind(settings.host, settings.http_port, reuse_port))
