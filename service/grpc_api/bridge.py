"""Hands the batcher's results (``concurrent.futures.Future``, set on the batcher thread) to the
coroutines waiting for them on the server loop.

``asyncio.wrap_future`` would wake the loop once per result (``call_soon_threadsafe`` writes to
the loop's self-pipe, and the write lets the loop thread take the GIL from the batcher mid-batch);
a batch of 32 results would cost up to 32 wake-ups. ``ResultBridge`` queues finished futures and
wakes the loop once: per batch when the batcher announces its batches (``MicroBatcher.add_listener``
calls ``hold``/``flush``), otherwise per burst. The loop then settles every waiter in one pass.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import Any, TypeVar

from service.core.errors import DeadlineExceeded

T = TypeVar("T")


class ResultBridge:
    """One per event loop; ``wait`` is called on that loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[Any], Future[Any]]] = []
        self._held = False  # a batch is being delivered: wake the loop at its end, not per result

    async def wait(self, future: Future[T], deadline: float | None = None) -> T:
        """The future's result or exception. Past ``deadline`` (time.monotonic()) it raises
        DeadlineExceeded; if the caller is cancelled or the deadline passes, ``future`` is
        cancelled, so a still-queued article is skipped by the batcher and never computed."""
        waiter: asyncio.Future[T] = self._loop.create_future()
        future.add_done_callback(lambda f: self._post(waiter, f))
        timer = None
        if deadline is not None:
            timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), _expire, waiter)
        try:
            return await waiter
        except BaseException:
            future.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _post(self, waiter: asyncio.Future[Any], future: Future[Any]) -> None:
        """On whichever thread finished ``future``: queue it; wake the loop if it is the first."""
        with self._lock:
            self._done.append((waiter, future))
            wake = len(self._done) == 1 and not self._held
        if wake:
            self._loop.call_soon_threadsafe(self._settle)

    def hold(self) -> None:
        with self._lock:
            self._held = True

    def flush(self) -> None:
        with self._lock:
            self._held = False
            wake = bool(self._done)
        if wake:
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for waiter, future in done:
            if waiter.done():  # expired or cancelled meanwhile
                continue
            if future.cancelled():
                waiter.cancel()
            elif (exc := future.exception()) is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(future.result())


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(DeadlineExceeded("deadline passed before the article was tagged"))
