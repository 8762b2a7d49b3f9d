"""Input records too large to read: found, dead-lettered and skipped, so that one record cannot
halt its partition.

kafka-python refuses a network frame over ``receive_message_max_bytes`` (``clients.RECEIVE_MAX_BYTES``)
by its 4-byte length, before parsing it. The broker returns the first record batch at a
fetch offset whole, whatever the fetch size limits, so a batch that large (a record of ~100 MB)
aborts the connection with ``InvalidReceiveError``: the fetch fails, is sent again, fails again,
forever; ``poll`` returns nothing and raises nothing. Every other request in flight on that
connection (a commit, an offset query) fails with the same error, which retrying does fix
(``retrying.BrokerStatus``).

``FetchWatch`` notes such fetch failures of a consumer (kafka-python has no public hook for them:
it wraps the fetcher's error callback). ``find_unreadable`` then finds which partition cannot be
read at its position, and the offset: a consumer outside the group fetches each partition alone,
then the failing one one batch per fetch. The worker takes the records read before that offset,
dead-letters it (``too_large_to_read``: no key, value or headers, none could be read) and seeks
past it; a batch of several records takes one round per record.

Memory: kafka-python reads what the socket holds before it looks at the frame's length, so each
refused response costs about twice its size for a moment (~200 MB for a 100 MB record, measured);
the worker refuses it two or three times (its own fetch, then its probes) instead of forever.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import InvalidReceiveError, KafkaError

from service.settings import Settings
from service.stream import clients
from service.stream.delivery import Pending
from service.stream.encoding import Source

logger = logging.getLogger(__name__)

REASON = "too_large_to_read"
#: what one partition's probe may take (a fetch of ~100 MB took 0.3 to 4 s on tansu, loaded)
PROBE_WAIT_S = 15.0
POSITION_TIMEOUT_MS = 1000


class RecordTooLargeToRead(Exception):  # noqa: N818 - the dead letter's error class
    """The record batch at an offset is over the client's receive limit."""


class FetchWatch:
    """Notes the fetch failures of ``consumer`` that mean a response was over the receive limit."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.error: InvalidReceiveError | None = None
        fetcher = getattr(consumer, "_fetcher", None)
        original = getattr(fetcher, "_handle_fetch_error", None)
        if original is None:
            logger.warning("kafka-python's fetcher has changed: records too large to read are not detected")
            return

        def failed(node_id: Any, exc: BaseException) -> None:  # on the consumer's IO thread
            if isinstance(exc, InvalidReceiveError):
                self.error = exc
            original(node_id, exc)

        fetcher._handle_fetch_error = failed  # type: ignore[union-attr]

    def take(self) -> InvalidReceiveError | None:
        """The last such failure since the last ``take``, if any."""
        error, self.error = self.error, None
        return error


def positions(consumer: KafkaConsumer, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The fetch positions of ``partitions`` that are known (one of them failed to fetch)."""
    found = {}
    for tp in sorted(partitions):
        try:
            offset = consumer.position(tp, timeout_ms=POSITION_TIMEOUT_MS)
        except KafkaError as exc:  # revoked meanwhile, or the broker is slow: not probed now
            logger.debug("position of %s unknown: %s", tp, exc)
            continue
        if offset is not None:
            found[tp] = offset
    return found


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A partition's record batch at ``offset`` that cannot be read, and the records read before
    it from the worker's position (some brokers, tansu for one, return them with it, past the
    fetch size: the worker's own fetch cannot get them; they are handed to the worker)."""

    tp: TopicPartition
    offset: int
    error: RecordTooLargeToRead
    before: list[Any]

    def dead_letter(self) -> Pending:
        """What the worker publishes for it: a dead letter with where it was, and nothing of
        what it held (no key, value or headers)."""
        logger.warning("%s: dead-lettered unread", self.error)
        tp, offset = self.tp, self.offset
        record = ConsumerRecord(tp.topic, tp.partition, -1, offset, -1, -1, None, None, [], None, -1, -1, -1)
        return Pending(record, Source(tp.topic, tp.partition, offset), None, failure=(REASON, self.error))


