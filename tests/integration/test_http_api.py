"""The REST/JSON API through real sockets and a real HTTP client (httpx): each route, each
documented status, the same results as the gRPC API, and the OpenAPI document. A full queue, a
passed deadline and clients that leave: test_http_backpressure.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi
from prometheus_client.parser import text_string_to_metric_families

from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.http import HealthServer
from service.model.registry import ModelRegistry
from tests.integration.test_grpc_api import FailingTagger
from tests.integration.test_http_support import (
    OPENAPI,
    TEXT,
    HttpServed,
    article,
    assert_error,
    schema,
    serve_http,
)

TOKEN = "s3cret"  # noqa: S105 - a test token


def proto_result_json(result: pb.TagResult) -> dict[str, Any]:
    """A gRPC TagResult in the REST/Kafka JSON shape, to compare the two APIs."""
    heads = []
    for h in result.heads:
        head: dict[str, Any] = {
            "head": h.head,
            "kind": h.kind,
            "labels": [{"label": s.label, "score": pytest.approx(s.score, rel=1e-6)} for s in h.labels],
            "scores": [{"label": s.label, "score": pytest.approx(s.score, rel=1e-6)} for s in h.scores],
        }
        if h.explanations:
            head["explanations"] = {e.label: list(e.terms) for e in h.explanations}
        heads.append(head)
    return {
        "id": result.article_id,
        "heads": heads,
        "model": {"name": result.model_name, "version": result.model_version},
    }


@pytest.fixture()
def served(registry: ModelRegistry) -> Iterator[HttpServed]:
    with serve_http(registry.root, max_text_bytes=2000, max_request_articles=8, admin_token=TOKEN) as s:
        yield s


@pytest.mark.parametrize(
    "options",
    [
        None,
        {"heads": ["stance"], "top_k": 1, "min_score": 0.0, "explain": True},
        {"explain": True},
        {"heads": ["stance", "topics"] * 32, "explain": True},
    ],
    ids=["defaults", "one-head-top1-explain", "explain", "repeated-heads"],
)
def test_tag_returns_what_grpc_tag_returns(served: HttpServed, options: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"article": article(1)}
    if options is not None:
        body["options"] = options
    reply = served.client.post("/v1/tag", json=body)
    assert reply.status_code == 200, reply.text
    heads = [h["head"] for h in reply.json()["result"]["heads"]]
    assert heads == sorted(set(heads), key=["topics", "stance"].index)  # each once, in the model's order
    jsonschema.validate(reply.json(), schema("TagResponse"))
    grpc_options = pb.TagOptions(**options) if options else None
    expected = served.grpc.stub.Tag(pb.TagRequest(article=pb.Article(**article(1)), options=grpc_options))
    assert reply.json()["result"] == proto_result_json(expected.result)


def test_tag_batch_answers_every_article_in_order_and_a_bad_one_fails_alone(served: HttpServed) -> None:
    articles = [article(0), article(1, text="  "), article(2, text="word " * 500), article(3)]
    reply = served.client.post("/v1/tag:batch", json={"articles": articles, "options": {"top_k": 2}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    jsonschema.validate(body, schema("TagBatchResponse"))
    assert [item["id"] for item in body["items"]] == ["a-0", "a-1", "a-2", "a-3"]
    assert body["model_version"] == "v1"
    assert body["items"][1]["error"] == {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": "article 'a-1': text is empty",
    }
    assert "over the limit of 2000" in body["items"][2]["error"]["message"]
    for item in (body["items"][0], body["items"][3]):
        assert all(len(head["scores"]) <= 2 for head in item["result"]["heads"])
    assert_error(
        served.client.post("/v1/tag:batch", json={"articles": [article(i) for i in range(9)]}),
        400,
        "INVALID_ARGUMENT",
        "9 articles in one request; the limit is 8",
    )


def test_model_is_what_grpc_get_model_returns(served: HttpServed, loaded_model: Any) -> None:
    reply = served.client.get("/v1/model")
    assert reply.status_code == 200
    body = reply.json()
    jsonschema.validate(body, schema("ModelInfo"))
    expected = served.grpc.stub.GetModel(pb.GetModelRequest())
    assert (body["name"], body["version"]) == (expected.name, expected.version) == ("newstagger", "v1")
    assert [(h["name"], h["kind"], h["labels"]) for h in body["heads"]] == [
        (h.name, h.kind, list(h.labels)) for h in expected.heads
    ]
    assert body["metrics"] == loaded_model.manifest.metrics


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "text is empty"),
        ({"article": {"id": "x", "text": "   "}}, "text is empty"),
        ({"article": article(1, text="word " * 500)}, "over the limit of 2000"),
        ({"article": article(1), "options": {"heads": ["nope"]}}, "unknown head(s) nope"),
        ({"article": article(1), "options": {"top_k": -1}}, "top_k must be >= 0"),
        ({"article": article(1), "options": {"min_score": 2}}, "min_score must be between 0 and 1"),
        ({"article": {"id": "x", "txt": "typo"}}, "article.txt: Extra inputs are not permitted"),
        ({"article": {"id": 1, "text": TEXT}}, "article.id: Input should be a valid string"),
        ({"article": article(1), "options": {"top_k": "2"}}, "options.top_k: Input should be a valid int"),
        ({"article": article(1), "options": {"top_k": 10**23}}, "options.top_k"),
        ({"article": article(1), "options": {"explain": 1}}, "options.explain: Input should be a valid bool"),
    ],
    ids=[
        "missing-article",
        "blank",
        "too-long",
        "unknown-head",
        "top-k",
        "min-score",
        "typo",
        "bad-type",
        "top-k-string",
        "top-k-huge",
        "explain-number",
    ],
)
def test_invalid_requests_are_400_with_the_grpc_message(
    served: HttpServed, body: dict[str, Any], message: str
) -> None:
    assert_error(served.client.post("/v1/tag", json=body), 400, "INVALID_ARGUMENT", message)


def test_malformed_json_unknown_routes_and_methods(served: HttpServed) -> None:
    assert_error(served.client.post("/v1/tag", content=b"{not json"), 400, "INVALID_ARGUMENT", "Invalid JSON")
    assert_error(served.client.get("/v1/nope"), 404, "NOT_FOUND")
    assert_error(served.client.get("/v1/tag"), 405, "UNIMPLEMENTED")


def test_a_bad_field_is_named_cut_short(served: HttpServed) -> None:
    """Field names and metadata keys are caller input: the error names them, cut short."""
    big = "k" * 50_000
    extra = {"article": {"text": TEXT, **{f"{i}{big}": 1 for i in range(5)}}}
    bad_value = {"articles": [{"text": TEXT, "metadata": {big: 5}}]}
    for path, body in (("/v1/tag", extra), ("/v1/tag:batch", bad_value)):
        reply = served.client.post(path, json=body)
        assert_error(reply, 400, "INVALID_ARGUMENT", "bad request body: ")
        assert "kkk…" in reply.json()["error"]["message"] and len(reply.content) < 1000, reply.text[:300]


def test_bodies_over_the_limit_are_413(registry: ModelRegistry) -> None:
    with serve_http(registry.root, http_max_body_bytes=4096) as s:
        big = {"article": article(1, text="word " * 2000)}
        assert_error(s.client.post("/v1/tag", json=big), 413, "INVALID_ARGUMENT", "over the limit of 4096")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield json.dumps(big).encode()

        assert_error(s.client.post("/v1/tag", content=chunks()), 413, "INVALID_ARGUMENT", "4096 bytes")
        assert s.client.post("/v1/tag", json={"article": article(1)}).status_code == 200


def test_a_body_refused_before_routing_is_counted_under_its_route(registry: ModelRegistry) -> None:
    """A Content-Length over the limit is refused before routing; /metrics still names the route."""
    big = b"x" * 5000
    with serve_http(registry.root, http_max_body_bytes=4096) as s:
        side_door = HealthServer(s.grpc.registry, s.grpc.runtime.ready, "127.0.0.1", 0)
        metrics_port = side_door.start()
        try:
            for path in ("/v1/tag", "/v1/tag:batch", "/v1/nothing-here"):
                assert_error(s.client.post(path, content=big), 413, "INVALID_ARGUMENT", "4096")
            reply = s.client.post("/v2/models/newstagger/infer", content=big)  # V2's own error body
            assert reply.status_code == 413 and "4096" in reply.json()["error"], reply.text
            assert_error(s.client.put("/v1/tag", content=big), 413, "INVALID_ARGUMENT", "4096")
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        finally:
            side_door.stop()
    counts = {
        sample.labels["route"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "newstagger_http_requests_total" and sample.labels["status"] == "413"
    }
    assert counts == {
        "/v1/tag": 2,  # the PUT too: the route of a 405, had the body been small
        "/v1/tag:batch": 1,
        "/v2/models/{model_name}/infer": 1,
        "unmatched": 1,
    }


def test_no_model_is_503_with_retry_after(tmp_path: Any) -> None:
    with serve_http(tmp_path / "empty-registry") as s:
        reply = s.client.post("/v1/tag", json={"article": article(1)})
        assert_error(reply, 503, "UNAVAILABLE", "no model is loaded")
        assert reply.headers["retry-after"] == "1"
        assert_error(s.client.get("/v1/model"), 503, "UNAVAILABLE")


def test_unexpected_errors_are_500_with_a_generic_message(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_http(registry.root, tagger=FailingTagger()) as s, caplog.at_level(logging.ERROR):
        reply = s.client.post("/v1/tag", json={"article": article(1)})
        assert_error(reply, 500, "INTERNAL")
        assert reply.json()["error"]["message"] == "internal error"
        assert "secret" not in reply.text
        item = s.client.post("/v1/tag:batch", json={"articles": [article(1)]}).json()["items"][0]
        assert item["error"] == {"code": 500, "status": "INTERNAL", "message": "internal error"}
    assert [r for r in caplog.records if r.exc_info and "boom at /srv/secret" in str(r.exc_info[1])]


def test_admin_reload_needs_the_bearer_token(served: HttpServed, registry: ModelRegistry) -> None:
    assert_error(served.client.post("/v1/admin/reload"), 401, "UNAUTHENTICATED", "bearer token")
    wrong = served.client.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401, "UNAUTHENTICATED")
    reply = served.client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200
    jsonschema.validate(reply.json(), schema("ReloadResponse"))
    assert reply.json()["result"] == "unchanged" and reply.json()["version"] == "v1"


def test_admin_reload_is_501_without_an_admin_token(registry: ModelRegistry) -> None:
    with serve_http(registry.root) as s:
        reply = s.client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert_error(reply, 501, "UNIMPLEMENTED", "--admin-token")


def test_the_served_openapi_document_is_the_checked_in_one_and_valid(served: HttpServed) -> None:
    reply = served.client.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.json() == OPENAPI
    validate_openapi(OPENAPI)
    assert {"/v1/tag", "/v1/tag:batch", "/v1/model", "/v2/models/{model_name}/infer"} <= set(OPENAPI["paths"])


def test_requests_are_counted_by_route_and_status(served: HttpServed) -> None:
    served.client.post("/v1/tag", json={"article": article(1)})
    served.client.post("/v1/tag", json={})
    served.client.get("/v1/nothing-here")
    assert served.grpc.sample("newstagger_http_requests_total", route="/v1/tag", status="200") == 1
    assert served.grpc.sample("newstagger_http_requests_total", route="/v1/tag", status="400") == 1
    assert served.grpc.sample("newstagger_http_requests_total", route="unmatched", status="404") == 1
    assert served.grpc.sample("newstagger_http_request_duration_seconds_count", route="/v1/tag") == 2
    assert served.grpc.sample("newstagger_http_in_flight_requests") == 0
