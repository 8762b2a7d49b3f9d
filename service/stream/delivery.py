"""The produce side of the stream worker: outcome -> tagged record or dead letter -> acked.

``Publisher.publish`` turns one processed input record into a tagged record (or a dead letter
with its reason) and sends it; every send stays in a window until ``flush`` has seen the broker
acknowledge it. A failed send is re-sent together with everything after it, so per-partition
order holds. ``BrokerStatus`` is the worker's view of broker health (readiness, error metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from service.core.errors import InvalidArticle, InvalidRequest
from service.core.types import TagResult
from service.metrics import Metrics
from service.settings import Settings
from service.stream.codec import InputEvent, OutRecord, Source, encode_dead_letter, encode_tagged

logger = logging.getLogger(__name__)

FLUSH_WAIT_S = 5.0
MAX_BACKOFF_S = 5.0


@dataclass(slots=True)
class Pending:
    """One input record between poll and produce."""

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


class BrokerStatus:
    """Whether the last broker operation worked; failures are counted and logged."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.ok = False

    def trouble(self, operation: str, exc: BaseException | None) -> None:
        self.ok = False
        self.metrics.kafka_errors.labels(operation).inc()
        logger.warning("Kafka %s failed, will retry: %s: %s", operation, type(exc).__name__, exc)


class Publisher:
    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer,
        metrics: Metrics,
        broker: BrokerStatus,
        model_version: Callable[[], str],
        passthrough: tuple[str, ...],
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.metrics = metrics
        self._broker = broker
        self._model_version = model_version
        self.passthrough = passthrough
        self._window: list[_Sent] = []
        self._out_partitions = {
            topic: len(producer.partitions_for(topic) or ()) or 1
            for topic in (settings.output_topic, settings.dlq_topic)
        }

    def publish(self, pending: Pending) -> None:
        """Send the tagged record for ``pending``, or a dead letter saying why there is none."""
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
            return
        reason, error = pending.failure or ("undecodable", ValueError("no event"))
        logger.info(
            "dead-lettering a record: %s",
            reason,
            extra={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset, "reason": reason},
        )
        dead = encode_dead_letter(
            rec.key, rec.value, headers, pending.source, reason, error, self._model_version(), now
        )
        self._send(self.settings.dlq_topic, dead, rec, reason)

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

    def flush(self, grace_left: Callable[[], float]) -> bool:
        """Wait until every sent record is acknowledged, re-sending failed ones (from the first
        failure on, so order holds). False only if the stop grace period ran out."""
        attempt = 0
        while self._window:
            try:
                self.producer.flush(timeout=min(FLUSH_WAIT_S, max(0.1, grace_left())))
            except KafkaTimeoutError as exc:
                self._broker.trouble("produce", exc)
                if grace_left() <= 0:
                    return False
                continue
            failed = next((i for i, s in enumerate(self._window) if s.future.failed()), None)
            if failed is None:
                for sent in self._window:
                    self.metrics.kafka_produced.labels(sent.topic).inc()
                    if sent.reason is not None:
                        self.metrics.kafka_dlq.labels(sent.reason).inc()
                self._window.clear()
                self._broker.ok = True
                return True
            self._broker.trouble("produce", self._window[failed].future.exception)
            if grace_left() <= 0:
                return False
            attempt += 1
            time.sleep(min(MAX_BACKOFF_S, 0.1 * 2**attempt))
            self.metrics.kafka_retries.labels("produce").inc()
            for sent in self._window[failed:]:
                self._resend(sent)
        return True

    def forget(self) -> None:
        """Drop the window (partitions revoked: their records will be read again elsewhere)."""
        self._window.clear()

    def close(self, timeout: float) -> None:
        self.producer.close(timeout=timeout)
