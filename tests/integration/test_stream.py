"""The Kafka stream worker on the real broker, run in a thread of the test process."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.runtime import Runtime
from tests.helpers import REPO, free_port, wait_for
from tests.integration.test_stream_support import (
    Reader,
    article,
    committed_total,
    output_ids,
    produce,
    produce_articles,
    stream_settings,
    worker_in_thread,
)

SCHEMAS = REPO / "schemas"


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return loaded


def test_round_trip_keeps_keys_headers_and_order(kafka_bootstrap: str, model_dir: Path) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir, poll_max_records=16)
    sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    for i in range(120):
        headers = [("traceparent", f"00-{i:032x}-{i:016x}-01".encode()), ("x-internal", b"not copied")]
        payload = article(i, published_at="2024-05-01T09:30:00Z", metadata={"desk": "world"})
        sent.append((f"key-{i % 5}".encode(), json.dumps(payload).encode(), headers))
    produce(kafka_bootstrap, settings.input_topic, sent)
    with worker_in_thread(settings):
        reader = Reader(kafka_bootstrap, settings.output_topic)
        records = reader.read_count(120)
        reader.close()
    tagged_schema = schema("tagged-article.schema.json")
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for rec in records:
        payload = json.loads(rec.value)
        jsonschema.validate(payload, tagged_schema)
        i = int(payload["id"].split("-")[1])
        assert rec.key == f"key-{i % 5}".encode()
        headers = dict(rec.headers)
        assert headers["traceparent"] == f"00-{i:032x}-{i:016x}-01".encode()
        assert "x-internal" not in headers
        assert headers["newstagger-model-version"] == b"v1"
        assert payload["model"]["version"] == "v1"
        assert payload["fields"] == {
            "title": f"Report {i}",
            "source": "wire",
            "url": f"https://example.test/{i}",
            "published_at": "2024-05-01T09:30:00Z",
        }
        assert payload["source_record"]["topic"] == settings.input_topic
        assert {h["head"] for h in payload["heads"]} == {"topics", "stance"}
        by_key[rec.key].append(i)
    assert sorted(i for ids in by_key.values() for i in ids) == list(range(120))
    for key, ids in by_key.items():
        assert ids == sorted(ids), f"order broken for {key!r}"
    assert committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 120


BAD_INPUTS: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = [
    ("invalid_json", b'{"id": "x", "text": ', []),
    ("wrong_type", b'["not", "an", "object"]', []),
    ("wrong_type", b'{"id": 7, "text": "numbers are not ids"}', []),
    ("missing_field", b'{"text": "no id here"}', []),
    ("missing_field", b'{"id": "no-text"}', []),
    ("empty_text", b'{"id": "blank", "text": "   "}', []),
    ("text_too_long", json.dumps({"id": "long", "text": "word " * 1000}).encode(), []),
    ("undecodable", b'{"id": "x", "text": "\xff\xfe bad bytes"}', []),
    ("unknown_content_type", b"<article/>", [("content-type", b"application/xml")]),
    ("model_error", json.dumps({"id": "boom", "text": "EXPLODE the model"}).encode(), []),
]


def explode_on_marker(runtime: Runtime) -> None:
    """A model that fails on any article whose text contains EXPLODE."""
    real_tag = runtime.tagger.tag

    def tag(articles: Any, options: Any = None) -> Any:
        if any("EXPLODE" in a.text for a in articles):
            raise RuntimeError("the model failed")
        return real_tag(articles, options) if options is not None else real_tag(articles)

    runtime.tagger.tag = tag  # type: ignore[method-assign]


def test_every_bad_input_goes_to_the_dlq_and_the_partition_moves_on(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    """A plain kafka-python consumer reads the dead letters: original key, value and headers,
    plus why, where from, when and which model; good records around them are tagged."""
    settings = stream_settings(kafka_bootstrap, model_dir, max_text_bytes=2000)
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    for n, (_reason, value, headers) in enumerate(BAD_INPUTS):
        records.append((f"bad-{n}".encode(), value, [*headers, ("traceparent", b"t-%d" % n)]))
        records.append((None, json.dumps(article(n)).encode(), []))
    records.append((b"tombstone", None, []))
    produce(kafka_bootstrap, settings.input_topic, records, partition=0)  # one partition: strict order
    with worker_in_thread(settings, prepare=explode_on_marker):
        reader = Reader(kafka_bootstrap, settings.output_topic, settings.dlq_topic)
        got = reader.read_count(len(records))
        reader.close()
    dead = sorted((r for r in got if r.topic == settings.dlq_topic), key=lambda r: r.offset)
    tagged = [r for r in got if r.topic == settings.output_topic]
    assert sorted(output_ids(tagged)) == sorted(f"a-{n}" for n in range(len(BAD_INPUTS)))
    dlq_schema = schema("dead-letter.schema.json")
    by_key = {r.key: r for r in dead}
    assert len(dead) == len(BAD_INPUTS) + 1
    for n, (reason, value, headers) in enumerate(BAD_INPUTS):
        letter = by_key[f"bad-{n}".encode()]
        assert letter.value == value
        got_headers = dict(letter.headers)
        jsonschema.validate({k: v.decode() for k, v in letter.headers}, dlq_schema)
        assert got_headers["newstagger-error-reason"].decode() == reason, got_headers
        assert got_headers["traceparent"] == b"t-%d" % n
        for name, original in headers:
            assert got_headers[name] == original
        assert got_headers["newstagger-source-topic"].decode() == settings.input_topic
        assert got_headers["newstagger-source-partition"] == b"0"
        assert int(got_headers["newstagger-source-offset"]) == 2 * n
        assert got_headers["newstagger-model-version"] == b"v1"
        assert got_headers["newstagger-error-message"]
    tombstone = dict(by_key[b"tombstone"].headers)
    assert tombstone["newstagger-error-reason"] == b"undecodable"
    assert by_key[b"tombstone"].value is None
    assert dict(by_key[b"bad-9"].headers)["newstagger-error-class"] == b"RuntimeError"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


def test_metrics_scraped_over_http_count_records_dead_letters_and_lag(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    port = free_port()
    settings = stream_settings(kafka_bootstrap, model_dir, metrics_port=port)
    values = [json.dumps(article(i)).encode() for i in range(47)]
    values[5:5] = [b"{not json"]
    values[20:20] = [b'{"id": "e", "text": ""}']
    values[40:40] = [b'{"id": "m"}']
    with worker_in_thread(settings) as running:
        running.runtime.start_http()
        assert wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200)  # noqa: S310
        produce(kafka_bootstrap, settings.input_topic, [(None, v, []) for v in values])
        wait_for(
            lambda: committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 50,
            30,
            what="all 50 committed",
        )

        def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            samples = scrape(port)
            lag = [v for (n, _), v in samples.items() if n == "newstagger_kafka_consumer_lag_records"]
            return samples if lag and all(v == 0 for v in lag) else None

        samples = wait_for(settled, 15, interval=0.2, what="lag back to 0")
    topic = settings.input_topic
    assert total(samples, "newstagger_kafka_consumed_records_total", topic=topic) == 50
    assert total(samples, "newstagger_kafka_produced_records_total", topic=settings.output_topic) == 47
    assert total(samples, "newstagger_kafka_produced_records_total", topic=settings.dlq_topic) == 3
    assert total(samples, "newstagger_kafka_dlq_records_total") == 3
    for reason in ("invalid_json", "empty_text", "missing_field"):
        assert total(samples, "newstagger_kafka_dlq_records_total", reason=reason) == 1
    assert total(samples, "newstagger_kafka_commits_total") >= 1
    assert total(samples, "newstagger_kafka_event_age_seconds_count") == 47
    assert total(samples, "newstagger_kafka_rebalances_total", kind="assigned") >= 1


def slow_model(runtime: Runtime) -> None:
    real_tag = runtime.tagger.tag

    def tag(articles: Any, options: Any = None) -> Any:
        time.sleep(0.002 * len(articles))
        return real_tag(articles, options) if options is not None else real_tag(articles)

    runtime.tagger.tag = tag  # type: ignore[method-assign]


def test_slow_model_pauses_partitions_and_loses_nothing(kafka_bootstrap: str, model_dir: Path) -> None:
    settings = stream_settings(
        kafka_bootstrap, model_dir, max_in_flight_records=40, poll_max_records=20, max_batch_size=8
    )
    produce_articles(kafka_bootstrap, settings.input_topic, range(600))
    paused_seen = []
    with worker_in_thread(settings, prepare=slow_model) as running:
        reader = Reader(kafka_bootstrap, settings.output_topic)

        def all_out(records: list[Any]) -> bool:
            paused_seen.append(running.sample("newstagger_kafka_paused_partitions"))
            assert running.worker._book.in_flight <= 40 + 20  # bounded: limit + one poll
            return len({json.loads(r.value)["id"] for r in records}) == 600

        reader.read_until(all_out, 60)
        reader.close()
        wait_for(lambda: committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 600, 15)
    assert max(paused_seen) > 0, "partitions were never paused"


def test_lag_keeps_growing_while_a_stuck_model_keeps_the_partitions_paused(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    """A paused partition is not fetched, so kafka-python's high watermark for it stands still:
    before, the lag gauge froze at what the first fetch saw (62 of 1,200 measured) exactly when the
    workers fall behind, and the chart's lag alerts could not fire. tansu's end offsets can leave
    out a partition's last batch, so the records come in rounds and the bound is loose."""
    gate = threading.Event()

    def stuck_model(runtime: Runtime) -> None:
        real_tag = runtime.tagger.tag

        def tag(articles: Any, options: Any = None) -> Any:
            gate.wait(60)
            return real_tag(articles, options) if options is not None else real_tag(articles)

        runtime.tagger.tag = tag  # type: ignore[method-assign]

    settings = stream_settings(kafka_bootstrap, model_dir, max_in_flight_records=40, poll_max_records=20)
    produce_articles(kafka_bootstrap, settings.input_topic, range(200))
    try:
        with worker_in_thread(settings, prepare=stuck_model) as running:

            def lag() -> float:
                return sum(
                    sample.value
                    for metric in running.registry.collect()
                    if metric.name == "newstagger_kafka_consumer_lag_records"
                    for sample in metric.samples
                )

            wait_for(lambda: running.sample("newstagger_kafka_paused_partitions") == 6, 30, what="paused")
            for first in range(200, 1200, 200):
                produce_articles(kafka_bootstrap, settings.input_topic, range(first, first + 200))
            wait_for(lambda: lag() >= 800, 30, interval=0.2, what="the lag to count the new records")
            assert committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 0
            gate.set()
            wait_for(lambda: lag() == 0, 60, interval=0.2, what="the lag back to 0")
    finally:
        gate.set()
    assert committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 1200


@pytest.mark.parametrize("content_type", [b"application/x-protobuf"])
def test_protobuf_articles_are_tagged(kafka_bootstrap: str, model_dir: Path, content_type: bytes) -> None:
    pb = pytest.importorskip("service.gen.newstagger.v1.tagger_pb2")
    settings = stream_settings(kafka_bootstrap, model_dir)
    message = pb.Article(id="pb-1", title="Border", text="Troops were deployed near the border.", url="u")
    produce(
        kafka_bootstrap,
        settings.input_topic,
        [(b"k", message.SerializeToString(), [("content-type", content_type)])],
    )
    with worker_in_thread(settings):
        reader = Reader(kafka_bootstrap, settings.output_topic)
        [record] = reader.read_count(1)
        reader.close()
    payload = json.loads(record.value)
    assert payload["id"] == "pb-1"
    assert payload["fields"] == {"title": "Border", "url": "u"}
