"""MicroBatcher: coalesces concurrent tag requests into one vectorized Tagger call.

One worker thread takes whatever is queued (up to ``max_batch_size``) the moment the model is
idle, so a lone caller waits for nothing, and under load calls that arrive during one predict
ride together in the next. ``max_wait_ms`` > 0 additionally holds a non-full batch that long.
The queue is bounded: past ``queue_size`` waiting articles, ``submit`` raises Overloaded.
Both the gRPC API and the Kafka worker tag through the same batcher.

A ``DeliveryListener`` (``add_listener``) is told before and after the batcher sets the results
of one batch, so a consumer on another thread can be woken once per batch instead of once per
result (the gRPC server's ``ResultBridge``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Protocol

from service.core.errors import DeadlineExceeded, ModelNotReady, Overloaded
from service.core.tagger import Tagger
from service.core.types import DEFAULT_OPTIONS, Article, TagOptions, TagResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one batch did, for whoever observes (metrics)."""

    size: int
    queue_wait_seconds: tuple[float, ...]
    inference_seconds: float


class DeliveryListener(Protocol):
    def hold(self) -> None:
        """The batcher is about to set the results of one batch (on its own thread)."""

    def flush(self) -> None:
        """It has set them all."""


@dataclass(slots=True)
class _Item:
    article: Article
    options: TagOptions
    future: Future[TagResult]
    enqueued: float
    deadline: float | None  # time.monotonic() value


class MicroBatcher:
    def __init__(
        self,
        tagger: Tagger,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        queue_size: int = 2048,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_results: Callable[[Sequence[TagResult]], None] | None = None,
    ) -> None:
        self.tagger = tagger
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=queue_size)
        self._on_batch = on_batch
        self._on_results = on_results
        self._closed = False
        self._listeners: list[DeliveryListener] = []
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()

    def add_listener(self, listener: DeliveryListener) -> None:
        """Call ``listener.hold()``/``flush()`` around the setting of each batch's results."""
        self._listeners = [*self._listeners, listener]

    def depth(self) -> int:
        return self._queue.qsize()

    def submit(
        self, article: Article, options: TagOptions = DEFAULT_OPTIONS, deadline: float | None = None
    ) -> Future[TagResult]:
        """Queue one article; the future holds its result or a domain error."""
        if self._closed:
            raise ModelNotReady("the service is shutting down")
        self.tagger.require_model()
        item = _Item(article, options, Future(), time.monotonic(), deadline)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise Overloaded(f"queue full ({self._queue.maxsize} articles waiting); retry later") from None
        self._after_put()
        return item.future

    def submit_many(
        self, articles: Sequence[Article], options: TagOptions = DEFAULT_OPTIONS, block: bool = True
    ) -> list[Future[TagResult]]:
        """Queue many articles. With ``block`` it waits for room instead of raising Overloaded
        (the Kafka worker's backpressure: it simply stops polling while it waits)."""
        if self._closed:
            raise ModelNotReady("the service is shutting down")
        self.tagger.require_model()
        futures = []
        for article in articles:
            item = _Item(article, options, Future(), time.monotonic(), None)
            if block:
                self._queue.put(item)
            else:
                try:
                    self._queue.put_nowait(item)
                except queue.Full:
                    raise Overloaded("queue full") from None
            futures.append(item.future)
            self._after_put()
        return futures

    def tag(
        self, article: Article, options: TagOptions = DEFAULT_OPTIONS, timeout: float | None = None
    ) -> TagResult:
        """Tag one article, waiting at most ``timeout`` seconds (then DeadlineExceeded)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        future = self.submit(article, options, deadline)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()  # if still queued, the worker skips it
            raise DeadlineExceeded(f"article {article.id!r} not tagged within {timeout}s") from None

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, finish what is queued, stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._fail_leftovers()

    def _after_put(self) -> None:
        # close() raced with this submit and the worker has gone: nobody else will answer the item
        if self._closed and not self._thread.is_alive():
            self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                with contextlib.suppress(InvalidStateError):  # cancelled by its caller
                    item.future.set_exception(ModelNotReady("the service is shutting down"))

    def _take_batch(self, first: _Item) -> tuple[list[_Item], bool]:
        batch, stop = [first], False
        limit = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                remaining = limit - time.monotonic()
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._take_batch(first)
            self._process(batch)
            if stop:
                self._drain_rest()
                return

    def _drain_rest(self) -> None:
        rest: list[_Item] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        for start in range(0, len(rest), self.max_batch_size):
            self._process(rest[start : start + self.max_batch_size])

    def _process(self, batch: list[_Item]) -> None:
        now = time.monotonic()
        live = []
        for item in batch:
            if item.future.cancelled():
                continue
            if item.deadline is not None and now >= item.deadline:
                item.future.set_exception(DeadlineExceeded("deadline passed before tagging"))
                continue
            if not item.future.set_running_or_notify_cancel():
                continue
            try:  # a bad article fails alone, before it can fail the batch
                self.tagger.validate(item.article)
            except Exception as exc:
                item.future.set_exception(exc)
                continue
            live.append(item)
        if not live:
            return
        started = time.perf_counter()
        try:
            results = self.tagger.tag([i.article for i in live], [i.options for i in live])
        except Exception as exc:
            if len(live) > 1:  # isolate the article that failed; the others still get results
                for item in live:
                    self._process_one(item)
                return
            live[0].future.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        listeners = self._listeners
        for listener in listeners:
            listener.hold()
        try:
            for item, result in zip(live, results, strict=True):
                item.future.set_result(result)
            self._observe(live, now, elapsed, results)  # recorded before the listeners pass results on
        finally:
            for listener in listeners:
                listener.flush()

    def _process_one(self, item: _Item) -> None:
        started = time.perf_counter()
        try:
            results = self.tagger.tag([item.article], [item.options])
        except Exception as exc:
            item.future.set_exception(exc)
            return
        item.future.set_result(results[0])
        self._observe([item], time.monotonic(), time.perf_counter() - started, results)

    def _observe(self, items: list[_Item], now: float, elapsed: float, results: Sequence[TagResult]) -> None:
        try:
            if self._on_batch is not None:
                waits = tuple(now - i.enqueued for i in items)
                self._on_batch(BatchStats(len(items), waits, elapsed))
            if self._on_results is not None:
                self._on_results(results)
        except Exception:
            logger.exception("batch observer failed")
