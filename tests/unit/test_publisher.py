"""The stream worker's produce side when a record cannot be produced as it is: an output that
cannot be encoded, or one too large for the client or the broker, becomes a (smaller) dead
letter instead of stopping the partition. A fake producer stands in for kafka-python."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from service.core.types import HeadResult, LabelScore, TagResult
from service.metrics import Metrics
from service.settings import Settings
from service.stream.codec import InputEvent
from service.stream.delivery import Pending, Publisher
from service.stream.encoding import H_DROPPED, H_ERROR_CLASS, H_REASON, Source
from service.stream.retrying import BrokerStatus, StreamFailed


@dataclass
class Future:
    exception: BaseException | None

    def failed(self) -> bool:
        return self.exception is not None


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None


@dataclass
class FakeProducer:
    """Refuses records with neither key nor value, and records over ``client_limit`` bytes, in
    ``send`` (as kafka-python does; the limit is its max_request_size) and fails the future of
    those over ``broker_limit`` (MESSAGE_TOO_LARGE)."""

    client_limit: int
    broker_limit: int
    sent: list[Sent] = field(default_factory=list)

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def send(
        self, topic: str, value: Any = None, key: Any = None, headers: Any = None, partition: Any = None
    ) -> Any:
        if key is None and value is None:  # as kafka-python does
            raise ValueError("Need at least one: key or value")
        headers = headers or []
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > self.client_limit:
            raise MessageSizeTooLargeError(f"The message is {size} bytes when serialized")
        self.sent.append(Sent(topic, key, value, headers, partition))
        return Future(MessageSizeTooLargeError("refused by the broker") if size > self.broker_limit else None)

    def flush(self, timeout: float) -> None:
        pass

    def acknowledged(self) -> list[Sent]:
        """What the broker kept: the last send of each (the fake acknowledges small ones)."""
        return [s for s in self.sent if self._size(s) <= self.broker_limit]

    @staticmethod
    def _size(s: Sent) -> int:
        return len(s.value or b"") + len(s.key or b"") + sum(len(k) + len(v) for k, v in s.headers)


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    topic: str = "in"
    partition: int = 1
    offset: int = 42
    timestamp: int = 0


def publisher(producer: FakeProducer) -> tuple[Publisher, CollectorRegistry]:
    settings = Settings(output_topic="out", dlq_topic="dlq")
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    pub = Publisher(settings, producer, metrics, BrokerStatus(metrics, 60), lambda: "v1", ("title", "source"))  # type: ignore[arg-type]
    return pub, registry


def dead(rec: Record, reason: str = "invalid_json") -> Pending:
    return Pending(
        rec, Source(rec.topic, rec.partition, rec.offset), None, failure=(reason, ValueError("bad"))
    )


def tagged(rec: Record, fields: dict[str, Any]) -> Pending:
    result = TagResult(
        "a", (HeadResult("topics", "multi", (LabelScore("x", 0.9),), (LabelScore("x", 0.9),)),), "m", "v1"
    )
    pending = Pending(rec, Source(rec.topic, rec.partition, rec.offset), InputEvent(None, fields))  # type: ignore[arg-type]
    pending.result = result
    return pending


def flushed(pub: Publisher) -> None:
    assert pub.flush(time.monotonic() + 5)


def test_a_dead_letter_over_the_client_limit_is_sent_without_its_value() -> None:
    producer = FakeProducer(client_limit=1000, broker_limit=10_000)
    pub, registry = publisher(producer)
    pub.publish(dead(Record(b"k", b"v" * 3000, [("traceparent", b"t")])))
    flushed(pub)
    [letter] = producer.acknowledged()
    headers = dict(letter.headers)
    assert letter.topic == "dlq" and letter.value is None and letter.key == b"k"
    assert headers[H_DROPPED] == b"value=3000" and headers[H_REASON] == b"invalid_json"
    assert headers["traceparent"] == b"t" and headers["newstagger-source-offset"] == b"42"
    assert registry.get_sample_value("newstagger_kafka_dlq_records_total", {"reason": "invalid_json"}) == 1


def test_a_dead_letter_the_broker_refuses_leaves_out_value_then_headers() -> None:
    producer = FakeProducer(client_limit=10_000, broker_limit=1000)
    pub, registry = publisher(producer)
    pub.publish(dead(Record(None, b"notjson", [("big", b"h" * 2500), ("traceparent", b"t")])))
    flushed(pub)
    assert len(producer.sent) == 3  # as it was, without the value, without the headers
    [letter] = producer.acknowledged()
    headers = dict(letter.headers)
    # no key and no value left: an empty value (kafka-python cannot send neither)
    assert letter.value == b"" and "big" not in headers and "traceparent" not in headers
    assert headers[H_DROPPED] == b"value=7,headers=2515"
    assert letter.partition == 1  # unkeyed: the input partition, as before
    assert registry.get_sample_value("newstagger_kafka_broker_errors_total", {"operation": "produce"}) is None


def test_a_tagged_record_that_cannot_be_encoded_is_dead_lettered() -> None:
    producer = FakeProducer(client_limit=10_000, broker_limit=10_000)
    pub, registry = publisher(producer)
    value = b'{"id": "a", "text": "t", "source": "\\ud83d"}'
    pub.publish(tagged(Record(b"k", value, []), {"id": "a", "source": "\ud83d"}))  # past a lenient decoder
    flushed(pub)
    [letter] = producer.acknowledged()
    headers = dict(letter.headers)
    assert letter.topic == "dlq" and letter.value == value
    assert headers[H_REASON] == b"unpublishable" and headers[H_ERROR_CLASS] == b"UnicodeEncodeError"
    assert registry.get_sample_value("newstagger_kafka_dlq_records_total", {"reason": "unpublishable"}) == 1


@pytest.mark.parametrize("client_limit", [1000, 10_000])  # refused by the client / by the broker
def test_a_tagged_record_too_large_is_dead_lettered(client_limit: int) -> None:
    producer = FakeProducer(client_limit=client_limit, broker_limit=1000)
    pub, _ = publisher(producer)
    pub.publish(tagged(Record(b"k", b"{}", []), {"title": "x" * 2000}))
    pub.publish(tagged(Record(b"k", b"{}", [], offset=43), {"title": "small"}))
    flushed(pub)
    topics = [(s.topic, dict(s.headers).get(H_REASON)) for s in producer.acknowledged()]
    # the partition goes on (what followed a broker refusal is sent again after it: at-least-once)
    assert topics[-2:] == [("dlq", b"unpublishable"), ("out", None)]
    assert len(topics) == (2 if client_limit < 2000 else 3)


def test_an_output_topic_with_no_metadata_stops_the_worker_with_a_reason() -> None:
    """kafka-python's send waits up to max_block_ms (60 s) for the metadata of a topic it does not
    know (deleted while the worker runs, on a broker that does not create topics) and then raises
    KafkaTimeoutError. Before, that escaped as an unexpected error (a traceback); now the worker
    stops with a sentence naming the topic (exit 1; at its restart the topic is created again, or
    ``--no-create-topics`` says it is missing)."""

    class NoMetadata(FakeProducer):
        def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
            raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")

    pub, _ = publisher(NoMetadata(client_limit=10_000, broker_limit=10_000))
    with pytest.raises(StreamFailed, match="cannot produce to out: .*metadata"):
        pub.publish(tagged(Record(b"k", b"{}", []), {"title": "x"}))
