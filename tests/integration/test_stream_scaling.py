"""Scaling out the Kafka way, as a user sees it: a partition count that changes under a running
group, and more workers than partitions (the idle one stays up, says it is idle, holds no lag
series for a partition it does not own, and takes over when a busy one leaves)."""

from __future__ import annotations

import contextlib
import signal
import urllib.error
import urllib.request
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from service.settings import Settings
from tests.helpers import free_port, stop_process, wait_for
from tests.integration.test_stream import scrape, total
from tests.integration.test_stream_support import (
    Reader,
    missing_ids,
    produce_articles,
    start_stream_process,
    stream_settings,
    worker_in_thread,
)


def partition_count(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()


def test_the_group_follows_a_change_in_the_input_topics_partitions_within_the_metadata_age(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    """kafka-python's group leader notices new partitions only when it refreshes metadata (its
    default: every 5 minutes); the worker refreshes every ``--metadata-max-age-ms``. tansu has no
    CreatePartitions, so the input topic is deleted and created again with 4 partitions: the same
    metadata change, seen the same way. The worker's consumer must see the 4 partitions well
    within 20 s (a 1 s metadata age; the old code waited 300 s). What follows is tansu's business:
    the leader then rebalanced within ~2 s in 5 runs of 6, but tansu handed the member its previous
    assignment, and once it forgot the member (the topic's deletion), so the test stops at what the
    worker controls."""
    settings = stream_settings(kafka_bootstrap, model_dir, topic_partitions=2, metadata_max_age_ms=1000)
    with worker_in_thread(settings) as running:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.delete_topics([settings.input_topic])
            with contextlib.suppress(TopicAlreadyExistsError):  # tansu creates a topic a client asks for
                admin.create_topics([NewTopic(settings.input_topic, 4, 1)])
        finally:
            admin.close()
        count = partition_count(kafka_bootstrap, settings.input_topic)
        assert count != 2
        # the worker's cached cluster metadata, read without I/O: KafkaConsumer is not thread-safe,
        # and partitions_for_topic() from this thread would fetch metadata while the worker polls
        # (a CI run once failed on a kafka-python socket left unclosed around this test)
        cluster = running.worker.consumer._cluster
        wait_for(
            lambda: len(cluster.partitions_for_topic(settings.input_topic) or ()) == count,
            20,
            interval=0.1,
            what="the worker seeing the input topic's new partitions",
        )


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:  # noqa: S310
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def owned(port: int, settings: Settings) -> tuple[float, set[str]]:
    """What one worker's /metrics says it owns: the assigned-partitions gauge, and the partitions
    it reports lag for."""
    samples = scrape(port)
    lag = {
        dict(labels)["partition"]
        for (name, labels), _ in samples.items()
        if name == "newstagger_kafka_consumer_lag_records" and dict(labels)["topic"] == settings.input_topic
    }
    return total(samples, "newstagger_kafka_assigned_partitions"), lag


def test_a_worker_beyond_the_partition_count_idles_visibly_and_takes_over_when_one_leaves(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir, topic_partitions=1)
    ports = [free_port(), free_port()]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    reader = Reader(kafka_bootstrap, settings.output_topic)
    procs = [start_stream_process(settings, logs[0], metrics_port=ports[0])]
    try:
        wait_for(lambda: readyz(ports[0])[0] == 200, 60, interval=0.2, what="first worker ready")
        produce_articles(kafka_bootstrap, settings.input_topic, range(20))
        reader.read_until_complete(missing_ids({f"a-{i}" for i in range(20)}), timeout=60)
        wait_for(lambda: owned(ports[0], settings) == (1, {"0"}), 20, interval=0.2, what="lag of [0]")

        procs.append(start_stream_process(settings, logs[1], metrics_port=ports[1]))
        # one of the two owns the partition, the other is idle: whichever the assignor chose
        # the second has joined (the first keeps the partition meanwhile) and the two agree
        wait_for(
            lambda: (
                "partitions assigned:" in logs[1].read_text()
                and sorted(owned(p, settings) for p in ports) == [(0, set()), (1, {"0"})]
            ),
            60,
            interval=0.2,
            what="one busy worker, one idle",
        )
        idle, busy = sorted(range(2), key=lambda i: owned(ports[i], settings)[0])
        produce_articles(kafka_bootstrap, settings.input_topic, range(20, 40))  # the busy one tags them
        reader.read_until_complete(missing_ids({f"a-{i}" for i in range(40)}), timeout=60)
        assert procs[idle].poll() is None, logs[idle].read_text()[-3000:]
        assert owned(ports[idle], settings) == (0, set())  # still idle, no stale lag series
        assert readyz(ports[idle])[0] == 200  # a stand-by: a rollout or a node drain need not wait on it
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[idle]}/healthz", timeout=2) as response:  # noqa: S310
            assert response.status == 200  # alive: the chart's liveness probe does not restart it
        assert "partitions assigned: none" in logs[idle].read_text()

        assert stop_process(procs[busy], signal.SIGTERM) == 0, logs[busy].read_text()[-3000:]
        wait_for(lambda: owned(ports[idle], settings)[0] == 1, 60, interval=0.2, what="stand-by takes over")
        produce_articles(kafka_bootstrap, settings.input_topic, range(40, 60))
        reader.read_until_complete(missing_ids({f"a-{i}" for i in range(60)}), timeout=60)
        wait_for(lambda: owned(ports[idle], settings) == (1, {"0"}), 20, interval=0.2, what="its lag")
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGTERM)
        reader.close()
