"""Compressed input and output: records produced by librdkafka (confluent-kafka, an independent
client) in every codec Kafka defines are tagged; the worker compresses its own output as told;
a codec the worker cannot decode stops it at once instead of wedging it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import confluent_kafka
import kafka.codec
import pytest

from service.runtime import build_runtime
from service.settings import Settings
from service.stream.main import build_stream_worker
from service.stream.retrying import StreamFailed
from tests.integration.test_stream_support import (
    Reader,
    article,
    committed_total,
    output_ids,
    stream_settings,
    worker_in_thread,
)

CODECS = ("gzip", "snappy", "lz4", "zstd")


def produce_compressed(bootstrap: str, topic: str, codec: str, ids: range, bad: bool = True) -> None:
    """Articles (and one malformed record) produced by librdkafka with ``codec`` compression."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20, "acks": "all"}
    )
    for i in ids:
        producer.produce(topic, key=f"k{i % 5}".encode(), value=json.dumps(article(i)).encode())
    if bad:
        producer.produce(topic, key=f"bad-{codec}".encode(), value=b'{"id": "broken", "text": ')
    assert producer.flush(30) == 0, "librdkafka could not deliver"


@pytest.mark.parametrize("codec", CODECS)
def test_records_compressed_by_librdkafka_are_tagged_and_output_is_compressed(
    kafka_bootstrap: str, model_dir: Path, codec: str
) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir, output_compression=codec)
    produce_compressed(kafka_bootstrap, settings.input_topic, codec, range(40))
    with worker_in_thread(settings) as running:
        reader = Reader(kafka_bootstrap, settings.output_topic, settings.dlq_topic)
        records = reader.read_count(41, timeout=30)
        reader.close()
        wait_for_committed(settings, 41)
        producer_metrics = running.worker.publisher.producer.metrics()["producer-metrics"]
    tagged = [r for r in records if r.topic == settings.output_topic]
    dead = [r for r in records if r.topic == settings.dlq_topic]
    assert sorted(output_ids(tagged)) == sorted(f"a-{i}" for i in range(40))
    assert [dict(r.headers)["newstagger-error-reason"] for r in dead] == [b"invalid_json"]
    # what the worker's producer sent was compressed (compressed size / uncompressed size)
    assert 0 < producer_metrics["compression-rate-avg"] < 0.8, producer_metrics["compression-rate-avg"]


def wait_for_committed(settings: Settings, count: int) -> None:
    deadline = time.monotonic() + 20
    while committed_total(settings.bootstrap_servers, settings.group_id, settings.input_topic) < count:
        assert time.monotonic() < deadline, "not all committed"
        time.sleep(0.2)


def test_a_codec_the_worker_cannot_decode_stops_it_at_once_without_committing(
    kafka_bootstrap: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, poll failed forever at full CPU ("will retry"); now the error is fatal: run() raises
    StreamFailed within seconds, nothing is committed, and the partitions are free for others."""
    settings = stream_settings(kafka_bootstrap, model_dir)
    produce_compressed(kafka_bootstrap, settings.input_topic, "zstd", range(10), bad=False)
    monkeypatch.setattr(kafka.codec, "has_zstd", lambda: False)
    runtime = build_runtime(settings)
    worker = build_stream_worker(runtime)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - what the test checks
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        thread.join(30)
        took = time.monotonic() - started
    finally:
        worker.stop()
        thread.join(15)
        runtime.close(5)
    assert not thread.is_alive(), "the worker did not stop"
    assert len(failures) == 1 and isinstance(failures[0], StreamFailed), failures
    assert "UnsupportedCodecError" in str(failures[0])
    assert took < 20, took
    assert committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 0
