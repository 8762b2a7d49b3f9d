"""The event loop the gRPC server runs on: one per process, in a daemon thread, so the rest of
the service (the composition root, the tests) keeps a synchronous API: ``run(coro)`` blocks the
calling thread until the coroutine has finished on the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def server_loop() -> asyncio.AbstractEventLoop:
    """The process's server loop, started on first use. Shared by every server this process
    builds (grpc.aio binds its completion queue to the loops it sees; one loop keeps that simple)."""
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the server loop and wait for its result (not from the loop's own thread)."""
    return asyncio.run_coroutine_threadsafe(coro, server_loop()).result(timeout)
