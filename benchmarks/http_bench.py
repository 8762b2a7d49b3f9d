"""HTTP API throughput, latency and server CPU per request, against the in-process tagger: the
REST path (``POST /v1/tag``, JSON) and the Open Inference Protocol path (``POST
/v2/models/<name>/infer``, JSON, one BYTES element), like ``grpc_bench.py`` does for gRPC.

    python benchmarks/http_bench.py                              # both paths, concurrency 1 8 32
    python benchmarks/http_bench.py --path rest --concurrency 32 --runs 5
    python benchmarks/http_bench.py --config word.toml           # another training config
    python benchmarks/http_bench.py --server-code ../old         # serve from another checkout

One article per request, against a real ``newstagger serve --http-port`` process (``--workers 1``).
Corpus, model, request documents and the in-process baselines (batch 1 and 64, measured in the same
run before the server starts) are ``grpc_bench.py``'s. The load generator is a separate process:
one keep-alive HTTP/1.1 connection per concurrent client, pre-built request bytes, responses read
by Content-Length and not decoded, so it costs the 2-core machine as little as it can. Server CPU
is read from /proc/<pid>/stat before and after each measured run. Each figure is the median of
--runs runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.grpc_bench import (  # noqa: E402
    STARTER_CONFIG,
    baseline,
    baseline_line,
    measure_point,
    prepare,
)
from benchmarks.grpc_server import free_port, spawn_server  # noqa: E402

CONCURRENCY = (1, 8, 32)
PATHS = ("rest", "v2")


# ----------------------------------------------------------------------------- load generator
def build_requests(path: str, docs: list[dict[str, Any]], model: str) -> list[bytes]:
    out = []
    for d in docs:
        if path == "rest":
            target = "/v1/tag"
            body = json.dumps({"article": {"id": d["id"], "text": d["text"]}}).encode()
        else:
            target = f"/v2/models/{model}/infer"
            tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [d["text"]]}
            body = json.dumps({"id": d["id"], "inputs": [tensor]}).encode()
        head = (
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _one_client(
    port: int, requests: list[bytes], k: int, step: int, stop_at: float, latencies: list[float]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors, i = 0, k
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if status_line.split()[1:2] == [b"200"]:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1
            i += step
    finally:
        writer.close()
    return errors


async def _load(port: int, requests: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    start = time.perf_counter()
    errors = await asyncio.gather(
        *(_one_client(port, requests, k, concurrency, stop_at, latencies) for k in range(concurrency))
    )
    return {
        "done": len(latencies),
        "errors": sum(errors),
        "elapsed": time.perf_counter() - start,
        "lat": latencies,
    }


def load_main(args: argparse.Namespace) -> int:
    docs = [json.loads(line) for line in Path(args.docs).read_text().splitlines()]
    result = asyncio.run(
        _load(args.port, build_requests(args.path, docs, args.model), args.concurrency, args.seconds)
    )
    lat = sorted(result.pop("lat"))

    def pct(q: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    result.update(p50=pct(0.5), p90=pct(0.9), p99=pct(0.99))
    print(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- server side
def start_server(model_dir: Path, code: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    proc = spawn_server(model_dir, code, "--port", "0", "--http-port", str(port))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=2) as reply:  # noqa: S310
                return proc, port, json.loads(reply.read())["name"]
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def run_load(
    port: int, path: str, model: str, docs_file: Path, concurrency: int, seconds: float
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "_load", "--port", str(port), "--docs", str(docs_file), "--path", path]
        + ["--model", model, "--concurrency", str(concurrency), "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return dict(json.loads(out.stdout))


def bench(
    model_dir: Path,
    docs_file: Path,
    paths: list[str],
    levels: list[int],
    runs: int,
    seconds: float,
    code: Path = REPO,
) -> dict[str, dict[int, dict[str, float]]]:
    proc, port, model = start_server(model_dir, code)
    results: dict[str, dict[int, dict[str, float]]] = {}
    try:
        for path in paths:
            run_load(port, path, model, docs_file, 8, 2.0)  # warm-up
            results[path] = {}
            for c in levels:
                load = functools.partial(run_load, port, path, model, docs_file, c, seconds)
                results[path][c] = measure_point(proc.pid, load, runs)
                print(f"  {path} c={c}: {results[path][c]}", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return results


def report(base: dict[str, float], results: dict[str, dict[int, dict[str, float]]]) -> str:
    lines = [
        baseline_line(base),
        "",
        "| path | concurrency | req/s | p50 ms | p99 ms | server CPU-ms/req | CPU vs in-proc b64 "
        "| req/s vs in-proc b64 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, table in results.items():
        for c, r in table.items():
            lines.append(
                f"| {path} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_ms']:.2f} "
                f"| {r['cpu_ms'] / base['b64_cpu_ms']:.2f}x | {r['rps'] / base['b64_rate']:.2f}x "
                f"| {r['errors']:.0f} |"
            )
    rest = results.get("rest", {}).get(32)
    if rest is not None:
        cpu, rate = rest["cpu_ms"] / base["b64_cpu_ms"], rest["rps"] / base["b64_rate"]
        lines += [
            "",
            f"Targets (REST, c=32): CPU/req {cpu:.2f}x (<= 1.5x: {'met' if cpu <= 1.5 else 'MISSED'}); "
            f"throughput {rate:.2f}x (>= 0.7x: {'met' if rate >= 0.7 else 'MISSED'}).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_load"]:
        p = argparse.ArgumentParser()
        p.add_argument("_load")
        for name in ("--docs", "--path", "--model"):
            p.add_argument(name, required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--concurrency", type=int, required=True)
        p.add_argument("--seconds", type=float, required=True)
        return load_main(p.parse_args(argv))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--path", choices=PATHS, action="append", help="rest and/or v2 (default both)")
    parser.add_argument("--concurrency", type=int, action="append", help="default 1 8 32")
    parser.add_argument("--runs", type=int, default=3, help="runs per point; the median is reported")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one measured run")
    parser.add_argument("--n", type=int, default=20000, help="corpus size (documents)")
    parser.add_argument("--train-docs", type=int, default=4000)
    parser.add_argument("--dev-docs", type=int, default=1000)
    parser.add_argument("--request-docs", type=int, default=1024)
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
    docs_file = model_dir.parent / f"http-requests-{len(docs)}.jsonl"
    docs_file.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    base = baseline(model_dir, docs, args.runs)
    print(f"  in-process: {base}", file=sys.stderr)
    load0 = os.getloadavg()[0]
    results = bench(
        model_dir,
        docs_file,
        args.path or list(PATHS),
        args.concurrency or list(CONCURRENCY),
        args.runs,
        args.seconds,
        args.server_code.resolve(),
    )
    text = report(base, results)
    load1 = os.getloadavg()[0]
    text += f"\n\nModel {model_dir.name}; load average {load0:.1f} before the server runs, {load1:.1f} after."
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
