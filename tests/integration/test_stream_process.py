"""``newstagger stream`` processes on the real broker: SIGTERM, SIGKILL and restart, scale-out, a
model promoted mid-backlog."""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from service.model.registry import ModelRegistry
from service.settings import Settings
from service.stream.encoding import H_MODEL_VERSION
from tests.helpers import build_info_labels, free_port, scrape_series, stop_process, wait_for
from tests.integration.test_stream_support import (
    Reader,
    article,
    assert_per_key_order,
    highwaters,
    missing_ids,
    output_ids,
    produce,
    produce_articles,
    start_stream_process,
    stream_settings,
)
from tests.unit.test_cli_registry import add_version


def committed_by_partition(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=settings.group_id, enable_auto_commit=False
    )
    try:
        parts = consumer.partitions_for_topic(settings.input_topic) or set()
        return {p: consumer.committed(TopicPartition(settings.input_topic, p)) or 0 for p in parts}
    finally:
        consumer.close()


def source_of(record: Any) -> tuple[int, int]:
    """(partition, offset) of the input record a tagged record was made from."""
    source = json.loads(record.value)["source_record"]
    return source["partition"], source["offset"]


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def test_sigterm_finishes_the_batch_commits_and_exits_0(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir, metrics_port=free_port(), grace_seconds=10)
    produce_articles(kafka_bootstrap, settings.input_topic, range(3000))
    proc = start_stream_process(settings, tmp_path / "worker.log")
    reader = Reader(kafka_bootstrap, settings.output_topic)
    try:
        reader.read_count(1, timeout=60)  # tagging, so /metrics is up
        build_info = scrape_series(settings.metrics_port, "newstagger_build_info")
        signalled = time.monotonic()
        code = stop_process(proc, signal.SIGTERM, timeout=settings.grace_seconds + 5)
        took = time.monotonic() - signalled
        records = reader.read_to(highwaters(kafka_bootstrap, settings.output_topic))  # it has exited
    finally:
        stop_process(proc, signal.SIGKILL)
        reader.close()
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    assert build_info == [(build_info_labels(), 1.0)]
    assert took < settings.grace_seconds, took
    committed = committed_by_partition(settings)
    assert sum(committed.values()) >= 1
    done: dict[int, set[int]] = defaultdict(set)
    for rec in records:
        partition, offset = source_of(rec)
        done[partition].add(offset)
    for partition, offset in committed.items():  # everything committed was published first
        assert set(range(offset)) <= done[partition], partition
    assert "received SIGTERM" in log and "stream worker stopped" in log


def test_sigkill_mid_batch_then_restart_loses_nothing_and_resumes_from_the_commit(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    """The second worker publishes exactly one record for each input the first had not committed
    (each record's producer timestamp tells whose it is: the first's all predate its kill)."""
    count = 6000
    settings = stream_settings(kafka_bootstrap, model_dir)
    produce_articles(kafka_bootstrap, settings.input_topic, range(count))
    log = tmp_path / "worker.log"
    reader = Reader(kafka_bootstrap, settings.output_topic)
    procs = [start_stream_process(settings, log)]
    try:
        reader.read_count(200, timeout=60)
        procs[0].kill()
        procs[0].wait(10)
        killed_ms = time.time() * 1000
        committed_at_kill = committed_by_partition(settings)
        assert sum(committed_at_kill.values()) < count, "the worker finished before it was killed"
        procs.append(start_stream_process(settings, log))
        reader.read_until_complete(missing_ids({f"a-{i}" for i in range(count)}), timeout=90)
        wait_for(lambda: sum(committed_by_partition(settings).values()) == count, 20, what="all committed")
        assert stop_process(procs[1], signal.SIGTERM) == 0, log.read_text()[-3000:]
        records = reader.read_to(highwaters(kafka_bootstrap, settings.output_topic))
        committed_at_end = committed_by_partition(settings)
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGKILL)
        reader.close()
    assert set(output_ids(records)) == {f"a-{i}" for i in range(count)}
    # the restart resumed from the committed offsets: it re-tagged only what was not committed, once
    uncommitted = [(p, o) for p, end in committed_at_end.items() for o in range(committed_at_kill[p], end)]
    second = [r for r in records if r.timestamp > killed_ms]
    assert sorted(source_of(r) for r in second) == sorted(uncommitted)
    assert all(r.timestamp_type == 0 for r in records)  # CreateTime: set by the worker's producer


def test_two_workers_split_six_partitions_and_nothing_is_lost_when_one_leaves_and_one_dies(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir, topic_partitions=6)
    ports = [free_port(), free_port(), free_port()]
    log = tmp_path / "workers.log"
    procs = [start_stream_process(settings, log, metrics_port=p) for p in ports[:2]]
    reader = Reader(kafka_bootstrap, settings.output_topic)
    try:
        for port in ports[:2]:  # both get a share of the 6 partitions
            wait_for(lambda p=port: ready(p), 60, interval=0.2, what="worker ready")
        produce_articles(kafka_bootstrap, settings.input_topic, range(3000))
        reader.read_count(300, timeout=60)
        assert stop_process(procs[0], signal.SIGTERM) == 0  # leaves gracefully
        produce_articles(kafka_bootstrap, settings.input_topic, range(3000, 6000))
        reader.read_until(lambda r: any(int(output_ids([x])[0][2:]) >= 3000 for x in r[-200:]), 120)
        procs[1].kill()  # dies mid-stream
        procs[1].wait(10)
        procs.append(start_stream_process(settings, log, metrics_port=ports[2]))
        reader.read_until_complete(missing_ids({f"a-{i}" for i in range(6000)}), timeout=90)
        assert stop_process(procs[2], signal.SIGTERM) == 0
        records = reader.read_to(highwaters(kafka_bootstrap, settings.output_topic))  # all exited
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGKILL)
        reader.close()
    assert set(output_ids(records)) == {f"a-{i}" for i in range(6000)}
    assert_per_key_order(records)  # across the rebalances, the leave and the kill


