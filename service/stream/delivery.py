"""The produce side of the stream worker: outcome -> tagged record or dead letter -> acked.

``Publisher.publish`` turns one processed input record into a tagged record (or a dead letter
with its reason) and sends it; every send stays in a window until ``flush`` has seen the broker
acknowledge it. A failed send is re-sent together with everything after it, so per-partition
order holds. A record too large to produce (refused by the client or by the broker) does not stop
the partition: a tagged record becomes an ``unpublishable`` dead letter, and a dead letter leaves
out its value, then the input headers, then the key (``newstagger-dropped`` says what and how
big; the original stays readable at its source offset). ``Pending`` is one input record on its
way from poll to produce.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RecordListTooLargeError

from service.core.types import TagResult
from service.metrics import Metrics
from service.settings import Settings
from service.stream.codec import InputEvent
from service.stream.encoding import DROPPABLE, OutRecord, Source, encode_dead_letter, encode_tagged
from service.stream.retrying import BrokerStatus, StreamFailed

logger = logging.getLogger(__name__)

FLUSH_WAIT_S = 5.0
#: the client (synchronously) or the broker refuses a record as too large
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(slots=True)
class Pending:
    """One input record between poll and produce: it ends with a ``result`` or a ``failure``
    (the dead-letter reason); until then ``future`` is its tagging in flight, or None while a
    retry waits for ``retry_at``."""

    record: Any  # kafka ConsumerRecord
    source: Source
    event: InputEvent | None
    future: Future[TagResult] | None = None
    failure: tuple[str, BaseException] | None = None
    result: TagResult | None = None
    attempts: int = 0
    retry_at: float = 0.0

    @property
    def settled(self) -> bool:
        return self.event is None or self.result is not None or self.failure is not None

    def cancel(self) -> None:
        """Give up its tagging in flight (the batcher skips it if still queued)."""
        if self.future is not None:
            self.future.cancel()


@dataclass(slots=True)
class _Sent:
    topic: str
    out: OutRecord
    partition: int | None
    future: Any  # kafka FutureRecordMetadata
    reason: str | None  # None = tagged record, else the DLQ reason
    record: Any  # the input ConsumerRecord: re-encoded if ``out`` is too large to produce
    error: BaseException | None = None  # why it is a dead letter
    dropped: tuple[str, ...] = ()  # what the dead letter leaves out (too large)

    @property
    def source(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)

    @property
    def offset(self) -> int:  # of the input record
        return int(self.record.offset)


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
        """Send the tagged record for a settled ``pending``, or a dead letter saying why there is none."""
        rec, now = pending.record, time.time()
        headers = rec.headers or []
        if pending.result is not None and pending.event is not None:
            try:
                out = encode_tagged(
                    pending.result,
                    rec.key,
                    headers,
                    pending.source,
                    pending.event.fields,
                    self.passthrough,
                    now,
                )
            except Exception as exc:  # one record's output must never stop its partition
                logger.exception("the tagged record cannot be encoded", extra=_where(rec))
                self._send(_sent(self.settings.dlq_topic, rec, "unpublishable", exc))
                return
            sent = _sent(self.settings.output_topic, rec)
            sent.out = out
            self._send(sent)
            if rec.timestamp and rec.timestamp > 0:
                self.metrics.kafka_event_age.observe(max(0.0, now - rec.timestamp / 1000.0))
            return
        reason, error = pending.failure or ("undecodable", ValueError("no event"))
        self._send(_sent(self.settings.dlq_topic, rec, reason, error))

    def _send(self, sent: _Sent) -> None:
        if sent.reason is not None:
            logger.info(
                "dead-lettering a record: %s",
                sent.reason,
                extra=_where(sent.record) | {"reason": sent.reason},
            )
            self._encode_dead_letter(sent)
        else:
            sent.partition = self._partition(sent)
        self._resend(sent)
        self._window.append(sent)

    def _partition(self, sent: _Sent) -> int | None:
        # keyed records follow the key (per-key order); unkeyed ones keep their input partition
        return None if sent.out.key is not None else sent.record.partition % self._out_partitions[sent.topic]

    def _encode_dead_letter(self, sent: _Sent) -> None:
        rec, reason = sent.record, sent.reason or "undecodable"
        source = Source(rec.topic, rec.partition, rec.offset)
        error = sent.error or ValueError("no event")
        version, now = self._model_version(), time.time()
        headers = rec.headers or []
        sent.out = encode_dead_letter(
            rec.key, rec.value, headers, source, reason, error, version, now, sent.dropped
        )
        sent.partition = self._partition(sent)

    def _resend(self, sent: _Sent) -> None:
        for _ in range(len(DROPPABLE) + 2):  # each refusal shrinks the record: bounded
            try:
                sent.future = self.producer.send(
                    sent.topic,
                    value=sent.out.value,
                    key=sent.out.key,
                    headers=sent.out.headers,
                    partition=sent.partition,
                )
                return
            except TOO_LARGE as exc:
                self._shrink(sent, exc)
            except KafkaTimeoutError as exc:  # no metadata for the topic within max_block_ms
                raise StreamFailed(
                    f"cannot produce to {sent.topic}: {exc} (the topic was deleted, or the broker does "
                    "not answer); nothing after the last acknowledged record is committed"
                ) from exc
        raise StreamFailed("a dead letter is too large to produce without its value, headers and key")

    def _shrink(self, sent: _Sent, exc: BaseException) -> None:
        """``sent`` is too large to produce: a tagged record becomes an ``unpublishable`` dead
        letter; a dead letter leaves out the next of its value, input headers and key."""
        rec = sent.record
        if sent.reason is None:
            sent.topic, sent.reason, sent.error = self.settings.dlq_topic, "unpublishable", exc
        else:
            present = {
                "value": rec.value,
                "headers": any(v is not None for _, v in rec.headers or []),
                "key": rec.key,
            }
            left = [part for part in DROPPABLE if present[part] and part not in sent.dropped]
            if not left:
                raise StreamFailed(
                    f"a dead letter is too large to produce even without the record: {exc}"
                ) from exc
            sent.dropped += (left[0],)
        logger.warning(
            "a record is too large to produce (%s); sending a dead letter without: %s",
            exc,
            ", ".join(sent.dropped) or "nothing",
            extra=_where(rec),
        )
        self._encode_dead_letter(sent)

    def flush(self, until: float) -> bool:
        """Wait until every sent record is acknowledged or the monotonic time ``until``, re-sending
        failed ones (from the first failure on, so order holds). True when all are acknowledged;
        False when time ran out (the window is kept: the next flush goes on with it). Raises
        StreamFailed for a failure that retrying cannot fix or that outlasted the retry limit."""
        while self._window:
            try:
                self.producer.flush(timeout=max(0.05, min(FLUSH_WAIT_S, until - time.monotonic())))
            except KafkaTimeoutError as exc:
                self._broker.trouble("produce", exc)
                if time.monotonic() >= until:
                    return False
                continue
            failed = next((i for i, s in enumerate(self._window) if s.future.failed()), None)
            if failed is None:
                for sent in self._window:
                    self.metrics.kafka_produced.labels(sent.topic).inc()
                    if sent.reason is not None:
                        self.metrics.kafka_dlq.labels(sent.reason).inc()
                self._window.clear()
                self._broker.fine("produce")
                return True
            error = self._window[failed].future.exception
            if isinstance(error, TOO_LARGE):  # the broker refused it: a smaller dead letter instead
                self._shrink(self._window[failed], error)
            else:
                backoff = self._broker.trouble("produce", error)
                time.sleep(max(0.0, min(backoff, until - time.monotonic())))
            for sent in self._window[failed:]:
                self._resend(sent)
            if time.monotonic() >= until:
                return False
        return True

    def forget(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Stop tracking what was sent for ``partitions`` (revoked: their records are read again);
        returns, per partition, the first input offset whose output was not acknowledged.
        Records of partitions still owned stay until acknowledged."""
        unacked: dict[TopicPartition, int] = {}
        for sent in self._window:
            if sent.source in partitions:
                unacked.setdefault(sent.source, sent.offset)
        self._window = [s for s in self._window if s.source not in partitions]
        return unacked

    def close(self, timeout: float) -> None:
        """Close the producer within about ``timeout`` seconds. Sends not acknowledged yet (the
        last flush ran out of time: the broker is unreachable or slow) are aborted at once rather
        than waited for: their input offsets are not committed, so they are read again either way.
        Aborting also keeps kafka-python from trying again when the producer is garbage collected
        and printing a traceback after the worker's one-line error."""
        if self._window:
            logger.warning(
                "closing the producer: %d records not acknowledged are dropped (they are read again)",
                len(self._window),
            )
            self._window.clear()
            self._abort()
        try:
            self.producer.close(timeout=timeout)
        except KafkaTimeoutError:
            logger.warning("the producer did not close within %.1fs; aborting what it holds", timeout)
            self._abort()
            try:
                self.producer.close(timeout=min(timeout, 0.5))
            except KafkaTimeoutError:
                logger.warning("the producer did not close")

    def _abort(self) -> None:
        sender = getattr(self.producer, "_sender", None)  # no public way to abort pending sends
        if sender is not None:
            sender.force_close()  # fails the pending batches, so the flush in close() ends


def _sent(topic: str, rec: Any, reason: str | None = None, error: BaseException | None = None) -> _Sent:
    """What will be sent to ``topic`` for input record ``rec`` (its ``out`` is set by the caller)."""
    return _Sent(topic, OutRecord(None, None, []), None, None, reason, rec, error)


def _where(rec: Any) -> dict[str, Any]:
    return {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset}
