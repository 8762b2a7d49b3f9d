"""The tagging side of the stream worker: submit records to the shared micro-batcher and settle
each one as a result, a dead letter, or a retry.

Only a record that can never be tagged becomes a dead letter: ``invalid_article`` (the tagger's
own validation refused it) or ``model_error`` (the model raised on it twice, the second time
while it tags a known-good probe article fine: the record itself is the problem). A transient
failure (no model, queue full, the batcher shutting down, or a model that also fails the probe)
is retried with backoff, never dead-lettered; past ``stream_retry_seconds`` of failing the
worker stops (StreamFailed) without committing the record, so it is tagged after the restart.
Every unexpected error is logged with its traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from service.core.errors import DeadlineExceeded, InvalidArticle, InvalidRequest, ModelNotReady, Overloaded
from service.core.types import Article, TagResult
from service.reloader import SMOKE_ARTICLES
from service.stream.delivery import Pending
from service.stream.retrying import Retrying

logger = logging.getLogger(__name__)

Submit = Callable[[Article], "Future[TagResult]"]

PERMANENT = (InvalidArticle, InvalidRequest)
TRANSIENT = (ModelNotReady, Overloaded, DeadlineExceeded)
PROBE_TIMEOUT_S = 10.0
OVERLOADED_WAIT_S = 0.005


class Tagging:
    def __init__(self, submit: Submit, stopping: threading.Event, retry_limit: float) -> None:
        self._submit = submit
        self._stopping = stopping
        self._model = Retrying("tagging", retry_limit)

    @property
    def ok(self) -> bool:
        return self._model.ok

    def start(self, pending: Pending) -> bool:
        """Submit ``pending`` for tagging; while the batcher queue is full, wait (that is the
        backpressure). False if the worker is stopping meanwhile (the record is abandoned)."""
        assert pending.event is not None  # noqa: S101 - callers pass only decoded records
        while True:
            try:
                pending.future = self._submit(pending.event.article)
                return True
            except Overloaded:
                if self._stopping.wait(OVERLOADED_WAIT_S):
                    return False
            except ModelNotReady as exc:
                self._retry_later(pending, exc)
                return True

    def settle(self, pending: Pending, wait: float, may_block: bool = True) -> bool:
        """True once ``pending`` has its outcome (a result or a dead-letter reason). Waits at most
        ``wait`` seconds for its tagging; ``may_block`` False neither submits nor probes the model
        (the record then stays unsettled: the rebalance callback must return quickly)."""
        if pending.settled:
            return True
        if pending.future is None:  # a retry is due at pending.retry_at
            if not may_block:
                return False
            due = pending.retry_at - time.monotonic()
            if due > 0:
                time.sleep(min(due, max(0.0, wait)))
                return False
            if not self.start(pending) or pending.future is None:
                return False
        future = pending.future
        if not future.done():
            if wait <= 0:
                return False
            try:
                future.exception(timeout=wait)
            except FutureTimeout:
                return False
        exc = future.exception()
        if exc is None:
            pending.result = future.result()
            self._model.succeeded()
            return True
        if isinstance(exc, PERMANENT):
            pending.failure = ("invalid_article", exc)
            return True
        if not isinstance(exc, TRANSIENT):
            rec = pending.record
            logger.error(
                "the model failed on a record: %s: %s",
                type(exc).__name__,
                exc,
                exc_info=exc,
                extra={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
            )
            if not may_block:
                pending.future = None  # settled again (with the probe) by the poll loop
                return False
            # poison only if it fails again, now, while the model tags a known-good article
            if pending.attempts > 0 and self._model_is_healthy():
                pending.failure = ("model_error", exc)
                return True
        self._retry_later(pending, exc)
        return False

    def _retry_later(self, pending: Pending, exc: BaseException) -> None:
        backoff = self._model.failed(exc)  # StreamFailed once tagging has failed for too long
        if pending.attempts == 0:  # its failure may be older than the last success: retry at once
            backoff = 0.0
        pending.future = None
        pending.attempts += 1
        pending.retry_at = time.monotonic() + backoff
        logger.warning("tagging failed, will retry in %.1fs: %s: %s", backoff, type(exc).__name__, exc)

    def _model_is_healthy(self) -> bool:
        """Whether the model tags a known-good article (then a failing record is poison)."""
        try:
            self._submit(SMOKE_ARTICLES[0]).result(timeout=PROBE_TIMEOUT_S)
        except Exception:
            logger.exception("the model also fails on a known-good article: retrying, not dead-lettering")
            return False
        return True
