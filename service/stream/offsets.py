"""OffsetBook: what the worker has read, processed and committed, per assigned partition.

``in_flight`` (read but not yet committed) drives backpressure (``apply_backpressure`` pauses the
partitions); ``to_commit`` gives the offsets that are safe to commit (the next offset after the
last record whose output was produced) and ``commit`` commits them (the caller has flushed first);
the lag gauge is the partition's high watermark (the broker's end offset while the partition is
paused) minus the committed offset.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from service.metrics import Metrics
from service.stream.retrying import GROUP_CHANGED, BrokerStatus

logger = logging.getLogger(__name__)

LAG_INTERVAL_S = 1.0
COMMITTED_TIMEOUT_MS = 500


class OffsetBook:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.assigned: frozenset[TopicPartition] = frozenset()
        self._uncommitted: dict[TopicPartition, int] = {}  # records read, not yet committed
        self._processed: dict[TopicPartition, int] = {}  # records produced, not yet committed
        self._next: dict[TopicPartition, int] = {}  # offset to commit
        self._committed: dict[TopicPartition, int | None] = {}
        self._lag_at = 0.0

    @property
    def in_flight(self) -> int:
        return sum(self._uncommitted.values())

    def assign(self, tps: set[TopicPartition]) -> None:
        self.revoke(set(self.assigned) - tps)
        self.assigned = frozenset(tps)
        self.metrics.kafka_assigned.set(len(self.assigned))
        self._lag_at = 0.0

    def revoke(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            for book in (self._uncommitted, self._processed, self._next, self._committed):
                book.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.kafka_lag.remove(tp.topic, str(tp.partition))
        self.assigned = self.assigned - tps
        self.metrics.kafka_assigned.set(len(self.assigned))

    def read(self, tp: TopicPartition, count: int) -> None:
        self._uncommitted[tp] = self._uncommitted.get(tp, 0) + count

    def processed(self, tp: TopicPartition, offset: int) -> None:
        self._processed[tp] = self._processed.get(tp, 0) + 1
        self._next[tp] = offset + 1

    def has_uncommitted(self) -> bool:
        return any(self._processed.get(tp) for tp in self.assigned)

    def to_commit(self) -> dict[TopicPartition, int]:
        return {tp: self._next[tp] for tp in self.assigned if self._processed.get(tp)}

    def commit(self, consumer: Any, broker: BrokerStatus, timeout_s: float) -> None:
        """Commit ``to_commit``; a refusal because the group moved on is logged (the records are
        read again by their new owner), other failures go to ``broker`` (which may give up)."""
        offsets = self.to_commit()
        if not offsets:
            return
        commits = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        try:
            consumer.commit(commits, timeout_ms=int(timeout_s * 1000))
        except GROUP_CHANGED as exc:
            self.metrics.kafka_commit_failures.inc()
            logger.warning("commit refused, the group has rebalanced (records are read again): %s", exc)
            return
        except KafkaError as exc:
            self.metrics.kafka_commit_failures.inc()
            broker.trouble("commit", exc)
            return
        self.metrics.kafka_commits.inc()
        self.committed(offsets)
        broker.fine("commit")

    def commit_async(self, consumer: Any) -> None:
        """Queue a commit of ``to_commit`` (in a rebalance callback, on the consumer's IO thread,
        where a blocking commit is refused). Should it fail, the records are read again by the
        partitions' next owner (at-least-once holds)."""
        offsets = self.to_commit()
        if offsets:
            commits = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
            consumer.commit_async(commits, callback=self._committed_async)

    def _committed_async(self, _offsets: Any, response: Any) -> None:
        if isinstance(response, BaseException):
            self.metrics.kafka_commit_failures.inc()
            logger.warning("commit before the rebalance failed (records are read again): %s", response)
        else:
            self.metrics.kafka_commits.inc()

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._uncommitted[tp] = max(0, self._uncommitted.get(tp, 0) - self._processed.pop(tp, 0))
            self._committed[tp] = offset
        self._lag_at = 0.0

    def apply_backpressure(self, consumer: Any, limit: int) -> None:
        """Pause the assigned partitions at ``limit`` records in flight; resume at half of it."""
        paused = consumer.paused()
        if not paused and self.in_flight >= limit:
            consumer.pause(*self.assigned)
            logger.info("pausing %d partitions: %d records in flight", len(self.assigned), self.in_flight)
        elif paused and self.in_flight <= limit // 2:
            consumer.resume(*paused)
        self.metrics.kafka_paused.set(len(consumer.paused()))

    def update_lag(self, consumer: Any) -> None:
        """Set the lag gauge (high watermark - committed) at most once a second. The high watermark
        comes with each fetch response; a paused partition (backpressure) is not fetched, so its
        watermark is asked of the broker (else the gauge would stand still while the backlog grows)."""
        now = time.monotonic()
        if now - self._lag_at < LAG_INTERVAL_S:
            return
        self._lag_at = now
        marks = {tp: consumer.highwater(tp) for tp in self.assigned}
        stale = [tp for tp, mark in marks.items() if mark is None or tp in consumer.paused()]
        if stale:
            try:
                ends = consumer.end_offsets(stale, timeout_ms=COMMITTED_TIMEOUT_MS)
            except KafkaError as exc:  # the broker is slow: the poll loop must not wait on it
                logger.debug("end offsets of paused partitions unknown: %s", exc)
                ends = {}
            for tp, end in ends.items():
                marks[tp] = max(end, marks[tp] or 0)
        for tp, highwater in marks.items():
            if highwater is None:
                continue
            if tp not in self._committed:
                try:
                    self._committed[tp] = consumer.committed(tp, timeout_ms=COMMITTED_TIMEOUT_MS)
                except KafkaError as exc:  # the broker is slow: the poll loop must not wait on it
                    logger.debug("committed offset of %s unknown: %s", tp, exc)
                    return
            committed = self._committed[tp] or 0
            self.metrics.kafka_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - committed))