def test_sigterm_leaves_the_group_so_its_partitions_move_before_the_session_times_out(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    """A worker stopped with SIGTERM leaves the group: the broker starts a rebalance at once, so the
    other member gives up its partition at its next heartbeat (0.5 s), not after the 10 s session
    timeout (which is when a killed one is noticed), and is then given both. How long the rebalance
    itself takes is the broker's business: tansu waits half a session per round, one or two rounds
    (5 or 10 s measured), so the leave is proven by when the revoke comes."""
    session_s = 10
    settings = stream_settings(
        kafka_bootstrap, model_dir, topic_partitions=2, session_timeout_ms=session_s * 1000
    )
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    def lines(log: Path, event: str) -> list[str]:
        return [line for line in log.read_text().splitlines() if f"partitions {event}:" in line]

    def owned(log: Path) -> int:
        assigned = lines(log, "assigned")
        return assigned[-1].count("[") if assigned else -1

    procs = [start_stream_process(settings, log) for log in logs]
    try:
        for log in logs:
            wait_for(lambda lg=log: owned(lg) == 1, 60, interval=0.2, what="a partition each")
        revokes = len(lines(logs[1], "revoked"))
        assert stop_process(procs[0], signal.SIGTERM) == 0, logs[0].read_text()[-3000:]
        left = time.monotonic()
        wait_for(lambda: len(lines(logs[1], "revoked")) > revokes, 60, interval=0.1, what="a revoke")
        revoked_after = time.monotonic() - left
        wait_for(lambda: owned(logs[1]) == 2, 60, interval=0.2, what="second worker owns both")
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGTERM)
    assert revoked_after < session_s / 2, revoked_after


def test_a_promotion_and_a_kill_mid_backlog_lose_nothing_and_say_which_model_tagged_what(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    """A backlog with bad records in it; v2 is promoted while it is consumed (the rest of the backlog
    comes once the worker serves v2), then the worker is killed and restarted. Every good id is tagged
    (duplicates allowed: what was not committed), each tagged record names its model in the body and
    the header, and the dead letters are exactly the bad records (again, duplicates allowed)."""
    registry = ModelRegistry(tmp_path / "registry")
    shutil.copytree(model_dir, registry.new_version_dir("v1"))
    registry.promote("v1")
    add_version(registry, model_dir, "v2", "2999-01-01T00:00:00Z")
    settings = stream_settings(kafka_bootstrap, registry.root)
    count, bad = 4000, {i for i in range(4000) if i % 97 == 5}
    values = [f"{{bad-{i}".encode() if i in bad else json.dumps(article(i)).encode() for i in range(count)]
    keyed = [(f"k{i % 7}".encode(), value, []) for i, value in enumerate(values)]
    produce(kafka_bootstrap, settings.input_topic, keyed[:2000])
    log, reloading = tmp_path / "worker.log", {"NEWSTAGGER_RELOAD_INTERVAL_SECONDS": "0.2"}
    reader = Reader(kafka_bootstrap, settings.output_topic)
    procs = [start_stream_process(settings, log, **reloading)]
    try:
        reader.read_count(500, timeout=60)
        registry.promote("v2")
        wait_for(lambda: "serving model newstagger v2" in log.read_text(), 30, what="v2 served")
        produce(kafka_bootstrap, settings.input_topic, keyed[2000:])
        reader.read_until(lambda r: any(dict(x.headers)[H_MODEL_VERSION] == b"v2" for x in r), 60)
        procs[0].kill()
        procs[0].wait(10)
        procs.append(start_stream_process(settings, log, **reloading))
        wait_for(lambda: sum(committed_by_partition(settings).values()) == count, 90, what="all committed")
        assert stop_process(procs[1], signal.SIGTERM) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGKILL)
        reader.close()
    records = Reader(kafka_bootstrap, settings.output_topic, settings.dlq_topic)
    try:
        got = records.read_to(highwaters(kafka_bootstrap, settings.output_topic, settings.dlq_topic))
    finally:
        records.close()
    tagged = [r for r in got if r.topic == settings.output_topic]
    assert set(output_ids(tagged)) == {f"a-{i}" for i in range(count) if i not in bad}
    assert_per_key_order(tagged)
    versions = {json.loads(r.value)["model"]["version"] for r in tagged}
    assert versions == {"v1", "v2"}
    for rec in tagged:
        assert dict(rec.headers)[H_MODEL_VERSION].decode() == json.loads(rec.value)["model"]["version"]
    dead = {r.value for r in got if r.topic == settings.dlq_topic}
    assert dead == {values[i] for i in bad}
