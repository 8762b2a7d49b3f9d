"""Connections held open against the gRPC port, through real sockets: they are bounded, so they
cannot use up the process's file descriptors, and one that never speaks HTTP/2 is closed."""

from __future__ import annotations

import os
import socket
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import service.grpc_api.server as grpc_server
from service.model.registry import ModelRegistry
from tests.helpers import wait_for
from tests.integration.test_grpc_support import serve_in_process

LIMIT = 16
RAW = 100  # idle TCP connections a caller holds: many more than LIMIT
CHECK = health_pb2.HealthCheckRequest(service="")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def healthy(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=2)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_idle_connections_are_bounded_and_closed(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_server, "default_max_connections", lambda: LIMIT)
    monkeypatch.setattr(grpc_server, "HANDSHAKE_TIMEOUT_MS", 1000)
    with serve_in_process(registry.root) as served:
        assert healthy(served.channel)
        before = open_fds()
        held = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(RAW)]
        try:
            most, until = 0, time.monotonic() + 1.5  # the server accepts within this, if it will
            while time.monotonic() < until:
                most = max(most, open_fds() - before)
                time.sleep(0.05)
            # this process holds the RAW client ends; the server side takes at most LIMIT more
            assert RAW <= most <= RAW + LIMIT, most
            # the server closes those that never speak HTTP/2, so a new client gets in again
            with grpc.insecure_channel(f"127.0.0.1:{served.port}") as fresh:
                wait_for(lambda: healthy(fresh), 20, what="health on a new connection")
        finally:
            for sock in held:
                sock.close()
