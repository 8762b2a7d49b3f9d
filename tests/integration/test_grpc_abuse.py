"""Hostile and careless clients, through real sockets and the generated stubs: silent and unread
streams, oversized fields, garbage bytes, cancelled work, and a batcher that stops."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.http import HealthServer
from service.model.manifest import MANIFEST_FILE
from service.model.registry import ModelRegistry
from tests.helpers import wait_for
from tests.integration.test_grpc_api import BlockingTagger
from tests.integration.test_grpc_support import Served, serve_in_process

TEXT = "Officials met in the capital on Monday to discuss the ceasefire agreement and next steps."
CHECK = health_pb2.HealthCheckRequest(service="newstagger.v1.TaggerService")
SERVING = health_pb2.HealthCheckResponse.SERVING


def article(i: int | str, **fields: str) -> pb.Article:
    return pb.Article(**{"id": f"a-{i}", "text": TEXT, **fields})


def failure(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str, float]:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value.code(), info.value.details(), time.monotonic() - started


@contextmanager
def metrics_endpoint(served: Served) -> Iterator[str]:
    """A real /metrics and /readyz endpoint on the served runtime's registry."""
    http = HealthServer(served.registry, served.runtime.ready, "127.0.0.1", 0)
    http.start()
    try:
        yield f"http://127.0.0.1:{http.port}"
    finally:
        http.stop()


def scrape(url: str, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + path, timeout=5) as reply:  # noqa: S310 - loopback
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def metric_line(text: str, prefix: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)]
    return sum(values)


@pytest.fixture()
def served(registry: ModelRegistry) -> Iterator[Served]:
    with serve_in_process(registry.root) as s:
        yield s


