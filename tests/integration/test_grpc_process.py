"""`newstagger serve` as a real process: /metrics over HTTP, graceful SIGTERM, --workers 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.model.registry import ModelRegistry
from tests.helpers import REPO, build_info_labels, free_port, scrape_series, stop_process, wait_for
from tests.unit.test_registry import add_version

TEXT = "Officials met in the capital on Monday to discuss the ceasefire agreement and next steps."
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@contextmanager
def serve(
    model_dir: Path, tmp_path: Path, *flags: str, hooks: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """``hooks``: a directory put first on PYTHONPATH (a test's ``sitecustomize.py``, which every
    process, worker processes too, imports at start-up)."""
    port, metrics_port = free_port(), free_port()
    log = (tmp_path / "serve.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSTAGGER_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = os.pathsep.join([*([str(hooks)] if hooks else []), str(REPO)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--model-dir", str(model_dir), "--port", str(port)]
        + ["--metrics-port", str(metrics_port), "--reload-interval-seconds", "0", "--log-format", "text"]
        + list(flags),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    try:
        yield proc, port, metrics_port
    finally:
        stop_process(proc, signal.SIGTERM, timeout=30)
        log.close()
        sys.stderr.write((tmp_path / "serve.log").read_text(errors="replace")[-4000:])


def health_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service="newstagger.v1.TaggerService")
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status)


def scrape(metrics_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:  # noqa: S310
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of ``name`` over samples whose labels include ``labels`` (e.g. across worker pids)."""
    return sum(
        v for (n, lbls), v in samples.items() if n == name and set(labels.items()) <= set(dict(lbls).items())
    )


