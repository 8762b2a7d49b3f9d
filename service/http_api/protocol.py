"""uvicorn's httptools protocol with the bounds uvicorn leaves out: how many connections, how big a
request's head (request line and headers) and how long a request may take to arrive.

Without them a caller could send headers without end (uvicorn keeps them all in memory), or hold
connections open by sending a request a byte at a time, or not at all, until the process runs out of
file descriptors and even gRPC health checks fail. Past a bound the connection gets one JSON error in
the API's shape and is closed: 503 beyond ``max_connections``, 431 for a head over
``MAX_HEAD_BYTES``, 408 for a head not complete within ``REQUEST_READ_SECONDS`` (a body that stops
arriving is cut off, which the app sees as a disconnect). Answering a request takes as long as it
takes: the clock stops once the whole request has arrived.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
REQUEST_READ_SECONDS = 30.0
# After a refusal, what the caller still sends is read and dropped for this long before the close:
# closing with unread bytes would reset the connection and lose the reply on the way.
LINGER_SECONDS = 2.0


def refusal(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response that ends the connection, with the API's error body."""
    body = json.dumps({"error": {"code": status, "status": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """One connection; ``max_connections`` is set on the class by ``bounded_protocol``."""

    max_connections = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_complete = False
        self._head_bytes = 0  # of the head being read, counted before the parser sees them
        self._tail = b""  # the last bytes read, in case the blank line ending a head is split
        self._read_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(503, "Service Unavailable", "UNAVAILABLE", "too many connections; retry later")
            return
        self._arm()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._head_complete:
            # the head's share of this read: up to its blank line if the read holds it (a head
            # that arrives whole in one read counts as much as one that trickles in)
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = seen[-3:]
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    "INVALID_ARGUMENT",
                    f"request line and headers over {MAX_HEAD_BYTES} bytes",
                )
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_complete = False
        self._arm()

    def on_headers_complete(self) -> None:
        self._head_complete = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._head_complete, self._head_bytes, self._tail = False, 0, b""  # the next request's head
        super().on_message_complete()

    def _arm(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(REQUEST_READ_SECONDS, self._too_slow)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _too_slow(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._head_complete:  # the app is waiting for the body: it sees a disconnect
            self.transport.close()
        else:
            self._refuse(
                408,
                "Request Timeout",
                "DEADLINE_EXCEEDED",
                f"the request did not arrive within {REQUEST_READ_SECONDS:g} s",
            )

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        self._disarm()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self.transport.write(refusal(status, reason, code, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def bounded_protocol(max_connections: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` option, refusing connections past ``max_connections``."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"max_connections": max_connections})