class SilentStreams:
    """One client opening ``count`` TagStreams over 8 connections, sending and reading nothing."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.opened, self.stop = threading.Event(), threading.Event()
        self.ended = 0  # calls already ended (refused by the server, or by HTTP/2 stream limits)
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options) for _ in range(8)]
        stubs = [pb_grpc.TaggerServiceStub(c) for c in channels]
        calls = [stubs[i % len(stubs)].TagStream() for i in range(self.count)]
        self.opened.set()
        while not self.stop.is_set():
            self.ended = sum(1 for c in calls if c.done())
            await asyncio.sleep(0.1)
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()


def test_silent_streams_do_not_lock_out_health_or_other_callers(served: Served) -> None:
    abuser = SilentStreams(served.port, 4000)
    abuser.thread.start()
    try:
        assert abuser.opened.wait(30)
        settle = time.monotonic() + 15  # until the server has seen most (it ends all but 100)
        while abuser.ended < 2000 and time.monotonic() < settle:
            time.sleep(0.1)
        assert 100 <= served.sample("newstagger_grpc_in_flight_requests") <= 110  # held, not more
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as other:
            started = time.monotonic()
            health = health_pb2_grpc.HealthStub(other).Check(CHECK, timeout=5)
            reply = pb_grpc.TaggerServiceStub(other).Tag(pb.TagRequest(article=article(1)), timeout=5)
            assert time.monotonic() - started < 5
        assert health.status == SERVING
        assert reply.result.article_id == "a-1"
        # beyond --max-streams (100) streams are refused at once, not held
        refused = {"method": "TagStream", "code": "RESOURCE_EXHAUSTED"}
        assert served.sample("newstagger_grpc_requests_total", **refused) > 0
    finally:
        abuser.stop.set()
        abuser.thread.join(30)


def test_a_silent_stream_is_ended_when_idle(registry: ModelRegistry) -> None:
    with serve_in_process(registry.root, stream_idle_seconds=0.5) as s:
        gate = threading.Event()

        def silent() -> Iterator[pb.TagStreamRequest]:
            gate.wait(10)  # sends nothing until the test is over
            yield from ()

        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            list(s.stub.TagStream(silent(), timeout=10))
        gate.set()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "idle" in info.value.details()
        assert time.monotonic() - started < 5


class UnreadStream:
    """A TagStream that sends ``count`` articles with big responses (long ids and correlation keys,
    so a few fill HTTP/2 flow control windows) and reads nothing until the test says so."""

    def __init__(self, port: int, count: int = 400) -> None:
        options = [("grpc.http2.bdp_probe", 0)]  # keep the client's receive window at its default
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
        self.count = count
        self.release = threading.Event()
        self.call = pb_grpc.TaggerServiceStub(self.channel).TagStream(self._requests(), timeout=60)

    def _requests(self) -> Iterator[pb.TagStreamRequest]:
        for i in range(self.count):
            request = pb.TagStreamRequest(article=article(f"{i}-" + "x" * 400), correlation_id="k" * 2000)
            yield request
        self.release.wait(30)  # the request side stays open: the client is not done sending

    def close(self) -> None:
        self.release.set()
        self.call.cancel()
        self.channel.close()


def tagged(served: Served) -> float:
    return served.sample("newstagger_batch_size_articles_sum")


def test_a_stream_whose_responses_are_not_read_is_ended_when_idle(registry: ModelRegistry) -> None:
    with serve_in_process(registry.root, stream_idle_seconds=1.0) as s:
        unread = UnreadStream(s.port)
        try:
            ended = {"method": "TagStream", "code": "DEADLINE_EXCEEDED"}
            started = time.monotonic()
            wait_for(lambda: s.sample("newstagger_grpc_requests_total", **ended) == 1, 20, what="the end")
            assert time.monotonic() - started < 15
            assert s.sample("newstagger_grpc_in_flight_requests") == 0
            assert tagged(s) < unread.count  # it stopped taking work when its reader stopped reading
            received = 0
            with pytest.raises(grpc.RpcError) as info:
                for _ in unread.call:  # what was written before the end, then the status
                    received += 1
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "stream idle: no response read for 1s" in info.value.details()
            assert received < unread.count
        finally:
            unread.close()


def test_cancelling_a_stream_blocked_on_writing_counts_as_cancelled(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_in_process(registry.root) as s:
        unread = UnreadStream(s.port)
        try:
            wait_for(lambda: tagged(s) >= 64, 20, what="a window of articles tagged")
            last, settle = -1.0, time.monotonic() + 20
            while tagged(s) != last and time.monotonic() < settle:  # until its writes are blocked
                last = tagged(s)
                time.sleep(0.5)
            assert last < unread.count  # blocked: the client reads nothing
            unread.call.cancel()
            cancelled = {"method": "TagStream", "code": "CANCELLED"}
            wait_for(lambda: s.sample("newstagger_grpc_requests_total", **cancelled) == 1, 10, what="counted")
            assert s.sample("newstagger_grpc_requests_total", method="TagStream", code="INTERNAL") == 0
            assert s.sample("newstagger_grpc_in_flight_requests") == 0
        finally:
            unread.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (pb.TagRequest(article=article(1, title="t" * 5_000_000)), "title is 5000000 bytes"),
        (pb.TagRequest(article=article(1, target="t" * 20_000)), "target is 20000 bytes"),
        (pb.TagRequest(article=pb.Article(id="i" * 16_000, text=TEXT)), "article id 'iiii"),
        (pb.TagRequest(article=article(1), options=pb.TagOptions(heads=["h" * 16_000])), "head name 'hhh"),
        (pb.TagRequest(article=article(1), options=pb.TagOptions(heads=["x"] * 65)), "65 head names"),
    ],
    ids=["5mb-title", "long-target", "16kb-id", "16kb-head-name", "many-heads"],
)
def test_oversized_fields_are_refused_quickly_with_short_messages(
    served: Served, request_: pb.TagRequest, expected: str
) -> None:
    code, details, seconds = failure(served.stub.Tag, request_, timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details
    assert len(details) < 400  # caller input is quoted cut short
    assert seconds < 3


def test_a_request_over_the_size_limit_is_refused_before_it_is_parsed(served: Served) -> None:
    huge = pb.TagRequest(article=article(1, title="t" * (17 << 20)))  # over the 16 MiB default
    code, _, seconds = failure(served.stub.Tag, huge, timeout=10)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert seconds < 3
    assert served.stub.Tag(pb.TagRequest(article=article(2)), timeout=10).result.article_id == "a-2"


def test_garbage_bytes_are_invalid_argument_and_counted(served: Served) -> None:
    garbage = b"\xff\xff\xff\xff\x0f"
    tag = served.channel.unary_unary("/newstagger.v1.TaggerService/Tag")
    code, details, _ = failure(tag, garbage, timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("malformed request") and "Error" not in details
    stream = served.channel.stream_stream("/newstagger.v1.TaggerService/TagStream")
    with pytest.raises(grpc.RpcError) as info:
        list(stream(iter([garbage]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with metrics_endpoint(served) as url:
        status, text = scrape(url)
    assert status == 200
    counted = 'newstagger_grpc_requests_total{code="INVALID_ARGUMENT",method="'
    assert metric_line(text, counted + 'Tag"}') == 1
    assert metric_line(text, counted + 'TagStream"}') == 1


def test_calls_to_made_up_methods_are_counted_in_one_series(served: Served) -> None:
    """A client on the wrong contract (or a scanner) calls methods the server does not have: gRPC
    answers UNIMPLEMENTED, and /metrics counts them (they were not counted at all) under one
    method label, however many paths are tried."""
    with metrics_endpoint(served) as url:
        before = {line.rsplit(" ", 1)[0] for line in scrape(url)[1].splitlines() if not line.startswith("#")}
        for i in range(50):
            for path in (f"/made.up.v{i}.Service/Call{i}", f"/newstagger.v1.TaggerService/Tag{i}"):
                code, _, _ = failure(served.channel.unary_unary(path), b"", timeout=10)
                assert code == grpc.StatusCode.UNIMPLEMENTED
        status, text = scrape(url)
    assert status == 200
    after = {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}
    new = {name for name in after - before if name.startswith("newstagger_")}
    assert new <= {'newstagger_grpc_requests_total{code="UNIMPLEMENTED",method="(unknown)"}'}, new
    assert metric_line(text, 'newstagger_grpc_requests_total{code="UNIMPLEMENTED",method="(unknown)"}') == 100
    assert "Call7" not in text and "Tag7" not in text


def test_cancelled_batch_and_stream_calls_leave_no_work_behind(registry: ModelRegistry) -> None:
    tagger = BlockingTagger()
    with serve_in_process(registry.root, tagger=tagger, max_batch_size=1) as s:
        busy = s.stub.Tag.future(pb.TagRequest(article=article("busy")), timeout=30)
        assert tagger.entered.wait(10)
        batch = s.stub.TagBatch.future(
            pb.TagBatchRequest(articles=[article(f"batch-{i}") for i in range(5)]), timeout=30
        )
        stream = s.stub.TagStream(
            iter([pb.TagStreamRequest(article=article(f"stream-{i}")) for i in range(5)]), timeout=30
        )
        wait_for(lambda: s.runtime.batcher.depth() == 10, timeout=10, what="10 queued")
        batch.cancel()
        stream.cancel()
        wait_for(lambda: s.runtime.batcher.expected_wait() < 0.001, timeout=10, what="queued work cancelled")
        tagger.release.set()
        assert busy.result(10).result.article_id == "a-busy"
        assert s.stub.Tag(pb.TagRequest(article=article("after")), timeout=10).result.article_id == "a-after"
        assert tagger.computed == ["a-busy", "a-after"]


def test_a_stopped_batcher_turns_health_and_readiness_off(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    with metrics_endpoint(served) as url:
        assert scrape(url, "/readyz")[0] == 200
        assert health.Check(CHECK, timeout=5).status == SERVING
        served.runtime.batcher.close(5)  # as if its thread had died
        status, reason = scrape(url, "/readyz")
        assert (status, reason.strip()) == (503, "micro-batcher not running")
    wait_for(
        lambda: health.Check(CHECK, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING,
        timeout=5,
        what="health NOT_SERVING",
    )
    code, _, _ = failure(served.stub.Tag, pb.TagRequest(article=article(1)), timeout=5)
    assert code == grpc.StatusCode.UNAVAILABLE


def test_serve_refuses_a_model_whose_manifest_was_edited(registry: ModelRegistry, model_dir: Path) -> None:
    v2 = registry.new_version_dir("v2")
    shutil.copytree(model_dir, v2)
    raw = json.loads((v2 / MANIFEST_FILE).read_text())
    raw["version"] = "v2"  # the folder's name, so only the labels' edit is at fault
    stance = next(h for h in raw["heads"] if h["name"] == "stance")
    stance["labels"] = list(reversed(stance["labels"]))  # "critical" would come back "supportive"
    (v2 / MANIFEST_FILE).write_text(json.dumps(raw))
    registry.promote("v2", verify=False)
    with serve_in_process(registry.root) as s:
        code, details, _ = failure(s.stub.Tag, pb.TagRequest(article=article(1)), timeout=10)
        assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "no model is loaded")
        health = health_pb2_grpc.HealthStub(s.channel).Check(CHECK, timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
