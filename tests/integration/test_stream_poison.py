"""Records that used to stop the worker on every restart: a lone surrogate in a field copied to
the output, records whose dead letter is over the producer's request size limit, records with
neither key nor value; and a number the tagged record (JSON) cannot carry. Each must be
dead-lettered and committed, and the partition must go on (``worker_in_thread`` checks the
worker never failed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import confluent_kafka
from kafka import KafkaProducer

from tests.helpers import wait_for
from tests.integration.test_stream_support import (
    Reader,
    article,
    committed_total,
    output_ids,
    produce,
    read_all_committed,
    stream_settings,
    worker_in_thread,
)

BIG_TEXT = json.dumps({"id": "big", "text": "word " * 600_000}).encode()  # 3 MB
BIG_HEADER = b"h" * 2_500_000


def test_surrogates_and_oversized_dead_letters_do_not_stop_the_partition(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir)
    bad: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = [
        (b"surrogate-source", b'{"id":"s3","text":"troops","source":"\\ud83d"}', []),
        (b"surrogate-id", b'{"id":"s2\\udc00","text":"troops in Kursk"}', []),
        (b"big-value", BIG_TEXT, [("traceparent", b"t-big")]),
        (b"big-header", b"notjson", [("big", BIG_HEADER), ("traceparent", b"t-hdr")]),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=8 * 1024 * 1024)
    try:
        for n, (key, value, headers) in enumerate(bad):
            producer.send(settings.input_topic, key=key, value=value, headers=headers, partition=0)
            producer.send(settings.input_topic, value=json.dumps(article(n)).encode(), partition=0)
        producer.flush(30)
    finally:
        producer.close(5)
    count = 2 * len(bad)
    got = read_all_committed(kafka_bootstrap, settings, count, timeout=60)
    assert sorted(output_ids(r for r in got if r.topic == settings.output_topic)) == [  # type: ignore[arg-type]
        f"a-{n}" for n in range(len(bad))
    ]
    letters = {r.key: (r.value, dict(r.headers)) for r in got if r.topic == settings.dlq_topic}
    assert len(letters) == len(bad)
    value, headers = letters[b"surrogate-source"]
    assert value == bad[0][1] and headers["newstagger-error-reason"] == b"undecodable"
    assert headers["newstagger-error-message"] == b"field 'source' is not valid Unicode (a lone surrogate)"
    assert letters[b"surrogate-id"][1]["newstagger-error-reason"] == b"undecodable"
    value, headers = letters[b"big-value"]
    assert value is None and headers["newstagger-error-reason"] == b"text_too_long"
    assert headers["newstagger-dropped"] == f"value={len(BIG_TEXT)}".encode()
    assert headers["traceparent"] == b"t-big" and headers["newstagger-source-offset"] == b"4"
    value, headers = letters[b"big-header"]
    assert value is None and "big" not in headers and headers["newstagger-error-reason"] == b"invalid_json"
    assert headers["newstagger-dropped"] == f"value=7,headers={3 + len(BIG_HEADER) + 11 + 5}".encode()
    assert headers["newstagger-source-offset"] == b"6"


def test_records_with_neither_key_nor_dead_letter_value_are_dead_lettered(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    """A tombstone without a key, and a 3 MB article without a key (its dead letter leaves the
    value out), produced by librdkafka: kafka-python refuses to send a record with neither key
    nor value, which stopped the worker on every restart. Their dead letters get an empty value."""
    settings = stream_settings(kafka_bootstrap, model_dir)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 8_000_000}
    )
    for n, value in enumerate([None, BIG_TEXT]):
        producer.produce(
            settings.input_topic, value=value, partition=0, headers=[("traceparent", b"t-%d" % n)]
        )
        producer.produce(settings.input_topic, value=json.dumps(article(n)).encode(), partition=0)
    assert producer.flush(30) == 0, "librdkafka could not deliver"
    with worker_in_thread(settings):
        reader = Reader(kafka_bootstrap, settings.output_topic, settings.dlq_topic)
        got = reader.read_count(4, timeout=60)
        reader.close()
        wait_for(
            lambda: committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 4,
            30,
            what="every record committed",
        )
    assert sorted(output_ids([r for r in got if r.topic == settings.output_topic])) == ["a-0", "a-1"]
    letters = sorted(
        (r for r in got if r.topic == settings.dlq_topic), key=lambda r: dict(r.headers)["traceparent"]
    )
    assert [(r.key, r.value) for r in letters] == [(None, b""), (None, b"")]
    tombstone, big = (dict(r.headers) for r in letters)
    assert tombstone["newstagger-error-reason"] == b"undecodable"
    assert tombstone["newstagger-error-message"] == b"record value is null"
    assert "newstagger-dropped" not in tombstone
    assert big["newstagger-error-reason"] == b"text_too_long"
    assert big["newstagger-dropped"] == f"value={len(BIG_TEXT)}".encode()
    assert big["newstagger-source-offset"] == b"2"


def strict_json(value: bytes) -> Any:
    """JSON as RFC 8259 defines it (Python's json reads ``Infinity`` and ``NaN``; most parsers do not)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(value, parse_constant=refuse)


def test_a_passthrough_number_json_cannot_carry_is_dead_lettered_not_published_as_infinity(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    """``1e999`` is valid JSON that parses as an infinite float: copied through as it was, the
    tagged record said ``Infinity``, which is not JSON (a strict downstream parser fails on it)."""
    settings = stream_settings(kafka_bootstrap, model_dir, passthrough_fields="title,metadata")
    values = [
        b'{"id": "inf", "text": "troops at the border", "metadata": {"score": 1e999}}',
        json.dumps(article(0, metadata={"score": 1.5})).encode(),
    ]
    produce(kafka_bootstrap, settings.input_topic, [(b"k", v, []) for v in values], partition=0)
    with worker_in_thread(settings):
        reader = Reader(kafka_bootstrap, settings.output_topic, settings.dlq_topic)
        got = reader.read_count(2, timeout=60)
        reader.close()
    tagged = [strict_json(r.value) for r in got if r.topic == settings.output_topic]
    assert [(t["id"], t["fields"]["metadata"]) for t in tagged] == [("a-0", {"score": 1.5})]
    [letter] = [r for r in got if r.topic == settings.dlq_topic]
    assert letter.value == values[0]
    assert dict(letter.headers)["newstagger-error-reason"] == b"unpublishable"
