"""What one HTTP caller cannot do to the others, through real sockets: headers without end, requests
sent a byte at a time or never, more connections than the process can hold. Each gets one error in
the API's shape and its connection closed; other callers and gRPC health carry on."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

import service.http as side_door_module
import service.http_api.protocol as protocol
import service.http_api.server as http_server
from service.http import HealthServer
from service.model.registry import ModelRegistry
from tests.integration.test_http_support import HttpServed, serve_http

BODY = json.dumps({"article": {"id": "a1", "text": "Troops were sent to the border on Monday."}}).encode()
REQUEST = (
    b"POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


@pytest.fixture()
def served(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpServed]:
    monkeypatch.setattr(protocol, "REQUEST_READ_SECONDS", 1.0)
    monkeypatch.setattr(http_server, "default_max_connections", lambda: 8)
    with serve_http(registry.root) as s:
        yield s


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def read_reply(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the one reply before the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def grpc_health_ok(served: HttpServed) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_headers_over_the_limit_are_refused(served: HttpServed) -> None:
    with connect(served.port) as sock:
        sock.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(2 * protocol.MAX_HEAD_BYTES // 1024):
                sock.sendall(b"X-Filler: " + b"a" * 1012 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed mid-send: the 431 was already on its way
        status, body = read_reply(sock)
    assert status == 431
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert str(protocol.MAX_HEAD_BYTES) in body["error"]["message"]
    assert served.client.post("/v1/tag", content=BODY).status_code == 200


@pytest.mark.parametrize("earlier", [0, 1], ids=["first request", "after a keep-alive request"])
def test_headers_over_the_limit_sent_at_once_are_refused(served: HttpServed, earlier: int) -> None:
    """A complete head over the limit that arrives in one go (not only one that trickles in)."""
    big = b"POST /v1/tag HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (protocol.MAX_HEAD_BYTES + 4096)
    big += b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    with connect(served.port) as sock:
        if earlier:  # a whole exchange first: the limit applies to each request's head
            sock.sendall(REQUEST)
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += sock.recv(65536)
            head, _, rest = reply.partition(b"\r\n\r\n")
            length = int(
                next(
                    v
                    for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n"))
                    if k == b"content-length"
                )
            )
            while len(rest) < length:
                rest += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed mid-send: 431 sent
            sock.sendall(big)
        status, body = read_reply(sock)
    assert status == 431 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert served.client.post("/v1/tag", content=BODY).status_code == 200


def test_a_request_that_stops_arriving_is_cut_off(served: HttpServed) -> None:
    started = time.monotonic()
    with connect(served.port) as silent, connect(served.port) as partial, connect(served.port) as no_body:
        partial.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        no_body.sendall(REQUEST[: -len(BODY)] + BODY[:10])  # the body never ends
        for sock in (silent, partial):
            status, body = read_reply(sock)
            assert status == 408 and body["error"]["status"] == "DEADLINE_EXCEEDED"
        assert no_body.recv(65536) == b""  # closed; the app saw a disconnect
    assert time.monotonic() - started < 8
    assert served.client.post("/v1/tag", content=BODY).status_code == 200


def test_connections_past_the_limit_are_refused_and_others_carry_on(served: HttpServed) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(connect(served.port)) for _ in range(8)]
        extra = stack.enter_context(connect(served.port))
        status, body = read_reply(extra)
        assert status == 503 and body["error"]["status"] == "UNAVAILABLE"
        assert grpc_health_ok(served)
        held[0].sendall(REQUEST)  # a connection within the limit is served
        reply = held[0].recv(65536)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:100]


def test_the_metrics_endpoint_closes_a_stalled_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(side_door_module, "SOCKET_TIMEOUT_SECONDS", 0.5)
    server = HealthServer(CollectorRegistry(), lambda: (True, "ready"), "127.0.0.1", 0)
    port = server.start()
    try:
        with connect(port) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
            started = time.monotonic()
            assert sock.recv(65536) == b""  # closed, its thread freed
            assert time.monotonic() - started < 5
    finally:
        server.stop()


@contextlib.contextmanager
def side_door(**limits: int) -> Iterator[int]:
    server = HealthServer(CollectorRegistry(), lambda: (True, "ready"), "127.0.0.1", 0, **limits)
    try:
        yield server.start()
    finally:
        server.stop()


def healthz(port: int) -> int:
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_the_metrics_endpoint_closes_a_request_sent_a_byte_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # a byte every 0.1 s never lets a per-read timeout fire: the connection's deadline must
    monkeypatch.setattr(side_door_module, "SOCKET_TIMEOUT_SECONDS", 1.0)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    with side_door() as port, connect(port) as slow:
        slow.settimeout(0.1)
        closed, until = False, time.monotonic() + 20  # generous: the deadline is 1 s
        for byte in head:
            if time.monotonic() > until:
                break
            try:
                slow.sendall(bytes([byte]))
                closed = slow.recv(65536) == b""
            except TimeoutError:
                continue
            except OSError:  # reset on the way
                closed = True
            if closed:
                break
        assert closed, "the server kept a request trickling in a byte at a time"
        assert healthz(port) == 200


def test_past_the_metrics_connection_limit_the_oldest_goes_and_health_gets_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(side_door_module, "SOCKET_TIMEOUT_SECONDS", 60.0)  # no deadline meets the test
    with side_door(max_connections=4) as port, ExitStack() as stack:
        held = [stack.enter_context(connect(port)) for _ in range(4)]
        assert healthz(port) == 200  # a fifth connection is served ...
        assert held[0].recv(65536) == b""  # ... and the oldest held one closed to make room
        held[1].sendall(b"GET /healthz HTTP/1.0\r\n\r\n")  # one that was not needed stays served
        assert held[1].recv(65536).startswith(b"HTTP/1.0 200 ")
