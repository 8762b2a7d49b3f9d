"""Goodput under overload: a `newstagger serve` process offered twice its capacity, every call
with a 2 s deadline.

    python benchmarks/overload.py                          # default model, load 2x, deadline 2 s
    python benchmarks/overload.py --server-code ../old     # the same load against another checkout
    python benchmarks/overload.py --load 3 --deadline 1 --seconds 20

Each run, against one server process:
1. Capacity: closed-loop Tag calls (concurrency 128, no deadline pressure) for --seconds/2; capacity =
   answered calls per second. Same corpus, model and request documents as ``grpc_bench.py``.
2. Overload: open-loop arrivals at --load x that capacity (evenly spaced, one article per call,
   each with a --deadline timeout) for --seconds. Goodput = calls answered OK within their deadline
   per second, divided by capacity; also per server CPU-second (utime+stime from /proc), which
   cancels out CPU that other processes on a shared machine take from one phase but not the other.
   Refusals (RESOURCE_EXHAUSTED, or DEADLINE_EXCEEDED answered early) are timed: a refusal should
   come at once so the caller can go elsewhere. Calls that time out at the client are late work.

3. Health: meanwhile this process checks grpc.health.v1 (the tagger service, as the chart's
   readiness probe does) every ``PROBE_EVERY`` s on a connection of its own, with the probes'
   3 s timeout; it reports the checks' p50/max latency and how many failed or were not SERVING.

Targets (issue 15): goodput >= 0.8 of capacity at 2x load with 2 s deadlines; refusals within 50 ms.
The load generator is a separate process (``overload_offer.py``: grpc.aio, pre-serialized
requests); it shares the machine with the server, in the capacity run as in the overload run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAPACITY_CONCURRENCY = 128  # enough calls in flight to keep the batcher full (batches of 64)
PROBE_EVERY = 0.5  # seconds between health checks during the overload
PROBE_TIMEOUT = 3.0  # the chart's probes' timeoutSeconds
sys.path.insert(0, str(REPO))

from benchmarks.grpc_bench import STARTER_CONFIG, prepare, run_load  # noqa: E402
from benchmarks.grpc_server import SERVICE, cpu_seconds, start_server  # noqa: E402
from benchmarks.overload_offer import run_offer  # noqa: E402


class HealthProbe:
    """Checks the server's gRPC health every ``PROBE_EVERY`` s on a thread, while in ``with``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT + 1)

    def _run(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        request = health_pb2.HealthCheckRequest(service=SERVICE)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self._stop.wait(PROBE_EVERY):
                t0 = time.perf_counter()
                try:
                    ok = (
                        stub.Check(request, timeout=PROBE_TIMEOUT).status
                        == health_pb2.HealthCheckResponse.SERVING
                    )
                except grpc.RpcError:
                    ok = False
                self.latencies.append(time.perf_counter() - t0)
                self.failed += not ok

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {
            "health_checks": len(lat),
            "health_failed": self.failed,
            "health_p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
            "health_max_ms": 1000 * lat[-1] if lat else float("nan"),
        }


def usable_model(model_dir: Path) -> Path:
    """The cached benchmark model, sealed if a newstagger from before manifest checksums trained it
    (our own cache: the seal records what we trained; any other edit is still refused)."""
    from service.model.manifest import MANIFEST_FILE, write_manifest

    raw = json.loads((model_dir / MANIFEST_FILE).read_text())
    if not raw.get("manifest_sha256"):
        print(f"model: sealing {model_dir} (cached before manifest checksums)", file=sys.stderr)
        write_manifest(model_dir, raw)
    return model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--load", type=float, default=2.0, help="offered load, times capacity")
    parser.add_argument("--deadline", type=float, default=2.0, help="per-call deadline, seconds")
    parser.add_argument(
        "--connections", type=int, default=1, help="client connections the overload is spread over"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each run")
    parser.add_argument("--runs", type=int, default=3, help="overload runs; medians are reported")
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
    parser.add_argument(
        "--model", type=Path, help="serve a copy of this artifact instead of the cached benchmark model"
    )
    args = parser.parse_args(argv)
    if args.model is not None:
        from benchmarks.common import Split, generate_corpus, read_corpus

        split = Split(args.train_docs, args.dev_docs)
        docs = split.sample(read_corpus(generate_corpus(args.n)), args.request_docs)
        model_dir = Path(tempfile.mkdtemp(prefix="overload-")) / "model"
        shutil.copytree(args.model, model_dir)
    else:
        model_dir, docs = prepare(args)
    model_dir = usable_model(model_dir)
    docs_file = model_dir.parent / f"grpc-requests-{len(docs)}.jsonl"
    docs_file.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs))
    proc, port = start_server(model_dir, 1, args.server_code)
    runs = []
    try:
        run_load(port, docs_file, 8, 2.0)  # warm-up
        for _ in range(args.runs):
            cpu0 = cpu_seconds(proc.pid)
            closed = run_load(port, docs_file, CAPACITY_CONCURRENCY, args.seconds / 2)
            cpu1 = cpu_seconds(proc.pid)
            capacity = closed["done"] / closed["elapsed"]
            time.sleep(1)
            cpu2 = cpu_seconds(proc.pid)
            with HealthProbe(port) as probe:
                r = run_offer(
                    port, docs_file, args.load * capacity, args.seconds, args.deadline, args.connections
                )
            cpu3 = cpu_seconds(proc.pid)
            r |= probe.summary()
            r["capacity"] = capacity
            r["goodput"] = r["goodput_rate"] / capacity
            # per server CPU-second, so CPU taken by other processes between the two runs cancels out
            r["goodput_cpu"] = (r["ok_in_time"] / (cpu3 - cpu2)) / (closed["done"] / (cpu1 - cpu0))
            print(f"  {json.dumps(r)}", file=sys.stderr)
            runs.append(r)
            time.sleep(args.deadline + 1)  # let the run drain
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in ("outcomes", "examples")}
    print(
        f"capacity {med['capacity']:.0f} req/s (closed loop, c={CAPACITY_CONCURRENCY}, before each run); "
        f"offered {args.load:g}x with {args.deadline:g} s deadlines for {args.seconds:g} s; "
        f"median of {len(runs)} runs:\ngoodput {med['goodput']:.2f} of capacity "
        f"({med['goodput_cpu']:.2f} per server CPU-second; "
        f"target >= 0.8); answered in time p50 {med['ok_p50_ms']:.0f} ms, p99 {med['ok_p99_ms']:.0f} ms; "
        f"refused {med['refused']:.0f} of {med['offered']:.0f}, refusal latency p50 "
        f"{med['refused_p50_ms']:.1f} ms, p99 {med['refused_p99_ms']:.1f} ms (target <= 50 ms); "
        f"health checks p50 {med['health_p50_ms']:.0f} ms, max {med['health_max_ms']:.0f} ms, "
        f"{med['health_failed']:.0f} of {med['health_checks']:.0f} failed or not SERVING "
        f"(timeout {PROBE_TIMEOUT:g} s); the load generator's own loop ran late by p50 "
        f"{med['client_lag_p50_ms']:.0f} ms, p99 {med['client_lag_p99_ms']:.0f} ms (in every latency above)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
