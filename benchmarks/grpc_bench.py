"""gRPC Tag throughput, latency and server CPU per request, against the in-process tagger.

    python benchmarks/grpc_bench.py                       # workers 1 and 2, concurrency 1 8 32 64
    python benchmarks/grpc_bench.py --workers 1 --runs 5 --seconds 6
    python benchmarks/grpc_bench.py --config word.toml    # another training config (TOML, as for `train`)
    python benchmarks/grpc_bench.py --server-code ../old  # serve from another checkout, same model and load
    python benchmarks/grpc_bench.py --workers 1 --concurrency 1 --concurrency 32   # just the target points

One article per request, against a real `newstagger serve` process. Corpus, model and in-process
baseline come from ``benchmarks.common``: the corpus of benchmarks/gen_corpus.py (--n 20000 --seed
1234, mean ~475 words), a model trained with the real ``training.train.train`` and the shipped
default model's config (``training/starter/config.toml``, or --config) on its first 4,000 documents
(thresholds tuned on the next 1,000), cached; requests are unseen documents after those. The
in-process baselines (``inprocess_baseline`` at batch 1 and batch 64, same tagger code, same
documents) are measured in the same run, before the server starts. The load generator is a separate
process using grpc.aio with pre-serialized requests and undecoded responses, so it costs the 2-core
machine as little as it can. Its callers are dealt over ``--connections`` TCP connections per
server process (SO_REUSEPORT spreads connections, not calls, over ``--workers`` processes). Server
CPU is read from /proc/<pid>/stat (utime+stime, the server and its worker processes) right before
and after each measured run. Each figure is the median of --runs runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STARTER_CONFIG = REPO / "training" / "starter" / "config.toml"  # the shipped default model's
CONCURRENCY = (1, 8, 32, 64)
CONNECTIONS_PER_WORKER = 4  # each its own TCP connection; a single one would reach one process only
sys.path.insert(0, str(REPO))  # this checkout's service/ and training/, also for the load generator

from benchmarks.grpc_server import SERVICE, cpu_seconds, start_server  # noqa: E402

TAG_METHOD = f"/{SERVICE}/Tag"


# ----------------------------------------------------------------------------- corpus, model, baseline
def prepare(args: argparse.Namespace) -> tuple[Path, list[dict[str, Any]]]:
    """The cached model (the shipped default model's config unless --config) and the request documents."""
    from benchmarks.common import Split, generate_corpus, read_corpus, trained_model
    from training.config import load_config

    corpus = generate_corpus(args.n)
    split = Split(args.train_docs, args.dev_docs)
    model_dir = trained_model(corpus, split, load_config(args.config))
    return model_dir, split.sample(read_corpus(corpus), args.request_docs)


def baseline(model_dir: Path, docs: list[dict[str, Any]], runs: int) -> dict[str, float]:
    """In-process ``Tagger.tag`` at batch 1 and batch 64 over the documents the load sends."""
    from benchmarks.common import inprocess_baseline, load_model, to_articles
    from service.core.tagger import Tagger

    tagger = Tagger(load_model(model_dir))
    articles = to_articles(docs)
    b1 = inprocess_baseline(tagger, articles, 1, runs)
    b64 = inprocess_baseline(tagger, articles, 64, runs)
    return {
        "b1_rate": b1["docs_per_s"],
        "b1_cpu_ms": b1["cpu_ms_per_doc"],
        "b1_p50_ms": b1["p50_batch_ms"],
        "b64_rate": b64["docs_per_s"],
        "b64_cpu_ms": b64["cpu_ms_per_doc"],
    }


# ----------------------------------------------------------------------------- load generator
def tag_channels(port: int, connections: int) -> tuple[list[Any], list[Any]]:
    """``connections`` grpc.aio channels to the server, each its own TCP connection (a local
    subchannel pool: SO_REUSEPORT spreads connections, not calls, over ``--workers`` processes),
    and a bytes-in, bytes-out Tag callable on each (no client-side (de)serializing)."""
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(connections)]
    return channels, [channel.unary_unary(TAG_METHOD) for channel in channels]


async def _load(
    port: int, payloads: list[bytes], concurrency: int, seconds: float, connections: int
) -> dict[str, Any]:
    import grpc

    channels, calls = tag_channels(port, max(1, min(connections, concurrency)))  # clients round-robin
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal errors
        call, i = calls[k % len(calls)], k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await call(payloads[i % len(payloads)], timeout=30)
                latencies.append(time.perf_counter() - t0)
            except grpc.aio.AioRpcError:
                errors += 1
            i += concurrency

    try:
        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        return {
            "done": len(latencies),
            "errors": errors,
            "elapsed": time.perf_counter() - start,
            "lat": latencies,
        }
    finally:
        for channel in channels:
            await channel.close()


