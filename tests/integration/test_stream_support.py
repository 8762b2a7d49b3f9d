"""Helpers for the Kafka stream tests: fresh topics and group per test, a worker in a thread or
a ``newstagger stream`` process, and a plain kafka-python reader that knows nothing of newstagger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from service.runtime import Runtime, build_runtime
from service.settings import Settings
from service.stream.clients import ensure_topics
from service.stream.main import build_stream_worker
from service.stream.worker import StreamWorker
from tests.helpers import wait_for

FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
NEWSTAGGER = str(Path(sys.executable).parent / "newstagger")


def stream_settings(bootstrap: str, model_dir: Path, **overrides: Any) -> Settings:
    """Settings with uuid-named topics and group, fast group timings, no HTTP endpoint."""
    tag = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "bootstrap_servers": bootstrap,
        "input_topic": f"articles-{tag}",
        "output_topic": f"tagged-{tag}",
        "dlq_topic": f"dlq-{tag}",
        "group_id": f"group-{tag}",
        "metrics_port": 0,
        "reload_interval_seconds": 0,
        "grace_seconds": 10,
        **FAST_GROUP,
    }
    settings = Settings(**(values | overrides))
    ensure_topics(settings, [settings.input_topic, settings.output_topic, settings.dlq_topic])
    return settings


@dataclass
class RunningWorker:
    worker: StreamWorker
    runtime: Runtime
    registry: CollectorRegistry
    thread: threading.Thread

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextmanager
def worker_in_thread(
    settings: Settings, prepare: Callable[[Runtime], None] | None = None
) -> Iterator[RunningWorker]:
    """A StreamWorker on the real broker, in a thread of this process; stopped on exit."""
    registry = CollectorRegistry()
    runtime = build_runtime(settings, registry=registry)
    if prepare is not None:
        prepare(runtime)
    worker = build_stream_worker(runtime)
    runtime.readiness.append(worker.ready)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="stream-worker", daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.ready()[0] or errors, 30, what="worker assigned")
        assert not errors, errors
        yield RunningWorker(worker, runtime, registry, thread)
    finally:
        worker.stop()
        thread.join(settings.grace_seconds + 10)
        runtime.close(5)
    assert not thread.is_alive(), "worker did not stop"
    assert not errors, errors


def article(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"a-{i}",
        "title": f"Report {i}",
        "text": f"Troops were deployed near the border on day {i} as talks on sanctions stalled.",
        "source": "wire",
        "url": f"https://example.test/{i}",
        **extra,
    }


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
    partition: int | None = None,
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers, partition=partition)
        producer.flush(30)
    finally:
        producer.close(5)


def produce_articles(bootstrap: str, topic: str, ids: Sequence[int], keyed: bool = True) -> None:
    produce(
        bootstrap,
        topic,
        [((f"k{i % 7}".encode() if keyed else None), json.dumps(article(i)).encode(), []) for i in ids],
    )


class Reader:
    """A plain kafka-python consumer (no group, no newstagger code) over every partition of some
    topics, from offset 0.

    It stops on evidence, never on a quiet spell: ``read_until_complete`` when the test knows what
    it expects, ``read_to`` up to high-water marks taken once the producing side is done. Marks come
    from fetch responses: tansu's ListOffsets (``end_offsets()``) can report fewer records than were
    just acknowledged (2,848-2,969 of 3,000 measured), so it is not used at all."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(self.consumer.partitions_for_topic(topic))
        ]
        assert self.partitions, f"no partitions for {topics}: create the topics first"
        self.consumer.assign(self.partitions)
        for tp in self.partitions:
            self.consumer.seek(tp, 0)
        self.records: list[Any] = []

    def _poll(self) -> None:
        for batch in self.consumer.poll(timeout_ms=200).values():
            self.records.extend(batch)

    def read_until(self, done: Callable[[list[Any]], bool], timeout: float = 60.0) -> list[Any]:
        """Records so far, once ``done`` holds for them: for a point to act at, not a final count."""

        def check() -> bool:
            self._poll()
            return done(self.records)

        wait_for(check, timeout, interval=0.0, what="records")
        return self.records

    def read_count(self, count: int, timeout: float = 60.0) -> list[Any]:
        return self.read_until(lambda r: len(r) >= count, timeout)

    def behind(self, marks: Mapping[TopicPartition, int] | None = None) -> dict[str, str]:
        """Partitions not yet read up to ``marks`` (default: the high-water mark of the latest fetch
        response; unknown before the first one)."""
        late = {}
        for tp in self.partitions:
            mark = self.consumer.highwater(tp) if marks is None else marks[tp]
            position = self.consumer.position(tp)
            if mark is None or position is None or position < mark:
                late[f"{tp.topic}[{tp.partition}]"] = f"at {position} of {mark}"
        return late

    def read_until_complete(
        self, missing: Callable[[list[Any]], Collection[object]], timeout: float = 90.0
    ) -> list[Any]:
        """Read until ``missing(records)`` is empty and every partition is caught up with the
        high-water mark its latest fetch reported; fail after ``timeout`` naming what is missing."""
        deadline = time.monotonic() + timeout
        while True:
            self._poll()
            lacking, late = missing(self.records), self.behind()
            if not lacking and not late:
                return self.records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after {timeout} s and {len(self.records)} records: {len(lacking)} missing "
                    f"{sorted(map(str, lacking))[:20]}, behind {late}"
                )

    def read_to(self, marks: Mapping[TopicPartition, int], timeout: float = 90.0) -> list[Any]:
        """Read every partition up to ``marks`` (from ``highwaters``)."""
        deadline = time.monotonic() + timeout
        while late := self.behind(marks):
            if time.monotonic() > deadline:
                raise AssertionError(f"after {timeout} s and {len(self.records)} records, behind {late}")
            self._poll()
        return self.records

    def close(self) -> None:
        self.consumer.close()


