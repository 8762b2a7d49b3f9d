"""The gRPC server: TaggerService + AdminService, standard health checking, reflection, TLS/mTLS
and graceful draining. ``build_server(runtime, settings)`` wires it; the caller starts and stops it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.core.errors import NewstaggerError
from service.grpc_api.gen.newstagger.v1 import tagger_pb2 as pb
from service.grpc_api.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.grpc_api.interceptors import ServerInterceptor
from service.grpc_api.servicer import AdminServicer, TaggerServicer
from service.runtime import Runtime
from service.settings import ADMIN_SERVICE_NAME, GRPC_SERVICE_NAME, Settings

logger = logging.getLogger(__name__)

HANDLER_THREADS = 128  # calls handled at once; each waits on the batcher, so threads are cheap
HEALTH_POLL_SECONDS = 0.2
HEALTH_SERVICES = ("", GRPC_SERVICE_NAME, ADMIN_SERVICE_NAME)
MIN_MESSAGE_BYTES = 4 << 20
MAX_MESSAGE_BYTES = 512 << 20


class ServerConfigError(NewstaggerError):
    """The server cannot start as configured (e.g. a TLS key without a certificate)."""


class TaggerServer:
    """A started-or-not gRPC server with its health state. Health follows the model: SERVING once
    a model is loaded (also when the reloader loads it later), NOT_SERVING while draining."""

    def __init__(
        self, server: grpc.Server, health_servicer: health.HealthServicer, model_loaded: Callable[[], bool]
    ):
        self.grpc = server
        self.health = health_servicer
        self._model_loaded = model_loaded
        self._draining = threading.Event()
        self._watcher = threading.Thread(target=self._watch_health, name="grpc-health", daemon=True)
        self.serving = False

    def start(self) -> None:
        self._update_health()
        self.grpc.start()
        self._watcher.start()

    def _set(self, status: int) -> None:
        for name in HEALTH_SERVICES:
            self.health.set(name, status)

    def _update_health(self) -> None:
        serving = self._model_loaded() and not self._draining.is_set()
        if serving != self.serving or not self._watcher.is_alive():
            self._set(
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            self.serving = serving

    def _watch_health(self) -> None:
        while not self._draining.wait(HEALTH_POLL_SECONDS):
            self._update_health()

    def drain(self, grace: float) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace`` seconds."""
        self._draining.set()
        self.health.enter_graceful_shutdown()  # every service NOT_SERVING, further updates ignored
        self.serving = False
        logger.info("draining: refusing new calls, waiting up to %.1fs for in-flight ones", grace)
        self.grpc.stop(grace).wait(grace + 5)

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self.grpc.wait_for_termination(timeout))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS when cert and key are set; mutual TLS (client certificate required) when a client CA is."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ServerConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ServerConfigError("TLS needs both --tls-cert and --tls-key")
    pair = (_read(settings.tls_key, "TLS key"), _read(settings.tls_cert, "TLS certificate"))
    client_ca = None if settings.tls_client_ca is None else _read(settings.tls_client_ca, "client CA")
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def build_server(runtime: Runtime, settings: Settings, reuse_port: bool = False) -> tuple[TaggerServer, int]:
    """Wire and bind (not start) the server; returns it and the bound port (useful with port 0)."""
    message_limit = min(
        MAX_MESSAGE_BYTES, max(MIN_MESSAGE_BYTES, settings.max_text_bytes * settings.max_request_articles)
    )
    options = [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", message_limit),
        ("grpc.max_send_message_length", message_limit),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=HANDLER_THREADS, thread_name_prefix="grpc"),
        interceptors=[ServerInterceptor(runtime.metrics)],
        options=options,
        maximum_concurrent_rpcs=settings.queue_size + HANDLER_THREADS,
    )
    tagger = TaggerServicer(runtime.tagger, runtime.batcher, runtime.metrics, settings.max_request_articles)
    pb_grpc.add_TaggerServiceServicer_to_server(tagger, server)
    token = settings.admin_token.get_secret_value() if settings.admin_token is not None else None
    pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(runtime.reloader, token), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        pb.DESCRIPTOR.services_by_name["TaggerService"].full_name,
        pb.DESCRIPTOR.services_by_name["AdminService"].full_name,
        health.SERVICE_NAME,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
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
    return TaggerServer(server, health_servicer, lambda: runtime.tagger.model is not None), port
