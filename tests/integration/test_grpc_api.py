"""The gRPC API through real sockets and the generated stubs: each RPC, each status code."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.core.tagger import Tagger
from service.core.types import DEFAULT_OPTIONS, Article, TagResult
from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.model.registry import ModelRegistry
from tests.helpers import wait_for
from tests.integration.test_grpc_support import serve_in_process

TOKEN = "s3cret"  # noqa: S105 - a test token
TEXT = "Officials met in the capital on Monday to discuss the ceasefire agreement and next steps."


def article(i: int | str, text: str = TEXT) -> pb.Article:
    return pb.Article(id=f"a-{i}", title="Talks resume", text=text)


def code_of(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value.code(), info.value.details()


@pytest.fixture()
def served(registry: ModelRegistry) -> Any:
    with serve_in_process(registry.root, max_text_bytes=2000, max_request_articles=8) as s:
        yield s


def test_tag_returns_every_head_and_the_model_version(served: Any, loaded_model: Any) -> None:
    response = served.stub.Tag(pb.TagRequest(article=article(1)), timeout=10)
    result = response.result
    assert result.article_id == "a-1"
    assert result.model_version == loaded_model.manifest.version == "v1"
    assert [h.head for h in result.heads] == [h.name for h in loaded_model.manifest.heads]
    for head in result.heads:
        assert head.scores and all(0.0 <= s.score <= 1.0 for s in head.scores)


def test_tag_options_select_heads_cap_scores_and_explain(served: Any, loaded_model: Any) -> None:
    first = loaded_model.manifest.heads[0]
    options = pb.TagOptions(heads=[first.name], top_k=1, min_score=0.0, explain=True)
    result = served.stub.Tag(pb.TagRequest(article=article(1), options=options), timeout=10).result
    assert [h.head for h in result.heads] == [first.name]
    (head,) = result.heads
    assert len(head.scores) == 1 and len(head.labels) == 1
    assert [e.label for e in head.explanations] == [head.labels[0].label]


def test_repeated_heads_run_once_in_the_models_order(served: Any, loaded_model: Any) -> None:
    names = [h.name for h in loaded_model.manifest.heads]
    options = pb.TagOptions(heads=list(reversed(names)) * 32, explain=True)  # 64 names
    result = served.stub.Tag(pb.TagRequest(article=article(1), options=options), timeout=10).result
    assert [h.head for h in result.heads] == names
    plain = pb.TagRequest(article=article(1), options=pb.TagOptions(explain=True))
    assert result == served.stub.Tag(plain, timeout=10).result


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (pb.TagRequest(), "text is empty"),
        (pb.TagRequest(article=pb.Article(id="x", text="   ")), "text is empty"),
        (pb.TagRequest(article=pb.Article(id="x", text="word " * 500)), "over the limit of 2000"),
        (pb.TagRequest(article=article(1), options=pb.TagOptions(heads=["nope"])), "unknown head(s) nope"),
        (pb.TagRequest(article=article(1), options=pb.TagOptions(top_k=-1)), "top_k"),
    ],
    ids=["missing-article", "blank-text", "too-long", "unknown-head", "negative-top-k"],
)
def test_invalid_requests_are_invalid_argument(served: Any, request_: pb.TagRequest, expected: str) -> None:
    code, details = code_of(served.stub.Tag, request_, timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details


def test_tag_batch_keeps_order_and_reports_bad_items_alone(served: Any) -> None:
    articles = [article(0), article(1, text=""), article(2), article(3, text="x " * 1500), article(4)]
    response = served.stub.TagBatch(pb.TagBatchRequest(articles=articles), timeout=10)
    assert [i.article_id for i in response.items] == ["a-0", "a-1", "a-2", "a-3", "a-4"]
    assert [i.WhichOneof("outcome") for i in response.items] == [
        "result",
        "error",
        "result",
        "error",
        "result",
    ]
    assert response.items[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "text is empty" in response.items[1].error.message
    assert "over the limit" in response.items[3].error.message
    assert response.model_version == "v1"
    assert all(i.result.model_version == "v1" for i in response.items if i.HasField("result"))


def test_tag_batch_over_the_limit_or_with_unknown_head_fails_whole(served: Any) -> None:
    code, details = code_of(
        served.stub.TagBatch, pb.TagBatchRequest(articles=[article(i) for i in range(9)]), timeout=10
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit is 8" in details
    request = pb.TagBatchRequest(articles=[article(1)], options=pb.TagOptions(heads=["nope"]))
    assert code_of(served.stub.TagBatch, request, timeout=10)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_tag_stream_answers_every_article_with_its_id(served: Any) -> None:
    requests = [
        pb.TagStreamRequest(article=article(i, text="" if i == 7 else TEXT), correlation_id=f"c{i}")
        for i in range(40)
    ]
    responses = list(served.stub.TagStream(iter(requests), timeout=20))
    assert sorted(r.correlation_id for r in responses) == sorted(f"c{i}" for i in range(40))
    by_id = {r.item.article_id: r for r in responses}
    assert set(by_id) == {f"a-{i}" for i in range(40)}
    assert by_id["a-7"].item.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert by_id["a-7"].correlation_id == "c7"
    assert all(r.item.result.model_version == "v1" for k, r in by_id.items() if k != "a-7")


def test_get_model_describes_the_served_model(served: Any, loaded_model: Any) -> None:
    response = served.stub.GetModel(pb.GetModelRequest(), timeout=10)
    manifest = loaded_model.manifest
    assert (response.name, response.version) == (manifest.name, manifest.version)
    assert [h.name for h in response.heads] == [h.name for h in manifest.heads]
    assert [list(h.labels) for h in response.heads] == [list(h.labels) for h in manifest.heads]
    assert [len(h.thresholds) for h in response.heads] == [len(h.thresholds) for h in manifest.heads]
    assert set(response.metrics.keys()) == set(manifest.metrics)
    assert abs(response.loaded_at.ToNanoseconds() / 1e9 - loaded_model.loaded_at) < 60


def test_health_and_reflection(served: Any) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    for name in ("", "newstagger.v1.TaggerService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert {"newstagger.v1.TaggerService", "newstagger.v1.AdminService", "grpc.health.v1.Health"} <= names
    symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol="newstagger.v1.TaggerService")
    (reply,) = list(stub.ServerReflectionInfo(iter([symbol]), timeout=5))
    assert reply.file_descriptor_response.file_descriptor_proto


def test_no_model_is_unavailable_until_one_is_loaded(tmp_path: Path, model_dir: Path) -> None:
    root = tmp_path / "empty-registry"
    root.mkdir()
    with serve_in_process(root, admin_token=TOKEN) as s:
        health = health_pb2_grpc.HealthStub(s.channel)
        check = health_pb2.HealthCheckRequest(service="newstagger.v1.TaggerService")
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # the admin service can serve without a model: it is how an operator makes one load
        admin = health_pb2.HealthCheckRequest(service="newstagger.v1.AdminService")
        assert health.Check(admin, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        code, details = code_of(s.stub.Tag, pb.TagRequest(article=article(1)), timeout=5)
        assert code == grpc.StatusCode.UNAVAILABLE and details == "no model is loaded"
        batch = pb.TagBatchRequest(articles=[article(1)])
        assert code_of(s.stub.TagBatch, batch, timeout=5)[0] == grpc.StatusCode.UNAVAILABLE
        assert code_of(s.stub.GetModel, pb.GetModelRequest(), timeout=5)[0] == grpc.StatusCode.UNAVAILABLE
        # a model appears; the admin reload picks it up and health follows
        reg = ModelRegistry(root)
        shutil.copytree(model_dir, reg.new_version_dir("v1"))
        reg.promote("v1")
        auth = (("authorization", "Bearer s3cret"),)
        reply = s.admin.ReloadModel(pb.ReloadModelRequest(), metadata=auth, timeout=30)
        assert (reply.result, reply.version) == ("loaded", "v1")
        wait_for(
            lambda: health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.SERVING,
            timeout=10,
            what="health SERVING",
        )
        assert s.stub.Tag(pb.TagRequest(article=article(1)), timeout=10).result.model_version == "v1"


def test_admin_reload_requires_the_token(registry: ModelRegistry) -> None:
    with serve_in_process(registry.root) as s:
        code, details = code_of(s.admin.ReloadModel, pb.ReloadModelRequest(), timeout=5)
        assert code == grpc.StatusCode.UNIMPLEMENTED and "--admin-token" in details
    with serve_in_process(registry.root, admin_token=TOKEN) as s:
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
            code, _ = code_of(s.admin.ReloadModel, pb.ReloadModelRequest(), metadata=metadata, timeout=5)
            assert code == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret"),)
        reply = s.admin.ReloadModel(pb.ReloadModelRequest(), metadata=good, timeout=10)
        assert (reply.result, reply.version) == ("unchanged", "v1")


def test_admin_service_health_is_unknown_while_it_is_disabled(registry: ModelRegistry) -> None:
    """Without --admin-token health checking does not know AdminService (Check: NOT_FOUND, Watch:
    SERVICE_UNKNOWN, as grpc.health.v1 has it for an unknown service); with one it is SERVING."""
    admin = health_pb2.HealthCheckRequest(service="newstagger.v1.AdminService")
    statuses = health_pb2.HealthCheckResponse
    with serve_in_process(registry.root) as s:
        health = health_pb2_grpc.HealthStub(s.channel)
        tagger = health_pb2.HealthCheckRequest(service="newstagger.v1.TaggerService")
        assert health.Check(tagger, timeout=5).status == statuses.SERVING
        assert code_of(health.Check, admin, timeout=5)[0] == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(admin, timeout=5)
        assert next(watch).status == statuses.SERVICE_UNKNOWN
        watch.cancel()
    with serve_in_process(registry.root, admin_token=TOKEN) as s:
        health = health_pb2_grpc.HealthStub(s.channel)
        assert health.Check(admin, timeout=5).status == statuses.SERVING


class BlockingTagger(Tagger):
    """Blocks inside ``tag`` until released; records which articles it computed."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.computed: list[str] = []

    def tag(self, articles: Sequence[Article], options: Any = DEFAULT_OPTIONS) -> list[TagResult]:
        self.computed += [a.id for a in articles]
        self.entered.set()
        assert self.release.wait(30)
        return super().tag(articles, options)


