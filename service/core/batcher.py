"""MicroBatcher: coalesces concurrent tag requests into one vectorized Tagger call.

One worker thread takes whatever is queued (up to ``max_batch_size`` articles and about
``MAX_BATCH_SECONDS`` of work) the moment the model is idle, so a lone caller waits for nothing,
and under load calls that arrive during one predict ride together in the next. ``max_wait_ms`` > 0
additionally holds a non-full batch that long. The gRPC and HTTP APIs and the Kafka worker all tag
through the same batcher.

Admission is by expected seconds of work, not only by count: every article's cost is estimated
from its length and the model time per character measured on recent batches (``CostModel``).
``submit`` refuses at once (Overloaded) when more than ``max_queue_seconds`` of work is waiting,
when ``queue_size`` articles are, or when the work ahead means the article would not be tagged
before its deadline, so under overload callers get a fast "retry later" instead of a late answer,
and the model computes only what can still be delivered in time.

The worker hands each batch it takes to a ``BatchRunner`` (``batch_runner``), which completes
every future exactly once and tells the ``DeliveryListener``s (``add_listener``) and the observers.
``alive()`` says whether the worker is running; readiness and gRPC health include it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from service.core.batch_runner import (
    BatchRunner,
    BatchStats,
    CostModel,
    DeliveryListener,
    QueuedArticle,
    fail_future,
)
from service.core.errors import DeadlineExceeded, ModelNotReady, Overloaded
from service.core.tagger import Tagger
from service.core.types import DEFAULT_OPTIONS, Article, TagOptions, TagResult

logger = logging.getLogger(__name__)

MAX_BATCH_SECONDS = 0.5  # a batch stops growing at about this much expected model time
#: A call is admitted only if it would be answered within 1/DEADLINE_SAFETY of its remaining time
#: by the estimate (estimates are wrong both ways on a busy machine; being late wastes the work).
DEADLINE_SAFETY = 1.5


class MicroBatcher:
    def __init__(
        self,
        tagger: Tagger,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        queue_size: int = 2048,
        max_queue_seconds: float = 1.0,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_results: Callable[[Sequence[TagResult]], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.max_queue_seconds = max_queue_seconds
        self.costs = CostModel()
        self._runner = BatchRunner(tagger, self.costs, on_batch, on_results)
        self._cond = threading.Condition()
        self._items: deque[QueuedArticle] = deque()
        self._queued_seconds = 0.0
        self._busy_until = 0.0  # expected end (time.monotonic()) of the batch being computed
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()

    @property
    def tagger(self) -> Tagger:
        """The tagger that validates and tags (the runner's: one, even when a test swaps it)."""
        return self._runner.tagger

    @tagger.setter
    def tagger(self, tagger: Tagger) -> None:
        self._runner.tagger = tagger

    def add_listener(self, listener: DeliveryListener) -> None:
        """Call ``listener.hold()``/``flush()`` around the setting of each batch's results."""
        self._runner.add_listener(listener)

    def alive(self) -> bool:
        """True while the worker runs and the batcher accepts work."""
        return not self._closed and self._thread.is_alive()

    def died(self) -> bool:
        """True when the worker thread ended without ``close``: nothing will tag again."""
        return not self._closed and not self._thread.is_alive()

    def depth(self) -> int:
        return len(self._items)

    def expected_wait(self) -> float:
        """Seconds of model work ahead of an article submitted now (an estimate)."""
        return self._queued_seconds + max(0.0, self._busy_until - time.monotonic())

    def submit(
        self, article: Article, options: TagOptions = DEFAULT_OPTIONS, deadline: float | None = None
    ) -> Future[TagResult]:
        """Validate and queue one article; the future holds its result or a domain error.
        Raises the domain error instead when the article is refused at the door."""
        self.tagger.validate(article, options)
        item = self._item(article, options, deadline)
        with self._cond:
            self._admit(item)
            self._push(item)
        return item.future

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
            raise DeadlineExceeded(f"article not tagged within {timeout}s") from None

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, finish what is queued, stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._fail_queued()

    # --- admission (_admit and _push are called with the lock held) ---

    def _item(self, article: Article, options: TagOptions, deadline: float | None) -> QueuedArticle:
        self.tagger.require_model()
        chars = CostModel.size(article)
        cost = chars * self.costs.seconds_per_char
        return QueuedArticle(article, options, Future(), time.monotonic(), deadline, chars, cost)

    def _admit(self, item: QueuedArticle) -> None:
        if not self.alive():
            raise ModelNotReady("the service is shutting down" if self._closed else "the batcher has stopped")
        if len(self._items) >= self.queue_size:
            raise Overloaded(f"queue full ({len(self._items)} articles waiting); retry later")
        wait = self.expected_wait()
        if wait > self.max_queue_seconds:
            raise Overloaded(f"queue full (about {wait:.1f}s of work waiting); retry later")
        if item.deadline is not None:
            if item.enqueued + item.cost > item.deadline:
                raise DeadlineExceeded("the deadline is too short to tag this article")
            if item.enqueued + DEADLINE_SAFETY * (wait + item.cost) > item.deadline:
                raise Overloaded(
                    f"the work queued ahead (about {wait:.2f}s) would miss the deadline; retry later"
                )

    def _push(self, item: QueuedArticle) -> None:
        self._items.append(item)
        self._queued_seconds += item.cost
        item.future.add_done_callback(lambda f: self._unqueue(item) if f.cancelled() else None)
        self._cond.notify_all()

    def _unqueue(self, item: QueuedArticle) -> None:
        """Stop counting ``item``'s cost (taken by the worker, or cancelled while queued)."""
        with self._cond:
            if item.queued:
                item.queued = False
                self._queued_seconds = max(0.0, self._queued_seconds - item.cost)

    # --- the worker ---

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._process(batch)
        except BaseException:  # not expected (a batch's errors are caught): leave a trace
            logger.exception("micro-batcher stopped")
            raise
        finally:
            self._fail_queued()

    def _next_batch(self) -> list[QueuedArticle] | None:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None
            limit = time.monotonic() + self.max_wait
            while len(self._items) < self.max_batch_size and not self._closed:
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[QueuedArticle] = []
            cost = 0.0
            while self._items and len(batch) < self.max_batch_size:
                item = self._items[0]
                if batch and cost + item.cost > MAX_BATCH_SECONDS:
                    break
                self._items.popleft()
                if item.queued:
                    item.queued = False
                    self._queued_seconds = max(0.0, self._queued_seconds - item.cost)
                    batch.append(item)
                    cost += item.cost
            if not self._items:
                self._queued_seconds = 0.0  # no drift
            self._busy_until = time.monotonic() + cost
            return batch

    def _fail_queued(self) -> None:
        with self._cond:
            items, self._items = list(self._items), deque()
            self._queued_seconds = 0.0
        for item in items:
            fail_future(item.future, ModelNotReady("the service is shutting down"))

    def _process(self, batch: list[QueuedArticle]) -> None:
        try:
            self._runner.run(batch)
        finally:
            self._busy_until = 0.0
