"""StreamWorker: poll -> decode -> tag (shared micro-batcher) -> produce -> flush -> commit.

Delivery is at-least-once: an input offset is committed only after the tagged record or dead
letter for it, and for every record before it in its partition, has been acknowledged by the
broker (``acks=all``, idempotent producer). Records are emitted strictly in the order they were
read, so per-partition (and per-key) order holds in the output. Memory is bounded: past
``max_in_flight_records`` read-but-uncommitted records the assigned partitions are paused.
Tagging outcomes and retries live in ``tagging``; the produce side (sending, flushing with
re-sends) in ``delivery``; what a rebalance drops and rewinds in ``rebalance``.

Nothing waits without a bound: a flush waits at most ``FLUSH_BUDGET_S`` (the loop goes on
polling, so the member stays in its group, and tries again at the next commit); the revoke
callback, which runs on the consumer's IO thread, publishes what is already tagged, flushes and
commits within a quarter of the session timeout and abandons the rest (its records are read again
by the partitions' next owner). After ``stop`` everything is bounded by ``grace_seconds``, broker
or no broker: finishing, flushing and committing get the grace minus ``CLOSE_RESERVE_S``, closing
the two clients the rest (unacknowledged sends are aborted, not waited for: their input offsets
are not committed, so they are read again), and the tagging still queued is cancelled. An
error that retrying cannot fix, or one that outlasts ``stream_retry_seconds``, ends ``run`` with
StreamFailed (nothing more is committed). A worker that has read nothing for a few seconds checks
the broker (``retrying.IdleProbe``): an idle worker notices an outage too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from service.metrics import Metrics
from service.settings import Settings
from service.stream import clients
from service.stream.codec import DecodeFailed, decode_event
from service.stream.delivery import Pending, Publisher
from service.stream.encoding import Source
from service.stream.offsets import OffsetBook
from service.stream.rebalance import Listener, abandon, names
from service.stream.retrying import BrokerStatus, IdleProbe, StreamFailed
from service.stream.tagging import Submit, Tagging
from service.stream.unreadable import FetchWatch, find_unreadable

logger = logging.getLogger(__name__)

FLUSH_BUDGET_S = 1.0
COMMIT_INTERVAL_S = 1.0  # a commit is due this long after the last (sooner with many records in flight)
#: a commit waits at most this (a quarter of the grace period if shorter)
COMMIT_TIMEOUT_S = 5.0
#: of the grace period, what closing the clients is given (at most; a quarter of it if shorter)
CLOSE_RESERVE_S = 1.0
REVOKE_BUDGET_S = 5.0


class StreamWorker:
    """One Kafka consumer-group member. ``run`` blocks until ``stop`` (thread-safe) is called."""

    def __init__(
        self,
        settings: Settings,
        submit: Submit,
        metrics: Metrics,
        model_version: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._model_version = model_version
        self.passthrough = tuple(f.strip() for f in settings.passthrough_fields.split(",") if f.strip())
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._failure: StreamFailed | None = None
        self._chunks: deque[list[Pending]] = deque()
        self._book = OffsetBook(metrics)
        self._joined = False  # a rebalance has given this member its share (possibly none)
        self._broker = BrokerStatus(metrics, settings.stream_retry_seconds)
        self._tagging = Tagging(submit, self._stopping, settings.stream_retry_seconds)
        # the revoke callback blocks the consumer's IO thread (heartbeats): well under the session
        self._revoke_budget = min(REVOKE_BUDGET_S, settings.session_timeout_ms / 4000)
        # a commit in progress when ``stop`` comes must leave most of the grace for the rest
        self._commit_timeout = min(COMMIT_TIMEOUT_S, settings.grace_seconds / 4)
        self._close_reserve = min(CLOSE_RESERVE_S, settings.grace_seconds / 4)
        self._consumer: KafkaConsumer | None = None
        self._publisher: Publisher | None = None
        self._last_commit = time.monotonic()
        self._probe = IdleProbe(self._broker, settings.stream_retry_seconds)
        self._fetches: FetchWatch | None = None
        self._closing = False

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the stream worker has not started")
        return self._consumer

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError("the stream worker has not started")
        return self._publisher

    # --- public -----------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        if not self._joined:
            return False, "stream worker: no partitions assigned yet"
        if not self._broker.ok:
            return False, "stream worker: broker unreachable"
        if not self._tagging.ok:
            return False, "stream worker: tagging fails, retrying"
        if not self._book.assigned:  # more workers than partitions: a stand-by, not a fault (a
            # rollout or a node drain must not wait on it), and it takes over at the next rebalance
            return True, "stream worker: idle, in the group with no partition (more workers than partitions)"
        return True, f"stream worker: {len(self._book.assigned)} partitions assigned"

    def stop(self) -> None:
        """Stop polling; ``run`` finishes the batch, flushes, commits and returns."""
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self.settings.grace_seconds
            self._stopping.set()

    def run(self) -> None:
        """Until ``stop``; raises StreamFailed (after closing the clients) if it cannot go on."""
        try:
            if not self._start():
                return  # stopped before a broker answered
            while not self._stopping.is_set():
                self._step()
            if self._failure is not None:
                raise self._failure
            self._finish()
        except StreamFailed as exc:
            self._failure = exc  # the clients close quickly: the broker is what failed
            raise
        finally:
            self._close()

    # --- the loop -----------------------------------------------------------------------------
    def _start(self) -> bool:
        s = self.settings
        logger.info("stream worker connecting: %s", clients.describe_connection(s))
        topics = [s.input_topic, s.output_topic, s.dlq_topic]
        if not clients.ensure_topics(s, topics, patience_s=s.stream_retry_seconds, stopping=self._stopping):
            return False
        producer = clients.build_producer(s)
        try:
            self._publisher = Publisher(
                s, producer, self.metrics, self._broker, self._model_version, self.passthrough
            )
        except BaseException:
            producer.close(timeout=5.0)
            raise
        self._consumer = clients.build_consumer(s)
        self._fetches = FetchWatch(self._consumer)
        self._consumer.subscribe([s.input_topic], listener=Listener(self))
        logger.info("stream worker consuming %s as group %s", s.input_topic, s.group_id)
        return True

    def _step(self) -> None:
        self._book.apply_backpressure(self.consumer, self.settings.max_in_flight_records)
        busy = bool(self._chunks)
        try:
            polled = self.consumer.poll(
                timeout_ms=0 if busy else 100, max_records=self.settings.poll_max_records
            )
        except KafkaError as exc:
            if self._failure is not None:  # raised in the rebalance callback
                raise self._failure from exc
            self._probe.poll_failed()
            self._stopping.wait(self._broker.trouble("poll", exc))
            return
        if self._failure is not None:
            raise self._failure
        if polled:
            self._probe.heard()
            self._accept(polled)
        elif self._probe.due():
            partitions = list(self._book.assigned) or [TopicPartition(self.settings.input_topic, 0)]
            self._probe.check(self.consumer, partitions)
        if self._fetches is not None and (error := self._fetches.take()) is not None:
            self._skip_unreadable(error)
        self._emit(wait=0.0 if polled else 0.05)
        if self._due_for_commit():
            self._commit(time.monotonic() + FLUSH_BUDGET_S)
        self._book.update_lag(self._consumer)

    def _accept(self, polled: dict[TopicPartition, list[Any]]) -> None:
        chunk: list[Pending] = []
        s = self.settings
        limits = (s.max_text_bytes, self.passthrough, s.max_request_articles)
        for tp, records in polled.items():
            self.metrics.kafka_consumed.labels(tp.topic).inc(len(records))
            for rec in records:
                source = Source(rec.topic, rec.partition, rec.offset)
                try:
                    event = decode_event(rec.value, rec.headers or [], *limits)
                    chunk.append(Pending(rec, source, event))
                except DecodeFailed as exc:
                    chunk.append(Pending(rec, source, None, failure=(exc.reason, exc)))
            self._book.read(tp, len(records))
        self._chunks.append(chunk)
        for pending in chunk:  # blocks while the batcher queue is full: that is the backpressure
            if pending.event is not None and not self._tagging.start(pending):
                return  # stopping: the rest of the chunk is not committed

    def _skip_unreadable(self, error: KafkaError) -> None:
        """A fetch response was too large to read (``unreadable``): take the records before the
        batch that cannot be read, dead-letter it and seek past it; if none, a poll failure."""
        found = find_unreadable(self.settings, self.consumer, self._book.assigned, self._stopping)
        if not found and not self._stopping.is_set():
            self._stopping.wait(self._broker.trouble("poll", error))
        for bad in (u for u in found if u.tp in self.consumer.assignment()):
            if bad.before:
                self._accept({bad.tp: bad.before})
            self._chunks.append([bad.dead_letter()])
            self._book.read(bad.tp, 1)
            self.consumer.seek(bad.tp, bad.offset + 1)

    def _emit(self, wait: float, may_block: bool = True) -> bool:
        """Publish the settled records, oldest first (never out of order), up to the first one not
        settled: a chunk (one poll) may take several batches, and a stop must not throw away the
        batches already tagged. False when the oldest waits for a retry rather than for the model."""
        while self._chunks:
            chunk, done = self._chunks[0], 0
            try:
                for pending in chunk:
                    if not self._tagging.settle(pending, wait, may_block):
                        return pending.future is not None
                    self.publisher.publish(pending)
                    rec = pending.record
                    self._book.processed(TopicPartition(rec.topic, rec.partition), rec.offset)
                    done += 1
            finally:
                del chunk[:done]
            self._chunks.popleft()
        return True

    # --- flush and commit ---------------------------------------------------------------------
    def _due_for_commit(self) -> bool:
        if not self._book.has_uncommitted():
            return False
        if self._book.in_flight >= self.settings.max_in_flight_records // 2:
            return True
        return time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S

    def _commit(self, until: float) -> None:
        """Flush (until the monotonic time ``until``), then commit what is acknowledged."""
        self._last_commit = time.monotonic()
        if self.publisher.flush(until):
            timeout = min(self._commit_timeout, self._grace_left() - self._close_reserve)
            self._book.commit(self.consumer, self._broker, max(0.1, timeout))

    def _grace_left(self) -> float:
        return self._stop_deadline - time.monotonic() if self._stopping.is_set() else float("inf")

    # --- rebalance and shutdown ---------------------------------------------------------------
    def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """On the consumer's IO thread, bounded by the revoke budget: publish what is tagged
        already, flush, commit what is acknowledged; abandon the rest."""
        revoked = set(revoked)
        self.metrics.kafka_rebalances.labels("revoked").inc()
        if self._consumer is not None and revoked and not self._closing and self._failure is None:
            started = time.monotonic()
            try:
                self._emit(wait=0.0, may_block=False)
                if self.publisher.flush(started + self._revoke_budget):
                    self._book.commit_async(self.consumer)
            except StreamFailed as exc:  # raised by the poll loop, not here on the IO thread
                self._failure = exc
                self._stopping.set()
            logger.info("revoke handled in %.2fs", time.monotonic() - started)
        abandon(revoked, self._chunks, self._publisher, self._consumer, self._book)
        logger.info("partitions revoked: %s", names(revoked))

    def on_lost(self, lost: Iterable[TopicPartition]) -> None:
        """Membership lost (session expired): nothing can be committed; abandon everything."""
        lost = set(lost)
        self.metrics.kafka_rebalances.labels("revoked").inc()
        abandon(lost, self._chunks, self._publisher, self._consumer, self._book)
        logger.warning("partitions lost (the member was expelled): %s", names(lost))

    def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.metrics.kafka_rebalances.labels("assigned").inc()
        self._book.assign(set(assigned))
        self._joined = True
        logger.info("partitions assigned: %s", names(self._book.assigned))

    def _finish(self) -> None:
        """After ``stop``: finish and publish what was read, flush and commit, within the grace
        minus what closing the clients needs. Tagging still queued is cancelled (its records are
        not committed: they are read again)."""
        logger.info("stream worker stopping: finishing %d chunks", len(self._chunks))
        until = self._stop_deadline - self._close_reserve
        while self._chunks and time.monotonic() < until:
            if not self._emit(wait=min(0.5, max(0.01, until - time.monotonic()))):
                break  # the oldest record waits for a retry: it is left uncommitted
        for chunk in self._chunks:
            for pending in chunk:
                pending.cancel()
        self._commit(until)

    def _close(self) -> None:
        self._closing = True
        # for closing one client: the consumer and the producer share what is left of the grace
        budget = 1.0 if self._failure is not None else max(0.1, min(5.0, self._grace_left() / 2))
        # the producer first, while its window still holds every unacknowledged send (closing the
        # consumer revokes the partitions, which forgets theirs)
        if self._publisher is not None:
            try:
                self._publisher.close(timeout=budget)
            except Exception:
                logger.exception("closing the producer failed")
        if self._consumer is not None:
            try:
                self.consumer.close(autocommit=False, timeout_ms=int(budget * 1000))
            except Exception:
                logger.exception("closing the consumer failed")
        self._book.assign(set())
        self.metrics.kafka_paused.set(0)
        logger.info("stream worker stopped")