def test_full_queue_is_resource_exhausted_and_expired_calls_are_not_computed(registry: ModelRegistry) -> None:
    tagger = BlockingTagger()
    with serve_in_process(registry.root, tagger=tagger, queue_size=1, max_batch_size=1) as s:
        busy = s.stub.Tag.future(pb.TagRequest(article=article("busy")), timeout=30)
        assert tagger.entered.wait(10)  # the batcher is now stuck on "busy"
        expiring = s.stub.Tag.future(pb.TagRequest(article=article("late")), timeout=0.5)
        wait_for(lambda: s.runtime.batcher.depth() == 1, timeout=10, what="queued")
        code, details = code_of(s.stub.Tag, pb.TagRequest(article=article("extra")), timeout=5)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in details
        assert s.sample("newstagger_overload_rejections_total") == 1
        assert s.sample("newstagger_grpc_requests_total", method="Tag", code="RESOURCE_EXHAUSTED") == 1
        with pytest.raises(grpc.RpcError) as info:
            expiring.result(10)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        tagger.release.set()
        assert busy.result(10).result.article_id == "a-busy"
        # the expired article holds its queue slot until the batcher takes and skips it
        wait_for(lambda: s.runtime.batcher.depth() == 0, timeout=10, what="expired article skipped")
        after = s.stub.Tag(pb.TagRequest(article=article("after")), timeout=10)
        assert after.result.article_id == "a-after"
        assert "a-late" not in tagger.computed  # its deadline passed while queued: never computed
        assert tagger.computed == ["a-busy", "a-after"]


