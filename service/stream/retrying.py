"""When the stream worker retries and when it gives up: ``Retrying`` (a growing backoff while
something fails, StreamFailed once it has failed for too long), ``BrokerStatus`` (the worker's view
of broker health: readiness, error metrics), ``IdleProbe`` (how an idle worker notices an outage)
and the errors that mean the group moved on.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    InvalidReceiveError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from service.core.errors import NewstaggerError
from service.metrics import Metrics

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
#: an idle worker checks the broker this often (at most; a quarter of the retry window if shorter)
IDLE_PROBE_S = 5.0
PROBE_TIMEOUT_MS = 1000


class StreamFailed(NewstaggerError):
    """The worker cannot go on: an error that retrying cannot fix, or one that outlasted
    ``stream_retry_seconds``. The process exits non-zero and its partitions move on."""


class Retrying:
    """How long something (the broker, the model) has been failing: a growing backoff while it
    fails, and StreamFailed once it has failed for longer than ``limit`` seconds."""

    def __init__(self, what: str, limit: float) -> None:
        self.what = what
        self.limit = limit
        self.failures = 0
        self._since: float | None = None

    @property
    def ok(self) -> bool:
        return self._since is None

    def succeeded(self) -> None:
        self.failures, self._since = 0, None

    def failed(self, exc: BaseException | None) -> float:
        """Count a failure; the backoff before the next try, or StreamFailed past the limit."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        self.failures += 1
        if now - self._since > self.limit:
            raise StreamFailed(
                f"{self.what} has failed for {now - self._since:.0f}s, over the limit of {self.limit:g}s "
                f"(--stream-retry-seconds); last error: {type(exc).__name__}: {exc}"
            ) from exc
        return float(min(MAX_BACKOFF_S, 0.1 * 2 ** min(self.failures, 6)))


#: Errors that mean the group moved on (the partitions belong to someone else now): the records
#: are read again by their new owner, so they are not the worker's failure.
GROUP_CHANGED = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
)


class BrokerStatus:
    """Whether the broker operations work; failures are counted and logged. A failure that
    retrying cannot fix, or an operation that keeps failing past the limit, raises StreamFailed."""

    def __init__(self, metrics: Metrics, limit: float) -> None:
        self.metrics = metrics
        self._ops = {op: Retrying(f"Kafka {op}", limit) for op in ("poll", "produce", "commit")}

    @property
    def ok(self) -> bool:
        return all(op.ok for op in self._ops.values())

    def fine(self, operation: str) -> None:
        self._ops[operation].succeeded()

    def trouble(self, operation: str, exc: BaseException | None) -> float:
        """Record a failed ``operation``; returns the backoff before the next try (the caller
        always tries again: the next poll, commit or flush), counted as a retry."""
        self.metrics.kafka_errors.labels(operation).inc()
        # InvalidReceiveError: a response over the receive limit (``unreadable``) aborted the
        # connection, and every request in flight on it; they succeed once it is skipped
        if not getattr(exc, "retriable", False) and not isinstance(exc, InvalidReceiveError):
            raise StreamFailed(f"Kafka {operation} failed and retrying cannot help: {exc!r}") from exc
        backoff = self._ops[operation].failed(exc)
        self.metrics.kafka_retries.labels(operation).inc()
        logger.warning("Kafka %s failed, will retry: %s: %s", operation, type(exc).__name__, exc)
        return backoff


class IdleProbe:
    """kafka-python's poll does not raise when the broker is unreachable, so a worker that has read
    nothing for a while asks the broker for its partitions' end offsets (bounded by
    ``PROBE_TIMEOUT_MS``); the outcome is the ``poll`` broker status: an idle worker notices an
    outage too."""

    def __init__(self, broker: BrokerStatus, retry_seconds: float) -> None:
        self.broker = broker
        self.every = min(IDLE_PROBE_S, max(0.5, retry_seconds / 4))
        self._at = time.monotonic() + self.every

    def heard(self) -> None:
        """The broker answered (a poll returned records, or a check succeeded)."""
        self.broker.fine("poll")
        self._at = time.monotonic() + self.every

    def poll_failed(self) -> None:
        """Check at the next empty poll (unless records come first)."""
        self._at = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() >= self._at

    def check(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        """An empty poll does not tell whether the broker answers: ask it, briefly."""
        try:
            consumer.end_offsets(partitions, timeout_ms=PROBE_TIMEOUT_MS)
        except KafkaError as exc:
            backoff = self.broker.trouble("poll", exc)  # StreamFailed past the retry limit
            self._at = time.monotonic() + min(backoff, self.every)
            return
        self.heard()
