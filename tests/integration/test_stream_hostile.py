"""Records of millions of tiny JSON values or protobuf fields, produced by librdkafka (an independent
client). Parsing one holds the GIL (0.7 s for a 10 MB ``metadata`` of a million entries, measured),
which stopped the whole process, heartbeats and health checks included; and such a record was then
tagged, though one API request could not hold as many values. Now each is counted before it is
parsed and dead-lettered as ``too_many_values``; the partition goes on."""

from __future__ import annotations

import json
from pathlib import Path

import confluent_kafka

from service.gen.newstagger.v1 import tagger_pb2
from tests.integration.test_stream_support import (
    article,
    output_ids,
    read_all_committed,
    stream_settings,
)

MILLION = 1_000_000
ENTRIES = b",".join(b'"%d":1' % i for i in range(MILLION))
METADATA = b'{"id":"meta","text":"troops","metadata":{' + ENTRIES + b"}}"  # 10 MB
ARRAYS = b'{"id":"arrays","text":"troops","x":[' + b",".join([b"[]"] * (3 * MILLION)) + b"]}"
PROTOBUF = tagger_pb2.Article(
    id="proto", text="troops", metadata={str(i): "" for i in range(300_000)}
).SerializeToString()


def test_records_of_millions_of_values_are_dead_lettered_before_they_are_parsed(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir, passthrough_fields="title,metadata")
    hostile = [
        (b"meta", METADATA, [("traceparent", b"t-meta")]),
        (b"arrays", ARRAYS, []),
        (b"proto", PROTOBUF, [("content-type", b"application/x-protobuf")]),
    ]
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 16_000_000}
    )
    for n, (key, value, headers) in enumerate(hostile):
        producer.produce(settings.input_topic, key=key, value=value, partition=0, headers=headers)
        producer.produce(settings.input_topic, value=json.dumps(article(n)).encode(), partition=0)
    assert producer.flush(60) == 0, "librdkafka could not deliver"
    count = 2 * len(hostile)
    got = read_all_committed(kafka_bootstrap, settings, count, timeout=90)
    tagged = [r for r in got if r.topic == settings.output_topic]
    assert sorted(output_ids(tagged)) == [f"a-{n}" for n in range(len(hostile))]
    letters = {r.key: dict(r.headers) for r in got if r.topic == settings.dlq_topic}
    assert sorted(letters) == sorted(key for key, _, _ in hostile)
    for key, headers in letters.items():
        assert headers["newstagger-error-reason"] == b"too_many_values", key
    most = 8 * settings.max_request_articles + 10_000
    assert (
        letters[b"meta"]["newstagger-error-message"]
        == (
            f"the value holds more than {most} JSON array elements and object members "
            f"(as many as one request of --max-request-articles {settings.max_request_articles} may)"
        ).encode()
    )
    assert letters[b"meta"]["traceparent"] == b"t-meta"
    refusal = letters[b"proto"]["newstagger-error-message"]
    assert refusal.startswith(b"the value holds more than 17384 protobuf fields")