def highwaters(bootstrap: str, *topics: str, timeout: float = 30.0) -> dict[TopicPartition, int]:
    """The high-water mark of every partition of ``topics`` as fetches sent after this call report
    it: a fresh consumer, so no mark predates the call. Take it once the producing side is done
    (its process exited, or the worker committed everything) to read all it ever wrote."""
    reader = Reader(bootstrap, *topics)

    def marks() -> dict[TopicPartition, int] | None:
        reader._poll()
        found = {tp: reader.consumer.highwater(tp) for tp in reader.partitions}
        return None if None in found.values() else found

    try:
        return wait_for(marks, timeout, interval=0.0, what="high-water marks")
    finally:
        reader.close()


def missing_ids(expected: Collection[str]) -> Callable[[list[Any]], set[str]]:
    """For ``read_until_complete``: the ids of ``expected`` not yet among the records."""
    return lambda records: set(expected) - set(output_ids(records))


def output_ids(records: Sequence[Any]) -> list[str]:
    return [json.loads(r.value)["id"] for r in records]


def assert_per_key_order(records: Sequence[Any]) -> None:
    """Tagged records of ``produce_articles`` (ids a-<i>, i increasing within each key) as read
    from the output topic: per key, no record appears for the first time before an earlier record
    of its key (a record re-published after a fault may appear again after later ones)."""
    by_key: dict[bytes, list[int]] = {}
    for rec in records:
        by_key.setdefault(rec.key, []).append(int(json.loads(rec.value)["id"].removeprefix("a-")))
    for key, ids in by_key.items():
        rank = {i: n for n, i in enumerate(sorted(set(ids)))}
        top = -1
        for i in ids:
            assert rank[i] <= top + 1, f"key {key!r}: a-{i} came before an earlier record of its key"
            top = max(top, rank[i])


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in parts)
    finally:
        consumer.close()


def read_all_committed(bootstrap: str, settings: Settings, count: int, timeout: float) -> list[Any]:
    """Run a worker in a thread until it has published ``count`` records (output or dead letters)
    and committed ``count`` input offsets; the records read."""
    with worker_in_thread(settings):
        reader = Reader(bootstrap, settings.output_topic, settings.dlq_topic)
        got = reader.read_count(count, timeout=timeout)
        reader.close()
        wait_for(
            lambda: committed_total(bootstrap, settings.group_id, settings.input_topic) == count,
            30,
            what="every record committed",
        )
    return got


def start_stream_process(
    settings: Settings, log: Path, metrics_port: int | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """``newstagger stream`` as a child process, configured by flags for this test's settings;
    its log lines are appended to ``log``."""
    args = [
        NEWSTAGGER,
        "stream",
        "--model-dir",
        str(settings.model_dir),
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--input-topic",
        settings.input_topic,
        "--output-topic",
        settings.output_topic,
        "--dlq-topic",
        settings.dlq_topic,
        "--group-id",
        settings.group_id,
        "--metrics-port",
        str(settings.metrics_port if metrics_port is None else metrics_port),
        "--session-timeout-ms",
        str(settings.session_timeout_ms),
        "--heartbeat-interval-ms",
        str(settings.heartbeat_interval_ms),
        "--grace-seconds",
        str(settings.grace_seconds),
        "--log-format",
        "text",
    ]
    full_env = {**os.environ, "NEWSTAGGER_RELOAD_INTERVAL_SECONDS": "0", **env}
    with log.open("ab") as sink:
        return subprocess.Popen(args, env=full_env, stdout=subprocess.DEVNULL, stderr=sink)
