"""A record of 100 MB, over kafka-python's receive limit (a fetch response of at most 100,000,000
bytes): the fetch failed and was sent again forever, so nothing more was read from the topic (the
other partition, fetched in the same request, halted too), again at every restart; another
request failing on the aborted connection stopped the worker (an error deemed not retriable).
Now the worker finds the partition and offset it cannot read, publishes what comes before it,
dead-letters it unread and goes on; with one partition or with two (the other one readable)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from kafka import KafkaAdminClient

from tests.helpers import wait_for
from tests.integration.test_stream_support import (
    Reader,
    article,
    assert_per_key_order,
    committed_total,
    output_ids,
    stream_settings,
    worker_in_thread,
)

HUGE = 100_000_000  # with its batch's framing, just over the limit (a test: 5.5-6 s, measured)


@pytest.mark.parametrize("partitions", [1, 2])  # alone, or to be told from a readable one
def test_a_record_too_large_to_read_is_dead_lettered_and_its_partition_goes_on(
    kafka_bootstrap: str, model_dir: Path, partitions: int
) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir, topic_partitions=partitions)
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2 * HUGE})

    def send(partition: int, key: bytes, value: bytes) -> None:
        producer.produce(settings.input_topic, key=key, value=value, partition=partition)
        assert producer.flush(60) == 0, "librdkafka could not deliver"  # one batch per record

    send(0, b"k0", json.dumps(article(0)).encode())
    send(1 % partitions, b"k1", json.dumps(article(1)).encode())
    send(0, b"huge", b"x" * HUGE)
    for n in range(2, 6):
        send(n % partitions, b"k%d" % (n % 2), json.dumps(article(n)).encode())
    expected = {f"a-{n}" for n in range(6)} | {"dead letter"}

    def missing(records: list[Any]) -> set[str]:
        seen = {
            "dead letter" if r.topic == settings.dlq_topic else json.loads(r.value)["id"] for r in records
        }
        return expected - seen

    try:
        with worker_in_thread(settings) as running:
            reader = Reader(kafka_bootstrap, settings.output_topic, settings.dlq_topic)
            got = reader.read_until_complete(missing, timeout=120)
            reader.close()
            wait_for(
                lambda: committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 7,
                30,
                what="every record committed",
            )
            dead = running.sample("newstagger_kafka_dlq_records_total", reason="too_large_to_read")
    finally:  # the session's broker keeps records in memory
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.delete_topics([settings.input_topic])
        finally:
            admin.close()
    tagged = [r for r in got if r.topic == settings.output_topic]
    assert set(output_ids(tagged)) == expected - {"dead letter"}
    assert_per_key_order(tagged)
    letters = [r for r in got if r.topic == settings.dlq_topic]  # again only after a rebalance
    assert len({dict(r.headers)["newstagger-source-offset"] for r in letters}) == 1
    letter = letters[0]
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (None, b"")
    assert headers["newstagger-error-reason"] == b"too_large_to_read"
    assert headers["newstagger-error-class"] == b"RecordTooLargeToRead"
    assert headers["newstagger-source-topic"] == settings.input_topic.encode()
    offset = b"1" if partitions == 2 else b"2"
    assert (headers["newstagger-source-partition"], headers["newstagger-source-offset"]) == (b"0", offset)
    assert b"over the client's limit of 100000000" in headers["newstagger-error-message"]
    assert dead == len(letters)
