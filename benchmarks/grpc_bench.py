"""gRPC Tag throughput, latency and server CPU per request, against the in-process tagger.

    python benchmarks/grpc_bench.py                       # workers 1 and 2, concurrency 1 8 32 64
    python benchmarks/grpc_bench.py --workers 1 --runs 5 --seconds 6

One article per request (the corpus from ../shared/bench/gen_corpus.py, mean ~475 words), against
a real `newstagger serve` process. The load generator is a separate process using grpc.aio with
pre-serialized requests and undecoded responses, so it costs the 2-core machine as little as it
can. Server CPU is read from /proc/<pid>/stat (utime+stime, the server and its worker processes)
right before and after each measured run. The in-process baselines (Tagger.tag at batch 1 and
batch 64) are measured in the same run. Each figure is the median of --runs runs.

The model is the reference model of ../shared/bench/README.md: TF-IDF word 1-2 grams (200k
features) + one-vs-rest logistic regression over the corpus's 8 topics, trained once and cached.
(benchmarks/common.py did not exist yet when this was written; the helpers here are local.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GEN_CORPUS = REPO.parent / "shared" / "bench" / "gen_corpus.py"
TAG_METHOD = "/newstagger.v1.TaggerService/Tag"
TICKS = os.sysconf("SC_CLK_TCK")
CONCURRENCY = (1, 8, 32, 64)
sys.path.insert(0, str(REPO))  # this checkout's service/ and training/, also for the server and client


# ----------------------------------------------------------------------------- corpus and model
def prepare(
    cache: Path, n_train: int, n_requests: int, gen_corpus: Path = GEN_CORPUS
) -> tuple[Path, list[dict[str, Any]]]:
    """The corpus (generated once) and a model trained on its first ``n_train`` documents."""
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / f"corpus-{n_train + n_requests}.jsonl"
    if not corpus.exists():
        subprocess.run(
            [sys.executable, str(gen_corpus), "--n", str(n_train + n_requests), "--seed", "1234"]
            + ["--out", str(corpus)],
            check=True,
        )
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    model_dir = cache / f"model-{n_train}"
    if not (model_dir / "manifest.json").exists():
        from training.config import FeatureConfig, TrainConfig
        from training.train import train

        train_file = cache / "train.jsonl"
        train_file.write_text("".join(json.dumps(d) + "\n" for d in docs[:n_train]))
        train([train_file], model_dir, TrainConfig(features=FeatureConfig(use_char=False)), version="bench")
    return model_dir, docs[n_train:]


# ----------------------------------------------------------------------------- in-process baseline
def inprocess_baseline(model_dir: Path, docs: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    from service.core.tagger import Tagger
    from service.core.types import Article
    from service.model.artifact import load_artifact

    tagger = Tagger(load_artifact(model_dir))
    articles = [Article(d["id"], d["text"]) for d in docs]
    tagger.tag(articles[:64])  # warm up
    out: dict[str, float] = {}
    for batch in (1, 64):
        latencies, done, i = [], 0, 0
        cpu0, start = time.process_time(), time.perf_counter()
        while time.perf_counter() - start < seconds:
            chunk = [articles[(i + k) % len(articles)] for k in range(batch)]
            t0 = time.perf_counter()
            tagger.tag(chunk)
            latencies.append(time.perf_counter() - t0)
            done, i = done + batch, i + batch
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        out[f"b{batch}_rate"] = done / elapsed
        out[f"b{batch}_cpu_ms"] = 1000 * cpu / done
        out[f"b{batch}_p50_ms"] = 1000 * statistics.median(latencies)
    return out


# ----------------------------------------------------------------------------- load generator
async def _load(port: int, payloads: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(TAG_METHOD)  # bytes in, bytes out: no client-side (de)serializing
        latencies: list[float] = []
        errors = 0
        stop_at = time.perf_counter() + seconds

        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    await call(payloads[i % len(payloads)], timeout=30)
                    latencies.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError:
                    errors += 1
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        return {
            "done": len(latencies),
            "errors": errors,
            "elapsed": time.perf_counter() - start,
            "lat": latencies,
        }


def load_main(args: argparse.Namespace) -> int:
    from service.grpc_api.gen.newstagger.v1 import tagger_pb2 as pb

    docs = [json.loads(line) for line in Path(args.docs).read_text().splitlines()]
    payloads = [
        pb.TagRequest(article=pb.Article(id=d["id"], text=d["text"])).SerializeToString() for d in docs
    ]
    result = asyncio.run(_load(args.port, payloads, args.concurrency, args.seconds))
    lat = sorted(result.pop("lat"))

    def pct(q: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    result.update(p50=pct(0.5), p90=pct(0.9), p99=pct(0.99))
    print(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- server side
def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its descendants that are alive now."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_dir: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--model-dir", str(model_dir), "--port", str(port)]
        + ["--metrics-port", "0", "--workers", str(workers), "--log-level", "WARNING"]
        + ["--reload-interval-seconds", "0"],
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                request = health_pb2.HealthCheckRequest(service="newstagger.v1.TaggerService")
                serving = health_pb2_grpc.HealthStub(channel).Check(request, timeout=1).status == 1
            if serving and (workers == 1 or len(_children(proc.pid)) >= workers):
                time.sleep(3 if workers > 1 else 0)  # health answered by one worker: let the others load
                return proc, port
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def _children(pid: int) -> list[int]:
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]


def run_load(port: int, docs_file: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "_load", "--port", str(port), "--docs", str(docs_file)]
        + ["--concurrency", str(concurrency), "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return dict(json.loads(out.stdout))


def bench_server(
    model_dir: Path, docs_file: Path, workers: int, runs: int, seconds: float
) -> dict[int, dict[str, float]]:
    proc, port = start_server(model_dir, workers)
    table: dict[int, dict[str, float]] = {}
    try:
        run_load(port, docs_file, 8, 2.0)  # warm-up
        for c in CONCURRENCY:
            rows = []
            for _ in range(runs):
                cpu0 = cpu_seconds(proc.pid)
                r = run_load(port, docs_file, c, seconds)
                cpu = cpu_seconds(proc.pid) - cpu0
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
            table[c] = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
            print(f"  workers={workers} c={c}: {table[c]}", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return table


def report(base: dict[str, float], results: dict[int, dict[int, dict[str, float]]]) -> str:
    lines = [
        f"In-process baseline: batch 1 = {base['b1_rate']:.0f} docs/s, p50 {base['b1_p50_ms']:.2f} ms, "
        f"{base['b1_cpu_ms']:.2f} CPU-ms/doc; batch 64 = {base['b64_rate']:.0f} docs/s, "
        f"{base['b64_cpu_ms']:.2f} CPU-ms/doc.",
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
        return load_main(p.parse_args(argv))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--workers", type=int, action="append", help="server processes (repeatable; default 1 and 2)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per point; the median is reported")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one measured run")
    parser.add_argument("--train-docs", type=int, default=4000)
    parser.add_argument("--request-docs", type=int, default=2000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "newstagger-bench")
    parser.add_argument("--gen-corpus", type=Path, default=GEN_CORPUS, help="path of gen_corpus.py")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    model_dir, docs = prepare(args.cache, args.train_docs, args.request_docs, args.gen_corpus)
    docs_file = args.cache / "requests.jsonl"
    docs_file.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    bases = [inprocess_baseline(model_dir, docs, args.seconds) for _ in range(args.runs)]
    base = {k: statistics.median(b[k] for b in bases) for k in bases[0]}
    print(f"  in-process: {base}", file=sys.stderr)
    results = {
        w: bench_server(model_dir, docs_file, w, args.runs, args.seconds) for w in args.workers or [1, 2]
    }
    text = report(base, results)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
