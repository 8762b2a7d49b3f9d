"""StreamWorker: poll -> decode -> tag (shared micro-batcher) -> produce -> flush -> commit.

Delivery is at-least-once: an input offset is committed only after the tagged record or dead
letter for it, and for every record before it in its partition, has been acknowledged by the
broker (``acks=all``, idempotent producer). Records are emitted strictly in the order they were
read, so per-partition (and per-key) order holds in the output. Memory is bounded: past
``max_in_flight_records`` read-but-uncommitted records the assigned partitions are paused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from service.core.errors import InvalidArticle, InvalidRequest, ModelNotReady
from service.core.types import TagResult
from service.metrics import Metrics
from service.settings import Settings
from service.stream import clients
from service.stream.codec import (
    DecodeFailed,
    InputEvent,
    OutRecord,
    Source,
    decode_event,
    encode_dead_letter,
    encode_tagged,
)
from service.stream.offsets import OffsetBook

logger = logging.getLogger(__name__)

FLUSH_WAIT_S = 5.0
MAX_BACKOFF_S = 5.0


@dataclass(slots=True)
class _Pending:
    record: Any  # kafka ConsumerRecord
    source: Source
    event: InputEvent | None
    future: Future[TagResult] | None = None
    failure: tuple[str, BaseException] | None = None


@dataclass(slots=True)
class _Sent:
    topic: str
    out: OutRecord
    partition: int | None
    future: Any  # kafka FutureRecordMetadata
    reason: str | None  # None = tagged record, else the DLQ reason


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
        self._chunks: deque[list[_Pending]] = deque()
        self._window: list[_Sent] = []
        self._book = OffsetBook(metrics)
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._out_partitions: dict[str, int] = {}
        self._broker_ok = False
        self._last_commit = time.monotonic()
        self._done = threading.Event()
        self._closing = False

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the stream worker has not started")
        return self._consumer

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            raise RuntimeError("the stream worker has not started")
        return self._producer

    # --- public -----------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        if not self._book.assigned:
            return False, "stream worker: no partitions assigned"
        if not self._broker_ok:
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
        self._producer = clients.build_producer(s)
        for topic in (s.output_topic, s.dlq_topic):
            self._out_partitions[topic] = len(self._producer.partitions_for(topic) or ()) or 1
        self._consumer = clients.build_consumer(s)
        self._consumer.subscribe([s.input_topic], listener=_Listener(self))
        self._broker_ok = True
        logger.info("stream worker consuming %s as group %s", s.input_topic, s.group_id)

    def _step(self) -> None:
        self._apply_backpressure()
        busy = bool(self._chunks)
        try:
            polled = self.consumer.poll(
                timeout_ms=0 if busy else 100, max_records=self.settings.poll_max_records
            )
        except KafkaError as exc:
            self._broker_trouble("poll", exc)
            return
        if polled:
            self._accept(polled)
        self._emit(wait=0.0 if polled else 0.05)
        if self._due_for_commit():
            self._commit()
        self._book.update_lag(self._consumer)

    def _accept(self, polled: dict[TopicPartition, list[Any]]) -> None:
        chunk: list[_Pending] = []
        limit = self.settings.max_text_bytes
        for tp, records in polled.items():
            self.metrics.kafka_consumed.labels(tp.topic).inc(len(records))
            for rec in records:
                source = Source(rec.topic, rec.partition, rec.offset)
                try:
                    chunk.append(_Pending(rec, source, decode_event(rec.value, rec.headers or [], limit)))
                except DecodeFailed as exc:
                    chunk.append(_Pending(rec, source, None, failure=(exc.reason, exc)))
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
                self._produce(pending)

    def _produce(self, pending: _Pending) -> None:
        rec, now = pending.record, time.time()
        headers = rec.headers or []
        result: TagResult | None = None
        if pending.future is not None:
            try:
                result = pending.future.result()
            except (InvalidArticle, InvalidRequest) as exc:
                pending.failure = ("invalid_article", exc)
            except Exception as exc:
                logger.warning(
                    "model failed on a record: %s",
                    type(exc).__name__,
                    extra={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
                )
                pending.failure = ("model_error", exc)
        if result is not None and pending.event is not None:
            out = encode_tagged(
                result, rec.key, headers, pending.source, pending.event.fields, self.passthrough, now
            )
            self._send(self.settings.output_topic, out, rec, None)
            if rec.timestamp and rec.timestamp > 0:
                self.metrics.kafka_event_age.observe(max(0.0, now - rec.timestamp / 1000.0))
        else:
            reason, error = pending.failure or ("undecodable", ValueError("no event"))
            logger.info(
                "dead-lettering a record: %s",
                reason,
                extra={
                    "topic": rec.topic,
                    "partition": rec.partition,
                    "offset": rec.offset,
                    "reason": reason,
                },
            )
            dead = encode_dead_letter(
                rec.key, rec.value, headers, pending.source, reason, error, self._model_version(), now
            )
            self._send(self.settings.dlq_topic, dead, rec, reason)
        self._book.processed(TopicPartition(rec.topic, rec.partition), rec.offset)

    def _send(self, topic: str, out: OutRecord, rec: Any, reason: str | None) -> None:
        # keyed records follow the key (per-key order); unkeyed ones keep their input partition
        partition = None if out.key is not None else rec.partition % self._out_partitions[topic]
        sent = _Sent(topic, out, partition, None, reason)
        self._resend(sent)
        self._window.append(sent)

    def _resend(self, sent: _Sent) -> None:
        sent.future = self.producer.send(
            sent.topic,
            value=sent.out.value,
            key=sent.out.key,
            headers=sent.out.headers,
            partition=sent.partition,
        )

    # --- flush and commit ---------------------------------------------------------------------
    def _due_for_commit(self) -> bool:
        if not self._book.has_uncommitted():
            return False
        if self._book.in_flight >= self.settings.max_in_flight_records // 2:
            return True
        return time.monotonic() - self._last_commit >= self.commit_interval_s

    def _flush(self) -> bool:
        """Wait until every sent record is acknowledged, re-sending failed ones (from the first
        failure on, so order holds). False only if the stop grace period ran out."""
        attempt = 0
        while self._window:
            try:
                self.producer.flush(timeout=min(FLUSH_WAIT_S, max(0.1, self._grace_left())))
            except KafkaTimeoutError as exc:
                self._broker_trouble("produce", exc)
                if self._grace_left() <= 0:
                    return False
                continue
            failed = next((i for i, s in enumerate(self._window) if s.future.failed()), None)
            if failed is None:
                for sent in self._window:
                    self.metrics.kafka_produced.labels(sent.topic).inc()
                    if sent.reason is not None:
                        self.metrics.kafka_dlq.labels(sent.reason).inc()
                self._window.clear()
                self._broker_ok = True
                return True
            self._broker_trouble("produce", self._window[failed].future.exception)
            if self._grace_left() <= 0:
                return False
            attempt += 1
            time.sleep(min(MAX_BACKOFF_S, 0.1 * 2**attempt))
            self.metrics.kafka_retries.labels("produce").inc()
            for sent in self._window[failed:]:
                self._resend(sent)
        return True

    def _commit(self) -> None:
        self._last_commit = time.monotonic()
        if not self._flush():
            return
        offsets = self._book.to_commit()
        if not offsets:
            return
        try:
            self.consumer.commit(
                {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}, timeout_ms=10_000
            )
        except KafkaError as exc:
            self.metrics.kafka_commit_failures.inc()
            self._broker_trouble("commit", exc)
            return
        self.metrics.kafka_commits.inc()
        self._book.committed(offsets)
        self._broker_ok = True

    def _grace_left(self) -> float:
        return self._stop_deadline - time.monotonic() if self._stopping.is_set() else float("inf")

    def _broker_trouble(self, operation: str, exc: BaseException | None) -> None:
        self._broker_ok = False
        self.metrics.kafka_errors.labels(operation).inc()
        logger.warning("Kafka %s failed, will retry: %s: %s", operation, type(exc).__name__, exc)

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
    def _drain(self) -> None:
        """Finish everything read so far and commit it (on revocation and on stop)."""
        while self._chunks and self._grace_left() > 0:
            self._emit(wait=min(1.0, max(0.01, self._grace_left())))
        self._commit()

    def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        self.metrics.kafka_rebalances.labels("revoked").inc()
        if self._consumer is not None and revoked and not self._closing:
            self._drain()
        self._chunks.clear()
        self._window.clear()
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
        if self._producer is not None:
            try:
                self.producer.close(timeout=max(0.5, min(5.0, self._grace_left())))
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
