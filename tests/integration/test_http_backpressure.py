"""The REST/JSON API under backpressure, through real sockets: a full queue is 429 and a passed
deadline 504 (never computed), and a client that leaves, while queued or mid-body, is counted (499),
not computed for no one nor logged as an error."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from service.gen.inference import open_inference_grpc_pb2 as v2_pb
from service.gen.inference import open_inference_grpc_pb2_grpc as v2_grpc
from service.model.registry import ModelRegistry
from tests.helpers import wait_for
from tests.integration.test_grpc_api import BlockingTagger
from tests.integration.test_http_support import TEXT, HttpServed, article, assert_error, serve_http


@pytest.fixture()
def served(registry: ModelRegistry) -> Iterator[HttpServed]:
    with serve_http(registry.root, max_text_bytes=2000, max_request_articles=8) as s:
        yield s


def test_full_queue_is_429_with_retry_after_and_a_passed_deadline_is_504(registry: ModelRegistry) -> None:
    tagger = BlockingTagger()
    with serve_http(registry.root, tagger=tagger, queue_size=1, max_batch_size=1) as s:
        replies: dict[str, Any] = {}

        def post(name: str, headers: dict[str, str]) -> None:
            replies[name] = s.client.post("/v1/tag", json={"article": article(name)}, headers=headers)

        busy = threading.Thread(target=post, args=("busy", {}))
        busy.start()
        assert tagger.entered.wait(10)  # the batcher is now stuck on "busy"
        late = threading.Thread(target=post, args=("late", {"X-Request-Timeout": "0.5"}))
        late.start()
        wait_for(lambda: s.grpc.runtime.batcher.depth() == 1, timeout=10, what="queued")
        full = s.client.post("/v1/tag", json={"article": article("extra")})
        assert_error(full, 429, "RESOURCE_EXHAUSTED", "queue full")
        assert full.headers["retry-after"] == "1"
        late.join(10)
        assert_error(replies["late"], 504, "DEADLINE_EXCEEDED")
        tagger.release.set()
        busy.join(10)
        assert replies["busy"].status_code == 200
        assert "a-late" not in tagger.computed  # it expired while queued: never computed
        assert s.grpc.sample("newstagger_http_requests_total", route="/v1/tag", status="429") == 1
        assert s.grpc.sample("newstagger_http_requests_total", route="/v1/tag", status="504") == 1
        assert s.grpc.sample("newstagger_overload_rejections_total") == 1
        bad = s.client.post("/v1/tag", json={"article": article(1)}, headers={"X-Request-Timeout": "soon"})
        assert_error(bad, 400, "INVALID_ARGUMENT", "x-request-timeout")


def test_a_request_whose_client_left_while_queued_is_not_computed(registry: ModelRegistry) -> None:
    """As for a cancelled gRPC call: the articles of a client that disconnected are dropped from
    the queue, not computed for no one (until 2026-11-30 they were computed anyway)."""
    tagger = BlockingTagger()
    with serve_http(registry.root, tagger=tagger, max_batch_size=1) as s:
        busy = threading.Thread(
            target=s.client.post, args=("/v1/tag",), kwargs={"json": {"article": article("busy")}}
        )
        busy.start()
        assert tagger.entered.wait(10)  # the batcher is now stuck on "busy"
        v2 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": [TEXT, TEXT]}]}
        requests = {
            "/v1/tag": {"article": article("gone")},
            "/v1/tag:batch": {"articles": [article("gone-1"), article("gone-2")]},
            "/v2/models/{model_name}/infer": v2,
        }
        for route, payload in requests.items():
            body = json.dumps(payload).encode()
            path = route.replace("{model_name}", s.grpc.runtime.tagger.require_model().manifest.name)
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            depth = s.grpc.runtime.batcher.depth()
            with socket.create_connection(("127.0.0.1", s.port), timeout=5) as client:
                client.sendall(head + body)
                wait_for(lambda d=depth: s.grpc.runtime.batcher.depth() > d, timeout=10, what="queued")
            wait_for(
                lambda r=route: s.grpc.sample("newstagger_http_requests_total", route=r, status="499") == 1,
                timeout=10,
                what=f"{route} counted as the client gone",
            )
        # the same over V2 gRPC, which shares the dispatcher
        infer = v2_pb.ModelInferRequest(model_name=path.split("/")[3])
        infer.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
            [b"x y"] * 2
        )
        depth = s.grpc.runtime.batcher.depth()
        call = v2_grpc.GRPCInferenceServiceStub(s.grpc.channel).ModelInfer.future(infer, timeout=30)
        wait_for(lambda: s.grpc.runtime.batcher.depth() == depth + 2, timeout=10, what="V2 gRPC queued")
        call.cancel()
        wait_for(
            lambda: (
                s.grpc.sample("newstagger_grpc_requests_total", method="ModelInfer", code="CANCELLED") == 1
            ),
            timeout=10,
            what="ModelInfer cancelled",
        )
        tagger.release.set()
        busy.join(10)
        after = s.client.post("/v1/tag", json={"article": article("after")})
        assert after.status_code == 200
        assert tagger.computed == ["a-busy", "a-after"]  # nothing of the four that left


def test_a_client_that_leaves_mid_body_is_counted_not_logged_as_an_error(
    served: HttpServed, caplog: pytest.LogCaptureFixture
) -> None:
    """Until 2026-11-30 this logged 'unexpected error' with starlette's ClientDisconnect traceback
    (a log any client could fill) and counted a 500 no one received."""
    with caplog.at_level(logging.ERROR), socket.create_connection(("127.0.0.1", served.port), timeout=5) as c:
        c.sendall(b'POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"article": ')
        wait_for(
            lambda: served.grpc.sample("newstagger_http_in_flight_requests") == 1, timeout=10, what="read"
        )
    wait_for(
        lambda: served.grpc.sample("newstagger_http_requests_total", route="/v1/tag", status="499") == 1,
        timeout=10,
        what="counted as the client gone",
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert served.grpc.sample("newstagger_http_requests_total", route="/v1/tag", status="500") == 0