def find_unreadable(
    settings: Settings, worker: KafkaConsumer, partitions: Iterable[TopicPartition], stopping: threading.Event
) -> list[Unreadable]:
    """Which of ``partitions`` the ``worker`` consumer cannot read from its position, and why.
    A consumer outside the group, with the same fetch sizes and receive limit, fetches each
    partition alone; one that fails is read again one batch per fetch to find the batch's offset
    (``_locate``). A new consumer follows each failure (its connection was aborted, and a late
    failure must not be blamed on the next partition)."""
    limit = worker.config["receive_message_max_bytes"]
    found: list[Unreadable] = []
    at = positions(worker, partitions)
    if len(at) == 1:  # alone, the partition is the one: a refused read of the batch spared
        [(tp, offset)] = at.items()
        located = _locate(settings, tp, offset, limit, stopping)
        return [] if located is None else [located]
    todo = list(at.items())
    while todo and not stopping.is_set():
        consumer, watch = _probe_consumer(settings, receive_message_max_bytes=limit)
        try:
            while todo and not stopping.is_set():
                tp, offset = todo.pop(0)
                if _read(consumer, watch, tp, offset, limit, stopping) is not None:
                    located = _locate(settings, tp, offset, limit, stopping)
                    if located is not None:
                        found.append(located)
                    break
        finally:
            consumer.close(autocommit=False, timeout_ms=1000)
    return found


def _probe_consumer(settings: Settings, **overrides: Any) -> tuple[KafkaConsumer, FetchWatch]:
    consumer = clients.build_consumer(settings, group_id=None, **overrides)
    return consumer, FetchWatch(consumer)


def _locate(
    settings: Settings, tp: TopicPartition, offset: int, limit: int, stopping: threading.Event
) -> Unreadable | None:
    """Read ``tp`` from ``offset`` one batch per fetch (the broker returns the first batch at
    the fetch offset whole, KIP-74, and no more) up to the batch that cannot be read."""
    consumer, watch = _probe_consumer(
        settings, fetch_max_bytes=1, max_partition_fetch_bytes=1, receive_message_max_bytes=limit
    )
    try:
        before: list[Any] = []
        error = _read(consumer, watch, tp, offset, limit, stopping, before)
        if error is None:
            return None
        failed_at = consumer.position(tp, timeout_ms=POSITION_TIMEOUT_MS)
        failed_at = offset if failed_at is None else failed_at
        return Unreadable(tp, failed_at, too_large(tp, failed_at, error, limit), before)
    finally:
        consumer.close(autocommit=False, timeout_ms=1000)


def _read(
    consumer: KafkaConsumer,
    watch: FetchWatch,
    tp: TopicPartition,
    offset: int,
    limit: int,
    stopping: threading.Event,
    into: list[Any] | None = None,
) -> InvalidReceiveError | None:
    """Read ``tp`` from ``offset`` until a fetch fails (its error), or None at the partition's
    end, past ``limit`` bytes of records, after ``PROBE_WAIT_S`` without progress, or once
    ``stopping`` is set. Without
    ``into``, the first record read ends it: the partition can be read."""
    consumer.assign([tp])
    consumer.seek(tp, offset)
    size = 0
    deadline = time.monotonic() + PROBE_WAIT_S
    while time.monotonic() < deadline and size <= limit and not stopping.is_set():
        records = consumer.poll(timeout_ms=100).get(tp, [])
        if (error := watch.take()) is not None:
            return error
        if records:
            if into is None:
                return None
            into.extend(records)
            size += sum(max(0, r.serialized_key_size) + max(0, r.serialized_value_size) for r in records)
            deadline = time.monotonic() + PROBE_WAIT_S
        highwater = consumer.highwater(tp)
        if highwater is not None and highwater <= (consumer.position(tp) or 0):
            return None
    if size <= limit and not stopping.is_set():
        logger.warning("reading %s from offset %d: no answer in %.0fs", tp, offset, PROBE_WAIT_S)
    return None


def too_large(
    tp: TopicPartition, offset: int, error: InvalidReceiveError, limit: int
) -> RecordTooLargeToRead:
    size = re.search(r"-?\d+", str(error))
    frame = f"a fetch response of {size.group()} bytes" if size else "a fetch response"
    return RecordTooLargeToRead(
        f"the record batch at offset {offset} of {tp.topic}[{tp.partition}] is too large to read: "
        f"{frame}, over the client's limit of {limit} (receive_message_max_bytes)"
    )