def load_main(args: argparse.Namespace) -> int:
    from service.gen.newstagger.v1 import tagger_pb2 as pb

    docs = [json.loads(line) for line in Path(args.docs).read_text().splitlines()]
    payloads = [
        pb.TagRequest(article=pb.Article(id=d["id"], text=d["text"])).SerializeToString() for d in docs
    ]
    result = asyncio.run(_load(args.port, payloads, args.concurrency, args.seconds, args.connections))
    lat = sorted(result.pop("lat"))

    def pct(q: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    result.update(p50=pct(0.5), p90=pct(0.9), p99=pct(0.99))
    print(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- server side
def run_load(
    port: int, docs_file: Path, concurrency: int, seconds: float, connections: int = 1
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "_load", "--port", str(port), "--docs", str(docs_file)]
        + ["--concurrency", str(concurrency), "--seconds", str(seconds), "--connections", str(connections)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return dict(json.loads(out.stdout))


def measure_point(server_pid: int, load: Callable[[], dict[str, Any]], runs: int) -> dict[str, float]:
    """``runs`` runs of ``load`` (a load generator's result: done, elapsed, p50/p90/p99, errors) with
    the server's CPU time around each; the medians of req/s, latencies and server CPU-ms/req."""
    rows = []
    for _ in range(runs):
        cpu0 = cpu_seconds(server_pid)
        r = load()
        cpu = cpu_seconds(server_pid) - cpu0
        rows.append(
            {
                "rps": r["done"] / r["elapsed"],
                "p50": r["p50"],
                "p90": r["p90"],
                "p99": r["p99"],
                "cpu_ms": 1000 * cpu / max(1, r["done"]),
                "errors": r["errors"],
            }
        )
    return {k: statistics.median(row[k] for row in rows) for k in rows[0]}


def bench_server(
    model_dir: Path,
    docs_file: Path,
    workers: int,
    runs: int,
    seconds: float,
    code: Path,
    concurrency: tuple[int, ...] = CONCURRENCY,
    connections: int = 1,
) -> dict[int, dict[str, float]]:
    proc, port = start_server(model_dir, workers, code)
    table: dict[int, dict[str, float]] = {}
    try:
        run_load(port, docs_file, 8, 2.0, connections)  # warm-up
        for c in concurrency:
            load = functools.partial(run_load, port, docs_file, c, seconds, connections)
            table[c] = measure_point(proc.pid, load, runs)
            print(f"  workers={workers} c={c}: {table[c]}", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return table


def baseline_line(base: dict[str, float]) -> str:
    """The in-process baseline (``baseline``: batch 1 and 64) as the first line of a report."""
    return (
        f"In-process baseline: batch 1 = {base['b1_rate']:.0f} docs/s, p50 {base['b1_p50_ms']:.2f} ms, "
        f"{base['b1_cpu_ms']:.2f} CPU-ms/doc; batch 64 = {base['b64_rate']:.0f} docs/s, "
        f"{base['b64_cpu_ms']:.2f} CPU-ms/doc."
    )


def report(base: dict[str, float], results: dict[int, dict[int, dict[str, float]]]) -> str:
    lines = [
        baseline_line(base),
        "",
        "| workers | concurrency | req/s | p50 ms | p90 ms | p99 ms | server CPU-ms/req | CPU vs in-proc b64 "
        "| req/s vs in-proc b64 | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workers, table in results.items():
        for c, r in table.items():
            lines.append(
                f"| {workers} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} "
                f"| {r['cpu_ms']:.2f} | {r['cpu_ms'] / base['b64_cpu_ms']:.2f}x "
                f"| {r['rps'] / base['b64_rate']:.2f}x | {r['errors']:.0f} |"
            )
    lines.append("")
    for workers, table in results.items():
        if 32 not in table or 1 not in table:
            continue
        c32, c1 = table[32], table[1]
        lines.append(
            f"Targets, workers={workers}: c=32 CPU/req {c32['cpu_ms'] / base['b64_cpu_ms']:.2f}x (<= 1.3x: "
            f"{'met' if c32['cpu_ms'] <= 1.3 * base['b64_cpu_ms'] else 'MISSED'}); c=32 throughput "
            f"{c32['rps'] / base['b64_rate']:.2f}x (>= 0.8x: "
            f"{'met' if c32['rps'] >= 0.8 * base['b64_rate'] else 'MISSED'}); c=1 p50 {c1['p50']:.2f} ms vs "
            f"batch-1 {base['b1_p50_ms']:.2f} ms + 1 ms "
            f"({'met' if c1['p50'] <= base['b1_p50_ms'] + 1 else 'MISSED'})."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_load"]:
        p = argparse.ArgumentParser()
        p.add_argument("_load")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--docs", required=True)
        p.add_argument("--concurrency", type=int, required=True)
        p.add_argument("--seconds", type=float, required=True)
        p.add_argument("--connections", type=int, default=1)
        return load_main(p.parse_args(argv))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--workers", type=int, action="append", help="server processes (repeatable; default 1 and 2)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        help="concurrency levels (repeatable; default 1 8 32 64; the targets need 1 and 32)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=CONNECTIONS_PER_WORKER,
        help="client connections per server process (SO_REUSEPORT spreads connections, not calls)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per point; the median is reported")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one measured run")
    parser.add_argument("--n", type=int, default=20000, help="corpus size (documents)")
    parser.add_argument("--train-docs", type=int, default=4000)
    parser.add_argument("--dev-docs", type=int, default=1000)
    parser.add_argument(
        "--request-docs", type=int, default=1024, help="unseen documents the load cycles over"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=STARTER_CONFIG,
        help="training config TOML (default: the shipped default model's, training/starter/config.toml)",
    )
    parser.add_argument("--server-code", type=Path, default=REPO, help="checkout the server runs from")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    model_dir, docs = prepare(args)
    docs_file = model_dir.parent / f"grpc-requests-{len(docs)}.jsonl"
    docs_file.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    base = baseline(model_dir, docs, args.runs)
    print(f"  in-process: {base}", file=sys.stderr)
    load0 = os.getloadavg()[0]
    results = {
        w: bench_server(
            model_dir,
            docs_file,
            w,
            args.runs,
            args.seconds,
            args.server_code.resolve(),
            tuple(args.concurrency or CONCURRENCY),
            args.connections * w,
        )
        for w in args.workers or [1, 2]
    }
    text = report(base, results)
    load1 = os.getloadavg()[0]
    text += f"\n\nModel {model_dir.name}; load average {load0:.1f} before the server runs, {load1:.1f} after."
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