def ready(metrics_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as reply:  # noqa: S310
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def tag_once(port: int, text: str = TEXT) -> pb.TagResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # a new connection each time
        request = pb.TagRequest(article=pb.Article(id="p", text=text))
        return pb_grpc.TaggerServiceStub(channel).Tag(request, timeout=10)


def test_metrics_scraped_over_http_move_by_the_calls_made(registry: ModelRegistry, tmp_path: Path) -> None:
    with serve(registry.root, tmp_path) as (proc, port, mport):
        wait_for(lambda: ready(mport), timeout=60, what="/readyz")
        before = scrape(mport)
        for _ in range(5):
            tag_once(port)
        with pytest.raises(grpc.RpcError) as info:
            tag_once(port, text="")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        after = scrape(mport)

        def moved(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert moved("newstagger_grpc_requests_total", method="Tag", code="OK") == 5
        assert moved("newstagger_grpc_requests_total", method="Tag", code="INVALID_ARGUMENT") == 1
        assert moved("newstagger_grpc_request_duration_seconds_count", method="Tag") == 6
        assert moved("newstagger_batch_size_articles_sum") == 5
        assert total(after, "newstagger_grpc_in_flight_requests") == 0
        assert total(after, "newstagger_batcher_queue_depth") == 0
        assert scrape_series(mport, "newstagger_build_info") == [(build_info_labels(), 1.0)]
        assert stop_process(proc, signal.SIGTERM, timeout=30) == 0


def test_sigterm_drains_health_refuses_new_calls_and_finishes_in_flight(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    flags = ("--grace-seconds", "60", "--max-text-bytes", "200000", "--max-queue-seconds", "600")
    with serve(registry.root, tmp_path, *flags) as (proc, port, mport):
        wait_for(lambda: health_status(port) == SERVING, timeout=60, what="health SERVING")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.TaggerServiceStub(channel)
        big = [pb.Article(id=f"big-{i}", text=TEXT * 1000) for i in range(80)]  # seconds of work, 7 MB
        slow = stub.TagBatch.future(pb.TagBatchRequest(articles=big), timeout=120)
        wait_for(
            lambda: total(scrape(mport), "newstagger_grpc_in_flight_requests") >= 1,
            timeout=20,
            what="the slow call in flight",
        )
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="newstagger.v1.TaggerService"), timeout=60
        )
        assert next(watch).status == SERVING
        proc.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        watch.cancel()
        assert not slow.done(), "the call was still in flight when the drain began"

        def refused() -> bool:
            try:
                tag_once(port)
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAVAILABLE
            return False

        wait_for(refused, timeout=20, what="new calls refused")
        response = slow.result(120)
        assert [i.article_id for i in response.items] == [a.id for a in big]
        assert all(i.HasField("result") for i in response.items)
        channel.close()
        assert proc.wait(60) == 0


def readyz(metrics_port: int) -> tuple[int, str] | None:
    """/readyz's status and reason; None while nothing answers on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as reply:  # noqa: S310
            return int(reply.status), reply.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode().strip()
    except (urllib.error.URLError, OSError):
        return None


def test_readyz_turns_503_when_the_drain_begins_not_when_it_ends(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """With gRPC over TLS the chart's readiness probe is /readyz: it must say what gRPC health says.
    It said 200 through the whole drain (up to --grace-seconds) while health was NOT_SERVING. A
    TagStream held open by the test keeps the drain going until /readyz has answered."""
    with serve(registry.root, tmp_path, "--grace-seconds", "120") as (proc, port, mport):
        wait_for(lambda: health_status(port) == SERVING, timeout=60, what="health SERVING")
        assert readyz(mport) == (200, "ready: model newstagger v1")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        held = threading.Event()

        def requests() -> Iterator[pb.TagStreamRequest]:
            yield pb.TagStreamRequest(article=pb.Article(id="held", text=TEXT))
            held.wait(120)

        stream = pb_grpc.TaggerServiceStub(channel).TagStream(requests(), timeout=150)
        assert next(stream).item.article_id == "held"  # the call is in flight
        proc.send_signal(signal.SIGTERM)
        answer = wait_for(
            lambda: (r := readyz(mport)) is not None and r[0] == 503 and r, 60, what="/readyz 503"
        )
        assert answer == (503, "gRPC server not serving (starting or draining)")
        assert proc.poll() is None, "the drain was still waiting for the held stream"
        held.set()
        list(stream)
        channel.close()
        assert proc.wait(60) == 0


def test_workers_share_the_port_and_metrics_aggregate(registry: ModelRegistry, tmp_path: Path) -> None:
    with serve(registry.root, tmp_path, "--workers", "2", "--reload-interval-seconds", "0.2") as (
        proc,
        port,
        mport,
    ):
        wait_for(lambda: ready(mport), timeout=120, what="/readyz with 2 workers")
        before = scrape(mport)
        for _ in range(20):
            assert tag_once(port).result.model_version == "v1"
        after = scrape(mport)
        served = total(after, "newstagger_grpc_requests_total", method="Tag", code="OK") - total(
            before, "newstagger_grpc_requests_total", method="Tag", code="OK"
        )
        assert served == 20
        pids = {dict(lbls).get("pid") for (n, lbls), _ in after.items() if n == "newstagger_model_info"}
        assert len(pids) == 2, f"one model load per worker process: {pids}"
        per_pid = [
            v
            for (n, lbls), v in after.items()
            if n == "newstagger_model_info" and dict(lbls).get("version") == "v1"
        ]
        assert per_pid == [1.0, 1.0]
        # set by every worker, aggregated to one series (no pid label)
        assert scrape_series(mport, "newstagger_build_info") == [(build_info_labels(), 1.0)]

        add_version(registry, "v2")
        registry.promote("v2")

        def v2_only() -> bool:
            """Both workers reloaded v2, and v1 left no series (a worker's file keeps it, at 0)."""
            info = scrape_series(mport, "newstagger_model_info")
            return sorted((labels["version"], value) for labels, value in info) == [("v2", 1.0), ("v2", 1.0)]

        wait_for(v2_only, timeout=60, what="model_info: v2 in both workers, no v1 series")
        assert stop_process(proc, signal.SIGTERM, timeout=60) == 0
