#!/usr/bin/env python3
"""Kafka stream worker throughput and latency, against a real tansu broker on loopback.

For each configuration (1 worker, 2 workers; separate ``newstagger stream`` processes in one group
over a 6-partition input topic), each run:
  1. 20,000 corpus articles (../shared/bench/gen_corpus.py, mean ~475 words) are produced to a fresh
     input topic (not timed);
  2. the workers are started; the clock runs from the first tagged record to the last
     (producer timestamps of the output records) -> docs/s; wall time until every input offset is
     committed; worker CPU per document (utime+stime from /proc);
then, with one worker, a steady input rate below capacity (``--latency-fraction`` of the measured
rate) for ``--latency-seconds``: end-to-end latency = time a plain consumer receives the tagged
record minus the time it was produced to the input topic (p50/p99).
The in-process batch-64 rate (Tagger.tag on 64 articles at a time, one thread) is measured in the
same run. Medians over ``--runs`` runs are printed with the ratios, as a Markdown table.

    python benchmarks/kafka_bench.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GEN_CORPUS = REPO.parent / "shared" / "bench" / "gen_corpus.py"
sys.path.insert(0, str(REPO))
TICKS = os.sysconf("SC_CLK_TCK")

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from tests.helpers import free_port, stop_process, tansu_broker, wait_for  # noqa: E402


# ----------------------------------------------------------------------------- corpus and model
def prepare(cache: Path, n_train: int, n_docs: int) -> tuple[Path, list[dict[str, Any]]]:
    """The corpus (generated once) and a model trained on documents the benchmark does not send."""
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / f"corpus-{n_train + n_docs}.jsonl"
    if not corpus.exists():
        subprocess.run(
            [
                sys.executable,
                str(GEN_CORPUS),
                "--n",
                str(n_train + n_docs),
                "--seed",
                "1234",
                "--out",
                str(corpus),
            ],
            check=True,
        )
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    model_dir = cache / f"model-{n_train}"
    if not (model_dir / "manifest.json").exists():
        from training.config import FeatureConfig, TrainConfig
        from training.train import train

        train_file = cache / f"train-{n_train}.jsonl"
        train_file.write_text("".join(json.dumps(d) + "\n" for d in docs[:n_train]))
        train([train_file], model_dir, TrainConfig(features=FeatureConfig(use_char=False)), version="bench")
    return model_dir, docs[n_train:]


def inprocess_batch_rate(model_dir: Path, docs: list[dict[str, Any]], seconds: float) -> float:
    from service.core.tagger import Tagger
    from service.core.types import Article
    from service.model.artifact import load_artifact

    tagger = Tagger(load_artifact(model_dir))
    articles = [Article(d["id"], d["text"]) for d in docs]
    tagger.tag(articles[:64])  # warm up
    done, i, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tagger.tag([articles[(i + k) % len(articles)] for k in range(64)])
        done, i = done + 64, i + 64
    return done / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- processes
def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


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


def committed(bootstrap: str, tag: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{tag}", enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(f"in-{tag}", p)) or 0 for p in range(6))
    finally:
        consumer.close()


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


# ----------------------------------------------------------------------------- one run
def throughput_run(
    bootstrap: str, model_dir: Path, docs: list[dict[str, Any]], workers: int, log: Path
) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    create_topics(bootstrap, tag)
    produce_all(bootstrap, f"in-{tag}", docs)
    started = time.monotonic()
    procs = [start_worker(model_dir, bootstrap, tag, log) for _ in range(workers)]
    try:
        wait_for(lambda: committed(bootstrap, tag) >= len(docs), 600, interval=0.5, what="all committed")
        wall = time.monotonic() - started
        cpu = sum(cpu_seconds(p.pid) for p, _ in procs)
    finally:
        for proc, _ in procs:
            stop_process(proc, signal.SIGTERM, 30)
    records = read_output(bootstrap, tag, len(docs), 120)
    first_seen: dict[str, int] = {}
    for rec in records:
        doc_id = json.loads(rec.value)["id"]
        first_seen[doc_id] = min(rec.timestamp, first_seen.get(doc_id, rec.timestamp))
    assert len(first_seen) == len(docs), f"{len(first_seen)} of {len(docs)} tagged"
    stamps = sorted(first_seen.values())
    span = (stamps[-1] - stamps[0]) / 1000.0
    return {
        "rate": (len(stamps) - 1) / span,
        "wall": wall,
        "cpu_ms": 1000 * cpu / len(docs),
        "duplicates": len(records) - len(first_seen),
    }


def latency_run(
    bootstrap: str, model_dir: Path, docs: list[dict[str, Any]], rate: float, seconds: float, log: Path
) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    create_topics(bootstrap, tag)
    proc, port = start_worker(model_dir, bootstrap, tag, log)
    count = int(rate * seconds)
    sample = [docs[i % len(docs)] | {"id": f"lat-{i}"} for i in range(count)]
    latencies: list[float] = []
    try:
        import urllib.request

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:  # noqa: S310
                return bool(r.status == 200)

        wait_for(ready, 60, interval=0.2, what="worker ready")
        consumer = KafkaConsumer(f"out-{tag}", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        sender = threading.Thread(target=produce_all, args=(bootstrap, f"in-{tag}", sample, rate))
        sender.start()
        deadline = time.monotonic() + seconds + 60
        while len(latencies) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=100).values():
                now = time.time()
                latencies += [now - float(json.loads(r.value)["fields"]["published_at"]) for r in batch]
        sender.join()
        consumer.close()
    finally:
        stop_process(proc, signal.SIGTERM, 30)
    latencies.sort()
    warm = latencies[len(latencies) // 10 :] or latencies  # skip the first 10% (warm-up)
    warm.sort()
    return {"p50_ms": 1000 * warm[len(warm) // 2], "p99_ms": 1000 * warm[int(len(warm) * 0.99) - 1]}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--train-docs", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-seconds", type=float, default=8.0)
    parser.add_argument("--latency-fraction", type=float, default=0.5)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "newstagger-bench")
    args = parser.parse_args()
    model_dir, docs = prepare(args.cache, args.train_docs, args.docs)
    log = args.cache / "kafka-workers.log"
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    baselines: list[float] = []
    latency: list[dict[str, float]] = []
    with tansu_broker() as bootstrap:
        for run in range(args.runs):
            baselines.append(inprocess_batch_rate(model_dir, docs, args.baseline_seconds))
            for workers in (1, 2):
                result = throughput_run(bootstrap, model_dir, docs, workers, log)
                result["ratio"] = result["rate"] / baselines[-1]
                results[workers].append(result)
                print(f"run {run + 1} workers {workers}: {results[workers][-1]}", file=sys.stderr)
            print(f"run {run + 1} in-process batch-64: {baselines[-1]:.0f} docs/s", file=sys.stderr)
        one = statistics.median(r["rate"] for r in results[1])
        latency.append(
            latency_run(bootstrap, model_dir, docs, one * args.latency_fraction, args.latency_seconds, log)
        )
    base = statistics.median(baselines)
    lat = latency[0]
    print(
        f"\nKafka stream worker, {args.docs} articles, 6 partitions, medians of {args.runs} runs; "
        f"in-process batch-64: {base:.0f} docs/s\n"
    )
    print(
        "| workers | docs/s | x in-process b64 (same run) | wall to all committed (s) "
        "| worker CPU ms/doc | duplicates |"
    )
    print("|---|---|---|---|---|---|")
    for workers in (1, 2):
        rate = statistics.median(r["rate"] for r in results[workers])
        wall = statistics.median(r["wall"] for r in results[workers])
        cpu = statistics.median(r["cpu_ms"] for r in results[workers])
        ratio = statistics.median(r["ratio"] for r in results[workers])
        dups = max(r["duplicates"] for r in results[workers])
        print(f"| {workers} | {rate:.0f} | {ratio:.2f} | {wall:.1f} | {cpu:.2f} | {dups:.0f} |")
    two = statistics.median(r["rate"] for r in results[2])
    print(f"\ntwo workers / one worker: {two / one:.2f}x")
    print(
        f"end-to-end latency at {one * args.latency_fraction:.0f} docs/s (1 worker): "
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
