"""The stream worker's side of a group rebalance: the listener kafka-python calls (on the
consumer's IO thread) and what is dropped and rewound when partitions are taken away. The
worker's ``on_revoked`` first publishes, flushes and commits what it can, within its budget."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

from service.stream.delivery import Pending, Publisher
from service.stream.offsets import OffsetBook

if TYPE_CHECKING:
    from service.stream.worker import StreamWorker


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.on_revoked(revoked)

    def on_partitions_lost(self, lost: Any) -> None:
        self.worker.on_lost(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.on_assigned(assigned)


def abandon(
    revoked: set[TopicPartition],
    chunks: deque[list[Pending]],
    publisher: Publisher | None,
    consumer: KafkaConsumer | None,
    book: OffsetBook,
) -> None:
    """Drop the records not yet published (all of ``chunks``), and the unacknowledged sends of
    ``revoked`` partitions. Each partition that had some is rewound to the first of them:
    kafka-python keeps the fetch position of a partition that is assigned again, so without the
    rewind they would be skipped."""
    rewind: dict[TopicPartition, int] = {}
    dropped: dict[TopicPartition, int] = {}
    for chunk in chunks:
        for pending in chunk:
            tp = TopicPartition(pending.record.topic, pending.record.partition)
            rewind.setdefault(tp, pending.record.offset)
            dropped[tp] = dropped.get(tp, 0) + 1
            pending.cancel()
    chunks.clear()
    if publisher is not None:
        for tp, offset in publisher.forget(revoked).items():
            rewind[tp] = min(offset, rewind.get(tp, offset))
    for tp, offset in rewind.items():
        if consumer is not None and tp in consumer.assignment():
            consumer.seek(tp, offset)
        if tp not in revoked:
            book.read(tp, -dropped.get(tp, 0))
    book.revoke(revoked)


def names(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"
