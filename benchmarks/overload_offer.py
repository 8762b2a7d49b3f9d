"""The open-loop load generator of ``overload.py``, run as a process of its own so that its event
loop does not share the measuring process's: arrivals at ``--rate`` per second, evenly spaced, one
article per Tag call (pre-serialized requests, round-robin over ``--connections`` grpc.aio
channels), each with a ``--deadline`` timeout, for ``--seconds``. Prints one JSON object: what was
offered, answered in time, refused (and how fast), and how late this loop itself woke.

    python benchmarks/overload_offer.py --port P --docs FILE --rate R --seconds S --deadline D --connections C
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TICK = 0.01  # the load generator times its own loop's lateness with a sleep of this length
sys.path.insert(0, str(REPO))

from benchmarks.grpc_bench import tag_channels  # noqa: E402


async def _offer(
    port: int, payloads: list[bytes], rate: float, seconds: float, deadline: float, connections: int
) -> dict[str, Any]:
    import grpc

    ok_in_time: list[float] = []
    refused: list[float] = []
    outcomes: dict[str, int] = {}
    examples: dict[str, str] = {}  # a message per status code
    channels, calls = tag_channels(port, connections)  # calls dealt round-robin
    try:

        async def one(payload: bytes, call: Any) -> None:
            t0 = time.perf_counter()
            try:
                await call(payload, timeout=deadline)
                took = time.perf_counter() - t0
                key = "ok" if took <= deadline else "ok_late"
                if key == "ok":
                    ok_in_time.append(took)
            except grpc.aio.AioRpcError as exc:
                took = time.perf_counter() - t0
                key = exc.code().name
                examples.setdefault(key, str(exc.details())[:120])
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED or (
                    exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and took < 0.9 * deadline
                ):
                    refused.append(took)
                    key += "_early" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else ""
            outcomes[key] = outcomes.get(key, 0) + 1

        lags: list[float] = []  # how late this loop wakes: the client's share of every latency

        async def ticker() -> None:
            while True:
                t0 = time.perf_counter()
                await asyncio.sleep(TICK)
                lags.append(time.perf_counter() - t0 - TICK)

        tasks = []
        start = time.perf_counter()
        tick = asyncio.create_task(ticker())
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(payloads[i % len(payloads)], calls[i % len(calls)])))
        offered_for = time.perf_counter() - start
        await asyncio.gather(*tasks)
        tick.cancel()
    finally:
        for channel in channels:
            await channel.close()
    ok_in_time.sort()
    refused.sort()
    lags.sort()

    def pct(values: list[float], q: float) -> float:
        return 1000 * values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {
        "offered": n,
        "offered_rate": n / offered_for,
        "ok_in_time": len(ok_in_time),
        "goodput_rate": len(ok_in_time) / offered_for,
        "ok_p50_ms": pct(ok_in_time, 0.5),
        "ok_p99_ms": pct(ok_in_time, 0.99),
        "refused": len(refused),
        "refused_p50_ms": pct(refused, 0.5),
        "refused_p99_ms": pct(refused, 0.99),
        "client_lag_p50_ms": pct(lags, 0.5),
        "client_lag_p99_ms": pct(lags, 0.99),
        "outcomes": outcomes,
        "examples": examples,
    }


def offer_main(args: argparse.Namespace) -> int:
    from service.gen.newstagger.v1 import tagger_pb2 as pb

    docs = [json.loads(line) for line in Path(args.docs).read_text().splitlines()]
    requests = [pb.TagRequest(article=pb.Article(id=d["id"], text=d["text"])) for d in docs]
    payloads = [r.SerializeToString() for r in requests]
    print(
        json.dumps(
            asyncio.run(_offer(args.port, payloads, args.rate, args.seconds, args.deadline, args.connections))
        )
    )
    return 0


def run_offer(
    port: int, docs_file: Path, rate: float, seconds: float, deadline: float, connections: int
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--port", str(port), "--docs", str(docs_file)]
        + ["--rate", str(rate), "--seconds", str(seconds), "--deadline", str(deadline)]
        + ["--connections", str(connections)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return dict(json.loads(out.stdout))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    for name in ("--port", "--docs", "--rate", "--seconds", "--deadline", "--connections"):
        p.add_argument(name, required=True, type=int if name in ("--port", "--connections") else str)
    a = p.parse_args(argv)
    a.rate, a.seconds, a.deadline = float(a.rate), float(a.seconds), float(a.deadline)
    return offer_main(a)


if __name__ == "__main__":
    raise SystemExit(main())
