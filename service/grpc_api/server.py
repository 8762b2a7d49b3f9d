"""The gRPC server: TaggerService + AdminService, standard health checking, reflection, TLS/mTLS
and graceful draining. ``build_server(runtime, settings)`` wires it; the caller starts and stops it.

The server is ``grpc.aio``: calls are handled as coroutines on one event loop (``loop.py``, a
daemon thread) instead of one pool thread per call, and wait for the micro-batcher's futures
without blocking a thread. ``TaggerServer`` keeps a synchronous API for the composition root.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.core.errors import NewstaggerError
from service.core.validation import MAX_ID_BYTES, MAX_TARGET_BYTES, MAX_TITLE_BYTES
from service.core.wire import FieldBudget
from service.dispatch import Dispatcher
from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.grpc_api import loop
from service.grpc_api.interceptors import CallLimit, ServerInterceptor
from service.grpc_api.reflection import enable_reflection
from service.grpc_api.servicer import AdminServicer, TaggerServicer
from service.http import default_max_connections
from service.runtime import Runtime
from service.settings import ADMIN_SERVICE_NAME, GRPC_SERVICE_NAME, Settings
from service.v2.grpc_servicer import INFER_METHOD, add_inference_service

logger = logging.getLogger(__name__)

MAX_CONCURRENT_CALLS = 128  # unary tagging calls in flight beyond the batcher queue
HEALTH_POLL_SECONDS = 0.2
HEALTH_SERVICES = ("", GRPC_SERVICE_NAME)  # follow the model (ADMIN_SERVICE_NAME does not)
MIN_MESSAGE_BYTES = 16 << 20  # room for a TagBatch of many ordinary articles
ARTICLE_EXTRA_BYTES = 64 << 10  # source, url, metadata, published_at and framing of one article
STREAMS_PER_CONNECTION = 1024  # HTTP/2 streams (calls) one connection may have open
CONNECTION_IDLE_MS = 5 * 60_000  # a connection with no call for this long is closed (GOAWAY)
CONNECTION_AGE_MS = 30 * 60_000  # then clients reconnect (and spread over --workers processes)
CONNECTION_AGE_GRACE_MS = 60_000  # calls still open at that age get this long to finish
HANDSHAKE_TIMEOUT_MS = 10_000  # a connection must be HTTP/2 (and TLS) this soon, or it is closed


class ServerConfigError(NewstaggerError):
    """The server cannot start as configured (e.g. a TLS key without a certificate)."""


class TaggerServer:
    """A started-or-not gRPC server with its health state. The health of ``health_names`` follows
    the runtime: SERVING while a model is loaded (also when the reloader loads it later) and the
    micro-batcher runs, NOT_SERVING otherwise. ``always_serving`` names (AdminService, which can
    reload a model exactly when none is served) are SERVING from the start. Every name is
    NOT_SERVING while draining. Any other name is unknown to health checking: NOT_FOUND to Check
    and SERVICE_UNKNOWN to Watch, as the protocol says. Every method is called from outside the
    server loop; the work runs on it."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        can_serve: Callable[[], bool],
        health_names: tuple[str, ...] = HEALTH_SERVICES,
        always_serving: tuple[str, ...] = (),
    ):
        self.grpc = server
        self.health = health_servicer
        self._can_serve = can_serve
        self._health_names = health_names
        self._always_serving = always_serving
        self._draining = False
        self._watcher: asyncio.Task[None] | None = None
        self._stopped: asyncio.Event | None = None
        self.serving = False

    def start(self) -> None:
        loop.run(self._start())

    async def _start(self) -> None:
        self._stopped = asyncio.Event()
        for name in self._always_serving:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self._update_health(force=True)
        await self.grpc.start()
        self._watcher = asyncio.create_task(self._watch_health(), name="grpc-health")

    async def _update_health(self, force: bool = False) -> None:
        serving = self._can_serve() and not self._draining
        if serving != self.serving or force:
            statuses = health_pb2.HealthCheckResponse
            status = statuses.SERVING if serving else statuses.NOT_SERVING
            for name in self._health_names:
                await self.health.set(name, status)
            self.serving = serving

    async def _watch_health(self) -> None:
        while not self._draining:
            await asyncio.sleep(HEALTH_POLL_SECONDS)
            await self._update_health()

    def drain(self, grace: float) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace`` seconds."""
        loop.run(self._drain(grace), timeout=grace + 10)

    async def _drain(self, grace: float) -> None:
        self._draining = True
        if self._watcher is not None:
            self._watcher.cancel()
        await self.health.enter_graceful_shutdown()  # every service NOT_SERVING, further updates ignored
        self.serving = False
        logger.info("draining: refusing new calls, waiting up to %.1fs for in-flight ones", grace)
        await self.grpc.stop(grace)
        if self._stopped is not None:
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the server has stopped; True if it did within ``timeout``."""
        return loop.run(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> bool:
        if self._stopped is None:
            return True
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _check_key_pair(cert: Path, key: Path) -> None:
    """gRPC reports a key that does not fit its certificate only as "failed to bind": say what."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise ServerConfigError(
            f"TLS key {key} does not match the certificate {cert} (or is not an unencrypted PEM "
            f"key and certificate): {exc.reason or exc}"
        ) from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS when cert and key are set; mutual TLS (client certificate required) when a client CA is."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ServerConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ServerConfigError("TLS needs both --tls-cert and --tls-key")
    pair = (_read(settings.tls_key, "TLS key"), _read(settings.tls_cert, "TLS certificate"))
    _check_key_pair(settings.tls_cert, settings.tls_key)
    client_ca = None if settings.tls_client_ca is None else _read(settings.tls_client_ca, "client CA")
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def message_limit(settings: Settings) -> int:
    """The largest request accepted: room for two articles of the largest size, or for a
    TagBatch of many ordinary ones (MIN_MESSAGE_BYTES), whichever is more."""
    fields = MAX_ID_BYTES + MAX_TITLE_BYTES + MAX_TARGET_BYTES + ARTICLE_EXTRA_BYTES
    article = settings.max_text_bytes + fields
    return max(MIN_MESSAGE_BYTES, 2 * article)


def build_server(runtime: Runtime, settings: Settings, reuse_port: bool = False) -> tuple[TaggerServer, int]:
    """Wire and bind (not start) the server; returns it and the bound port (useful with port 0)."""
    credentials = server_credentials(settings)
    return loop.run(_build(runtime, settings, reuse_port, credentials))


async def _build(
    runtime: Runtime, settings: Settings, reuse_port: bool, credentials: grpc.ServerCredentials | None
) -> tuple[TaggerServer, int]:
    limit = message_limit(settings)
    options = [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
        ("grpc.max_connection_idle_ms", CONNECTION_IDLE_MS),
        ("grpc.max_connection_age_ms", CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_MS),
        # connections held open without a call, or without ever speaking HTTP/2, cannot use up
        # the process's file descriptors (which Kafka, the model files and /metrics need too)
        ("grpc.max_allowed_incoming_connections", default_max_connections()),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
    ]
    # TaggerService's calls and V2's ModelInfer are limited by the interceptor, the unary ones
    # together (health, reflection and V2's live/ready/metadata calls are not, so a busy or abused
    # server still answers its probes); gRPC's own maximum_concurrent_rpcs would count every call
    # alike.
    unary = CallLimit(settings.queue_size + MAX_CONCURRENT_CALLS, "calls")
    service = f"/{GRPC_SERVICE_NAME}/"
    limits = {
        service + "Tag": unary,
        service + "TagBatch": unary,
        service + "GetModel": unary,
        INFER_METHOD: unary,
        service + "TagStream": CallLimit(settings.max_streams, "streams"),
    }
    interceptor = ServerInterceptor(runtime.metrics, limits, FieldBudget(settings.max_request_articles))
    server = grpc.aio.server(interceptors=[interceptor], options=options)
    tagger = TaggerServicer(
        runtime.tagger,
        runtime.batcher,
        runtime.metrics,
        settings.max_request_articles,
        settings.stream_idle_seconds,
    )
    pb_grpc.add_TaggerServiceServicer_to_server(tagger, server)
    token = settings.admin_token.get_secret_value() if settings.admin_token is not None else None
    pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(runtime.reloader, token), server)
    dispatcher = Dispatcher(runtime.tagger, runtime.batcher, runtime.metrics)
    v2_name = add_inference_service(server, dispatcher, settings.max_request_articles)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        pb.DESCRIPTOR.services_by_name["TaggerService"].full_name,
        pb.DESCRIPTOR.services_by_name["AdminService"].full_name,
        health.SERVICE_NAME,
        v2_name,
    )
    enable_reflection(names, server)
    address = f"{settings.host}:{settings.port}"
    try:
        port = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError as exc:
        raise ServerConfigError(f"cannot bind gRPC to {address}: {exc}") from exc
    if port == 0:
        raise ServerConfigError(f"cannot bind gRPC to {address}")
    # an enabled admin service is SERVING whether or not a model is (it is how an operator makes
    # one load); a disabled one (no token) is unknown to health checking, never SERVING
    admin = (ADMIN_SERVICE_NAME,) if token else ()
    return TaggerServer(server, health_servicer, runtime.serving, HEALTH_SERVICES, admin), port
