"""What one ``kafka_bench.py`` run drives: ``newstagger stream`` worker processes (started, awaited
on /readyz, their CPU read from /proc), a run's three 6-partition topics, the producer of its input
and the reader of its output and committed offsets, all against a broker on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent


def start_worker(model_dir: Path, bootstrap: str, tag: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = [str(Path(sys.executable).parent / "newstagger"), "stream", "--model-dir", str(model_dir)]
    args += ["--bootstrap-servers", bootstrap, "--input-topic", f"in-{tag}", "--output-topic", f"out-{tag}"]
    args += ["--dlq-topic", f"dlq-{tag}", "--group-id", f"g-{tag}", "--metrics-port", str(port)]
    args += ["--session-timeout-ms", "6000", "--heartbeat-interval-ms", "1000", "--log-level", "WARNING"]
    env = {**os.environ, "NEWSTAGGER_RELOAD_INTERVAL_SECONDS": "0", "PYTHONPATH": str(REPO)}
    with log.open("ab") as sink:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    return proc, port


def wait_ready(port: int) -> None:
    """Until the worker's /readyz says it has a model and partitions assigned."""

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:  # noqa: S310
            return bool(r.status == 200)

    wait_for(ready, 60, interval=0.2, what="worker ready")


def create_topics(bootstrap: str, tag: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(f"{t}-{tag}", 6, 1) for t in ("in", "out", "dlq")])
    admin.close()


def produce_all(bootstrap: str, topic: str, docs: list[dict[str, Any]], rate: float = 0.0) -> None:
    """Send every doc (with ``published_at`` = send time); ``rate`` > 0 paces the sends."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=512 * 1024)
    start = time.perf_counter()
    for n, doc in enumerate(docs):
        if rate > 0:
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        value = {"id": doc["id"], "text": doc["text"], "published_at": repr(time.time())}
        producer.send(topic, key=doc["id"].encode(), value=json.dumps(value).encode())
    producer.flush(120)
    producer.close(10)


def committed(consumer: KafkaConsumer, tag: str) -> int:
    return sum(consumer.committed(TopicPartition(f"in-{tag}", p)) or 0 for p in range(6))


def read_output(bootstrap: str, tag: str, count: int, timeout: float) -> list[Any]:
    consumer = KafkaConsumer(f"out-{tag}", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and (len(records) < count or quiet < 2):
        polled = consumer.poll(timeout_ms=500)
        quiet = 0 if polled else quiet + 1
        for batch in polled.values():
            records.extend(batch)
    consumer.close()
    return records
