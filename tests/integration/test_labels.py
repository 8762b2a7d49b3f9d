"""`newstagger labels collect` on a real broker: dedup, invalid events skipped, resumable,
at-least-once (a crash before the offset commit re-delivers, and the file comes out the same)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from service.cli import main

COLLECT_FLAGS = ["--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500", "--idle-seconds", "3"]


@pytest.fixture()
def topic(kafka_bootstrap: str) -> Iterator[str]:
    name = f"labels-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
        yield name
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, events: list[tuple[str, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for key, value in events:
        producer.send(topic, key=key.encode(), value=value)
    producer.flush(10)
    producer.close()


def row(rid: str, stance: str, text: str = "") -> tuple[str, bytes]:
    body = {
        "id": rid,
        "text": text or f"Report {rid} about talks.",
        "topics": ["diplomacy"],
        "stance": stance,
    }
    return rid, json.dumps(body).encode()


def collect(bootstrap: str, topic: str, out: Path, group: str) -> int:
    args = ["labels", "collect", "--topic", topic, "--out", str(out), "--group-id", group]
    return main([*args, "--bootstrap-servers", bootstrap, "--max-seconds", "60", *COLLECT_FLAGS])


def read(out: Path) -> dict[str, dict[str, object]]:
    return {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}


def test_collect_dedups_skips_invalid_and_resumes(
    kafka_bootstrap: str, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, group = tmp_path / "labels.jsonl", f"g-{uuid.uuid4().hex[:8]}"
    produce(
        kafka_bootstrap,
        topic,
        [
            row("a", "neutral"),
            row("b", "critical"),
            ("x", b"{oops"),
            ("y", b'{"id": "y", "text": "no labels"}'),
        ]
        + [row("a", "supportive")],  # same key: same partition, after the first "a"
    )
    assert collect(kafka_bootstrap, topic, out, group) == 0
    captured = capsys.readouterr()
    assert read(out) == {
        "a": json.loads(row("a", "supportive")[1]),
        "b": json.loads(row("b", "critical")[1]),
    }
    assert "collected 5 events" in captured.err and "2 invalid" in captured.err
    assert "not JSON" in captured.err and "no label field" in captured.err
    assert "2 rows (2 new, 1 updated); offsets committed" in captured.out

    # resumable: a second run reads only what arrived since, and merges into the file
    produce(kafka_bootstrap, topic, [row("c", "neutral"), row("b", "neutral")])
    assert collect(kafka_bootstrap, topic, out, group) == 0
    captured = capsys.readouterr()
    assert "collected 2 events" in captured.err
    rows = read(out)
    assert (
        set(rows) == {"a", "b", "c"}
        and rows["b"]["stance"] == "neutral"
        and rows["a"]["stance"] == "supportive"
    )


def test_a_crash_before_the_commit_redelivers_and_the_file_is_the_same(
    kafka_bootstrap: str,
    topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, group = tmp_path / "labels.jsonl", f"g-{uuid.uuid4().hex[:8]}"
    produce(kafka_bootstrap, topic, [row(f"r{i}", "neutral") for i in range(6)])

    def crash(self: KafkaConsumer, *args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before the offset commit")

    with monkeypatch.context() as m:
        m.setattr(KafkaConsumer, "commit", crash)
        with pytest.raises(RuntimeError, match="killed"):
            collect(kafka_bootstrap, topic, out, group)
    first = out.read_text()
    assert len(read(out)) == 6  # written (and fsynced) before the commit was attempted
    assert collect(kafka_bootstrap, topic, out, group) == 0
    assert "collected 6 events" in capsys.readouterr().err  # nothing was committed: all re-delivered
    assert out.read_text() == first  # merging the re-delivery changes nothing
