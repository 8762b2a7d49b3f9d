"""StreamWorker: poll -> decode -> tag (shared micro-batcher) -> produce -> flush -> commit.

Delivery is at-least-once: an input offset is committed only after the tagged record or dead
letter for it, and for every record before it in its partition, has been acknowledged by the
broker (``acks=all``, idempotent producer). Records are emitted strictly in the order they were
read, so per-partition (and per-key) order holds in the output. Memory is bounded: past
``max_in_flight_records`` read-but-uncommitted records the assigned partitions are paused.
The produce side (encoding, sending, flushing with re-sends) lives in ``delivery``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from service.core.errors import ModelNotReady
from service.core.types import TagResult
from service.metrics import Metrics
from service.settings import Settings
from service.stream import clients
from service.stream.codec import DecodeFailed, Source, decode_event
from service.stream.delivery import BrokerStatus, Pending, Publisher
from service.stream.offsets import OffsetBook

logger = logging.getLogger(__name__)


class StreamWorker:
    """One Kafka consumer-group member. ``run`` blocks until ``stop`` (thread-safe) is called."""

    def __init__(
        self,
        settings: Settings,
        submit: Callable[[list[Any]], list[Future[TagResult]]],
        metrics: Metrics,
        model_version: Callable[[], str],
        commit_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self._submit = submit
        self.metrics = metrics
        self._model_version = model_version
        self.commit_interval_s = commit_interval_s
        self.passthrough = tuple(f.strip() for f in settings.passthrough_fields.split(",") if f.strip())
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._chunks: deque[list[Pending]] = deque()
        self._book = OffsetBook(metrics)
        self._broker = BrokerStatus(metrics)
        self._consumer: KafkaConsumer | None = None
        self._publisher: Publisher | None = None
        self._last_commit = time.monotonic()
        self._done = threading.Event()
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
        if not self._book.assigned:
            return False, "stream worker: no partitions assigned"
        if not self._broker.ok:
            return False, "stream worker: broker unreachable"
        return True, f"stream worker: {len(self._book.assigned)} partitions assigned"

    def stop(self) -> None:
        """Stop polling; ``run`` finishes the batch, flushes, commits and returns."""
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self.settings.grace_seconds
            self._stopping.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def run(self) -> None:
        try:
            self._start()
            while not self._stopping.is_set():
                self._step()
            self._finish()
        finally:
            self._close()
            self._done.set()

    # --- the loop -----------------------------------------------------------------------------
    def _start(self) -> None:
        s = self.settings
        logger.info("stream worker connecting: %s", clients.describe_connection(s))
        clients.ensure_topics(s, [s.input_topic, s.output_topic, s.dlq_topic])
        producer = clients.build_producer(s)
        try:
            self._publisher = Publisher(
                s, producer, self.metrics, self._broker, self._model_version, self.passthrough
            )
        except BaseException:
            producer.close(timeout=5.0)
            raise
        self._consumer = clients.build_consumer(s)
        self._consumer.subscribe([s.input_topic], listener=_Listener(self))
        self._broker.ok = True
        logger.info("stream worker consuming %s as group %s", s.input_topic, s.group_id)

    def _step(self) -> None:
        self._apply_backpressure()
        busy = bool(self._chunks)
        try:
            polled = self.consumer.poll(
                timeout_ms=0 if busy else 100, max_records=self.settings.poll_max_records
            )
        except KafkaError as exc:
            self._broker.trouble("poll", exc)
            return
        if polled:
            self._accept(polled)
        self._emit(wait=0.0 if polled else 0.05)
        if self._due_for_commit():
            self._commit()
        self._book.update_lag(self._consumer)

    def _accept(self, polled: dict[TopicPartition, list[Any]]) -> None:
        chunk: list[Pending] = []
        limit = self.settings.max_text_bytes
        for tp, records in polled.items():
            self.metrics.kafka_consumed.labels(tp.topic).inc(len(records))
            for rec in records:
                source = Source(rec.topic, rec.partition, rec.offset)
                try:
                    chunk.append(Pending(rec, source, decode_event(rec.value, rec.headers or [], limit)))
                except DecodeFailed as exc:
                    chunk.append(Pending(rec, source, None, failure=(exc.reason, exc)))
            self._book.read(tp, len(records))
        wanted = [p for p in chunk if p.event is not None]
        try:  # blocks while the batcher queue is full: that is the backpressure
            futures = self._submit([p.event.article for p in wanted if p.event is not None])
        except ModelNotReady:
            logger.warning("the tagger is shutting down; %d records left uncommitted", len(chunk))
            self._stopping.set()
            return
        for pending, future in zip(wanted, futures, strict=True):
            pending.future = future
        self._chunks.append(chunk)

    def _emit(self, wait: float) -> None:
        """Produce the results of finished chunks, oldest first (never out of order)."""
        while self._chunks:
            chunk = self._chunks[0]
            for pending in chunk:
                if pending.future is not None and not pending.future.done():
                    if wait <= 0:
                        return
                    try:
                        pending.future.exception(timeout=wait)
                    except TimeoutError:
                        return
            self._chunks.popleft()
            for pending in chunk:
                self.publisher.publish(pending)
                rec = pending.record
                self._book.processed(TopicPartition(rec.topic, rec.partition), rec.offset)

    # --- flush and commit ---------------------------------------------------------------------
    def _due_for_commit(self) -> bool:
        if not self._book.has_uncommitted():
            return False
        if self._book.in_flight >= self.settings.max_in_flight_records // 2:
            return True
        return time.monotonic() - self._last_commit >= self.commit_interval_s

    def _commit(self, in_rebalance: bool = False) -> None:
        self._last_commit = time.monotonic()
        if not self.publisher.flush(self._grace_left):
            return
        offsets = self._book.to_commit()
        if not offsets:
            return
        commits = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        if in_rebalance:
            # kafka-python 3 runs rebalance callbacks on the consumer's IO thread, where a blocking
            # commit is refused; this one is queued before the re-join. Should it fail, the records
            # are read again by the partitions' next owner (at-least-once holds).
            self.consumer.commit_async(commits, callback=self._rebalance_committed)
            return
        try:
            self.consumer.commit(commits, timeout_ms=10_000)
        except KafkaError as exc:
            self.metrics.kafka_commit_failures.inc()
            self._broker.trouble("commit", exc)
            return
        self.metrics.kafka_commits.inc()
        self._book.committed(offsets)
        self._broker.ok = True

    def _rebalance_committed(self, _offsets: Any, response: Any) -> None:
        if isinstance(response, BaseException):
            self.metrics.kafka_commit_failures.inc()
            self._broker.trouble("commit", response)
        else:
            self.metrics.kafka_commits.inc()

    def _grace_left(self) -> float:
        return self._stop_deadline - time.monotonic() if self._stopping.is_set() else float("inf")

    def _apply_backpressure(self) -> None:
        limit = self.settings.max_in_flight_records
        paused = self.consumer.paused()
        if not paused and self._book.in_flight >= limit:
            self.consumer.pause(*self._book.assigned)
            logger.info(
                "pausing %d partitions: %d records in flight", len(self._book.assigned), self._book.in_flight
            )
        elif paused and self._book.in_flight <= limit // 2:
            self.consumer.resume(*paused)
        self.metrics.kafka_paused.set(len(self.consumer.paused()))

    # --- rebalance and shutdown ---------------------------------------------------------------
    def _drain(self, in_rebalance: bool = False) -> None:
        """Finish everything read so far and commit it (on revocation and on stop)."""
        while self._chunks and self._grace_left() > 0:
            self._emit(wait=min(1.0, max(0.01, self._grace_left())))
        self._commit(in_rebalance)

    def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        self.metrics.kafka_rebalances.labels("revoked").inc()
        if self._consumer is not None and revoked and not self._closing:
            self._drain(in_rebalance=True)
        self._chunks.clear()
        if self._publisher is not None:
            self._publisher.forget()
        self._book.revoke(revoked)
        logger.info("partitions revoked: %s", _names(revoked))

    def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.metrics.kafka_rebalances.labels("assigned").inc()
        self._book.assign(set(assigned))
        logger.info("partitions assigned: %s", _names(self._book.assigned))

    def _finish(self) -> None:
        logger.info("stream worker stopping: finishing %d chunks", len(self._chunks))
        self._drain()

    def _close(self) -> None:
        self._closing = True
        if self._consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except Exception:
                logger.exception("closing the consumer failed")
        if self._publisher is not None:
            try:
                self._publisher.close(timeout=max(0.5, min(5.0, self._grace_left())))
            except Exception:
                logger.exception("closing the producer failed")
        self._book.assign(set())
        self.metrics.kafka_paused.set(0)
        logger.info("stream worker stopped")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.on_assigned(assigned)


def _names(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"
