#!/usr/bin/env python3
"""Kafka stream worker throughput and latency, against a real tansu broker on loopback.

For each configuration (1 worker, 2 workers; separate ``newstagger stream`` processes in one group
over a 6-partition input topic), each run:
  1. the workers are started on fresh topics and the run waits until each has its partitions
     (/readyz), so the group's start-up rebalances are not measured;
  2. 20,000 unseen corpus articles (benchmarks/gen_corpus.py, mean ~475 words, keyed by id)
     are produced as fast as this process can; the clock runs from the first tagged record to the
     last (producer timestamps of the output records) -> docs/s; wall time from the first input
     sent until every input offset is committed; worker CPU per document (utime+stime, /proc);
then, with one worker, a steady input rate below capacity (each ``--latency-fractions`` of the
measured rate) for ``--latency-seconds``: end-to-end latency = time a plain consumer receives the
tagged record minus the time it was produced to the input topic (p50/p99, first 10% skipped).
The in-process batch-64 rate (``benchmarks.common.inprocess_baseline``: Tagger.tag on 64 articles at
a time, one thread) is measured in each run. Medians over ``--runs`` runs are printed with the
ratios, as a Markdown table. Corpus, model cache and baseline come from ``benchmarks/common.py``.

    python benchmarks/kafka_bench.py --runs 3                    # reference model: word 1-2 grams LR
    python benchmarks/kafka_bench.py --runs 3 --config default   # the shipped default model's config
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kafka import KafkaConsumer  # noqa: E402

from benchmarks.common import (  # noqa: E402
    Split,
    cache_dir,
    generate_corpus,
    inprocess_baseline,
    load_model,
    read_corpus,
    reference_config,
    to_articles,
    trained_model,
)
from benchmarks.grpc_server import cpu_seconds  # noqa: E402
from benchmarks.kafka_harness import (  # noqa: E402
    committed,
    create_topics,
    produce_all,
    read_output,
    start_worker,
    wait_ready,
)
from service.core.tagger import Tagger  # noqa: E402
from tests.helpers import stop_process, tansu_broker, wait_for  # noqa: E402

# ----------------------------------------------------------------------------- corpus and model
#: ``--config`` names: the reference model of this benchmark, and the default ``newstagger train``.
CONFIGS = {
    "word": "word 1-2 grams, one-vs-rest logistic regression (the reference model)",
    "default": "the shipped default model's config (training/starter/config.toml)",
}


def train_config(name: str) -> Any:
    """``word`` (``benchmarks.common.reference_config``), ``default`` (the shipped default
    model's config) or a TOML file as for ``train``."""
    from training.config import load_config
    from training.train import STARTER_CONFIG

    if name == "word":
        return reference_config()
    if name == "default":
        return load_config(STARTER_CONFIG)
    return load_config(Path(name))


def prepare(args: argparse.Namespace) -> tuple[Path, list[dict[str, Any]]]:
    """The cached model and the ``--docs`` corpus documents it never saw (train and dev excluded)."""
    split = Split(args.train_docs, args.dev_docs)
    corpus = generate_corpus(args.train_docs + args.dev_docs + args.docs)
    model_dir = trained_model(corpus, split, train_config(args.config))
    return model_dir, split.sample(read_corpus(corpus), args.docs)


def inprocess_batch64(model_dir: Path, docs: list[dict[str, Any]], repeats: int) -> float:
    """``Tagger.tag`` on 64 articles at a time, one thread, over 1,024 of the documents (median)."""
    tagger = Tagger(load_model(model_dir))
    return float(inprocess_baseline(tagger, to_articles(docs[:1024]), 64, repeats)["docs_per_s"])


# ----------------------------------------------------------------------------- one run
def throughput_run(
    bootstrap: str, model_dir: Path, docs: list[dict[str, Any]], workers: int, log: Path
) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    create_topics(bootstrap, tag)
    procs = [start_worker(model_dir, bootstrap, tag, log) for _ in range(workers)]
    # one client for the whole wait: a new consumer per check would compete with the workers for CPU
    offsets = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{tag}", enable_auto_commit=False)
    try:
        # every worker has its share of the partitions before any input exists, so the group's
        # start-up rebalances are not in the measured rate
        for _, port in procs:
            wait_ready(port)
        started = time.monotonic()
        produce_all(bootstrap, f"in-{tag}", docs)
        wait_for(lambda: committed(offsets, tag) >= len(docs), 600, interval=0.5, what="all committed")
        wall = time.monotonic() - started
        cpu = sum(cpu_seconds(p.pid) for p, _ in procs)
    finally:
        offsets.close()
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
        wait_ready(port)
        # fetch_max_wait_ms: tansu answers a fetch only when that wait is over, even if records
        # arrived meanwhile; at kafka-python's default (500 ms) the reader's own wait dominated
        consumer = KafkaConsumer(
            f"out-{tag}", bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
        )
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
    # skip the first 10% received (warm-up), in arrival order; then sort for the percentiles
    warm = sorted(latencies[len(latencies) // 10 :] or latencies)
    return {"p50_ms": 1000 * warm[len(warm) // 2], "p99_ms": 1000 * warm[int(len(warm) * 0.99) - 1]}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--train-docs", type=int, default=4000)
    parser.add_argument("--dev-docs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-repeats", type=int, default=5)
    parser.add_argument(
        "--config",
        default="word",
        help="training config: 'word' (reference model), 'default' (the shipped default's) or a TOML file",
    )
    parser.add_argument("--latency-fractions", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    args = parser.parse_args()
    model_dir, docs = prepare(args)
    log = cache_dir() / "kafka-workers.log"
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    baselines: list[float] = []
    latency: list[dict[str, float]] = []
    load_before = os.getloadavg()[0]
    with tansu_broker() as bootstrap:
        for run in range(args.runs):
            baselines.append(inprocess_batch64(model_dir, docs, args.baseline_repeats))
            for workers in (1, 2):
                result = throughput_run(bootstrap, model_dir, docs, workers, log)
                result["ratio"] = result["rate"] / baselines[-1]
                results[workers].append(result)
                print(f"run {run + 1} workers {workers}: {results[workers][-1]}", file=sys.stderr)
            print(f"run {run + 1} in-process batch-64: {baselines[-1]:.0f} docs/s", file=sys.stderr)
        one = statistics.median(r["rate"] for r in results[1])
        for fraction in args.latency_fractions:
            latency.append(
                latency_run(bootstrap, model_dir, docs, one * fraction, args.latency_seconds, log)
                | {"rate": one * fraction, "fraction": fraction}
            )
    base = statistics.median(baselines)
    model = CONFIGS.get(args.config, args.config)
    print(
        f"\nKafka stream worker, {args.docs} articles, 6 partitions, medians of {args.runs} runs; "
        f"model: {model}; in-process batch-64: {base:.0f} docs/s "
        f"(runs: {', '.join(f'{b:.0f}' for b in baselines)}); "
        f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    print(
        "| workers | docs/s | x in-process b64 (same run) | wall to all committed (s) "
        "| worker CPU ms/doc | duplicates | runs (docs/s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for workers in (1, 2):
        rate = statistics.median(r["rate"] for r in results[workers])
        wall = statistics.median(r["wall"] for r in results[workers])
        cpu = statistics.median(r["cpu_ms"] for r in results[workers])
        ratio = statistics.median(r["ratio"] for r in results[workers])
        dups = max(r["duplicates"] for r in results[workers])
        runs = ", ".join(f"{r['rate']:.0f}" for r in results[workers])
        print(f"| {workers} | {rate:.0f} | {ratio:.2f} | {wall:.1f} | {cpu:.2f} | {dups:.0f} | {runs} |")
    two = statistics.median(r["rate"] for r in results[2])
    print(f"\ntwo workers / one worker: {two / one:.2f}x")
    for lat in latency:
        print(
            f"end-to-end latency at {lat['rate']:.0f} docs/s ({lat['fraction']:.0%} of 1 worker): "
            f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
