"""BatchRunner: tags one batch the MicroBatcher has taken off its queue, on the batcher's thread.

Every future is completed exactly once: the runner claims it with ``set_running_or_notify_cancel``
before it decides anything about it (a caller's cancel either wins before that or not at all),
drops an article whose answer would come after its deadline, and any exception in a batch fails
that batch's futures instead of the thread. An article that makes the batch's predict fail is
isolated: the others are tagged one by one and still get their results.

What a queued article carries (``QueuedArticle``) and its expected model time (``CostModel``, which
the runner refines from the time each batch took) are defined here too. A ``DeliveryListener``
(``MicroBatcher.add_listener``) is told before and after the results of one batch are set, so a
consumer on another thread can be woken once per batch instead of once per result (the gRPC
server's ``ResultBridge``); ``BatchStats`` and the results go to the observers afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Protocol

from service.core.errors import DeadlineExceeded, ModelNotReady
from service.core.tagger import MAX_MODEL_TEXT_CHARS, Tagger
from service.core.types import Article, TagOptions, TagResult

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


class CostModel:
    """Expected model seconds of an article: (characters the model reads + a per-article
    overhead) times the seconds per character measured on recent batches (moving average)."""

    OVERHEAD_CHARS = 1000
    SMOOTHING = 0.2

    def __init__(self, seconds_per_char: float = 1e-6) -> None:
        self.seconds_per_char = seconds_per_char

    @classmethod
    def size(cls, article: Article) -> int:
        text = min(len(article.text), MAX_MODEL_TEXT_CHARS)
        return text + len(article.title) + len(article.target) + cls.OVERHEAD_CHARS

    def observe(self, chars: int, seconds: float) -> None:
        if chars > 0 and seconds > 0:
            self.seconds_per_char += self.SMOOTHING * (seconds / chars - self.seconds_per_char)


@dataclass(slots=True, eq=False)
class QueuedArticle:
    article: Article
    options: TagOptions
    future: Future[TagResult]
    enqueued: float
    deadline: float | None  # time.monotonic() value
    chars: int
    cost: float  # expected seconds, counted in the queue's total while ``queued``
    queued: bool = True


class BatchRunner:
    """Tags the batches a MicroBatcher takes off its queue (see the module docstring)."""

    def __init__(
        self,
        tagger: Tagger,
        costs: CostModel,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_results: Callable[[Sequence[TagResult]], None] | None = None,
    ) -> None:
        self.tagger = tagger
        self.costs = costs
        self._on_batch = on_batch
        self._on_results = on_results
        self._listeners: list[DeliveryListener] = []

    def add_listener(self, listener: DeliveryListener) -> None:
        self._listeners = [*self._listeners, listener]

    def run(self, batch: list[QueuedArticle]) -> None:
        """Tag ``batch`` and complete each of its futures (a result or an error), once."""
        try:
            self._compute(batch)
        except Exception as exc:  # e.g. a failing listener: this batch fails, the batcher lives on
            logger.exception("batch failed")
            for item in batch:
                fail_future(item.future, exc)
        except BaseException:  # it ends the batcher (e.g. MemoryError): its callers still get an answer
            for item in batch:
                fail_future(item.future, ModelNotReady("the batcher has stopped"))
            raise

    def _compute(self, batch: list[QueuedArticle]) -> None:
        now = time.monotonic()
        done_by = now + sum(i.cost for i in batch)  # when this batch is expected to be tagged
        live = []
        for item in batch:
            # claimed first: from here on the caller can no longer cancel it, so it is set exactly once
            if not item.future.set_running_or_notify_cancel():
                continue
            if item.deadline is not None and done_by >= item.deadline:  # the answer would come late
                item.future.set_exception(DeadlineExceeded("deadline passed before tagging"))
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
                    self._compute_one(item)
                return
            live[0].future.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        self.costs.observe(sum(i.chars for i in live), elapsed)
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

    def _compute_one(self, item: QueuedArticle) -> None:
        started = time.perf_counter()
        try:
            results = self.tagger.tag([item.article], [item.options])
        except Exception as exc:
            item.future.set_exception(exc)
            return
        item.future.set_result(results[0])
        self._observe([item], time.monotonic(), time.perf_counter() - started, results)

    def _observe(
        self, items: list[QueuedArticle], now: float, elapsed: float, results: Sequence[TagResult]
    ) -> None:
        try:
            if self._on_batch is not None:
                waits = tuple(now - i.enqueued for i in items)
                self._on_batch(BatchStats(len(items), waits, elapsed))
            if self._on_results is not None:
                self._on_results(results)
        except Exception:
            logger.exception("batch observer failed")


def fail_future(future: Future[TagResult], exc: BaseException) -> None:
    """Fail ``future`` unless it is already done (cancelled by its caller, or answered)."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(exc)