class FailingTagger(Tagger):
    def tag(self, articles: Sequence[Article], options: Any = DEFAULT_OPTIONS) -> list[TagResult]:
        raise RuntimeError("boom at /srv/secret/model.skops line 42")


def test_unexpected_errors_are_internal_with_a_generic_message(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_in_process(registry.root, tagger=FailingTagger()) as s, caplog.at_level(logging.ERROR):
        code, details = code_of(s.stub.Tag, pb.TagRequest(article=article(1)), timeout=10)
        assert code == grpc.StatusCode.INTERNAL
        assert details == "internal error"
        response = s.stub.TagBatch(pb.TagBatchRequest(articles=[article(1)]), timeout=10)
        assert response.items[0].error.code == grpc.StatusCode.INTERNAL.value[0]
        assert response.items[0].error.message == "internal error"
        assert s.sample("newstagger_grpc_requests_total", method="Tag", code="INTERNAL") == 1
    logged = [r for r in caplog.records if r.exc_info and "boom at /srv/secret" in str(r.exc_info[1])]
    assert logged, "the traceback is logged on the server"


def test_metrics_count_calls_by_method_and_code(served: Any) -> None:
    for i in range(3):
        served.stub.Tag(pb.TagRequest(article=article(i)), timeout=10)
    code_of(served.stub.Tag, pb.TagRequest(), timeout=10)
    served.stub.TagBatch(pb.TagBatchRequest(articles=[article(1), article(2)]), timeout=10)
    assert served.sample("newstagger_grpc_requests_total", method="Tag", code="OK") == 3
    assert served.sample("newstagger_grpc_requests_total", method="Tag", code="INVALID_ARGUMENT") == 1
    assert served.sample("newstagger_grpc_requests_total", method="TagBatch", code="OK") == 1
    assert served.sample("newstagger_grpc_request_duration_seconds_count", method="Tag") == 4
    assert served.sample("newstagger_grpc_in_flight_requests") == 0
    assert served.sample("newstagger_batch_size_articles_count") >= 4


def test_concurrent_tag_calls_are_batched(registry: ModelRegistry) -> None:
    tagger = BlockingTagger()
    with serve_in_process(registry.root, tagger=tagger) as s:
        first = s.stub.Tag.future(pb.TagRequest(article=article("first")), timeout=30)
        assert tagger.entered.wait(10)
        rest = [s.stub.Tag.future(pb.TagRequest(article=article(i)), timeout=30) for i in range(10)]
        wait_for(lambda: s.runtime.batcher.depth() == 10, timeout=10, what="10 queued")
        tagger.release.set()
        assert first.result(10).result.article_id == "a-first"
        assert sorted(f.result(10).result.article_id for f in rest) == sorted(f"a-{i}" for i in range(10))
        # one call for "first", then the ten queued meanwhile in one vectorized call
        assert s.sample("newstagger_batch_size_articles_count") == 2
        assert s.sample("newstagger_batch_size_articles_sum") == 11
