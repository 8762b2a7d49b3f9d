"""The Open Inference Protocol (V2) over HTTP, called by the published client
(``tritonclient.http``, unmodified) and by plain JSON over httpx. What it refuses, and how:
test_v2_http_refusals.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.model.registry import ModelRegistry
from tests.helpers import REPO
from tests.integration.test_http_support import HttpServed, serve_http

TEXTS = [
    "Officials met in the capital on Monday to discuss the ceasefire agreement and next steps.",
    "North Korean troops were sent to Kursk to fight alongside Russian forces.",
]


@pytest.fixture()
def served(registry: ModelRegistry) -> Iterator[HttpServed]:
    with serve_http(registry.root, max_text_bytes=2000, max_request_articles=8) as s:
        yield s


@pytest.fixture()
def client(served: HttpServed) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{served.port}", network_timeout=10)
    yield c
    c.close()


def texts_input(texts: list[str], binary: bool = True, name: str = "text") -> triton.InferInput:
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
    return tensor


def grpc_results(served: HttpServed, texts: list[str]) -> list[pb.TagResult]:
    return [
        served.grpc.stub.Tag(pb.TagRequest(article=pb.Article(id=str(i), text=t)), timeout=10).result
        for i, t in enumerate(texts)
    ]


def assert_same_as_grpc(result: Any, served: HttpServed, heads: list[str]) -> None:
    """Each head's tensors hold what the gRPC Tag call returns for the same articles."""
    for row, expected in enumerate(grpc_results(served, TEXTS)):
        for head in expected.heads:
            if head.head not in heads:
                continue
            labels = [
                x.decode() if isinstance(x, bytes) else x for x in result.as_numpy(f"{head.head}_labels")[row]
            ]
            assert labels == [s.label for s in head.scores]
            scores = result.as_numpy(f"{head.head}_scores")[row]
            assert scores.tolist() == pytest.approx([s.score for s in head.scores], rel=1e-6)
            assigned = result.as_numpy(f"{head.head}_assigned")[row].tolist()
            assert [lbl for lbl, a in zip(labels, assigned, strict=True) if a] == [
                s.label for s in head.labels
            ]


def test_triton_client_checks_health_and_reads_metadata(
    client: triton.InferenceServerClient, loaded_model: Any
) -> None:
    manifest = loaded_model.manifest
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(manifest.name) and client.is_model_ready(manifest.name, manifest.version)
    assert not client.is_model_ready("other-model")
    assert client.get_server_metadata()["name"] == "newstagger"
    meta = client.get_model_metadata(manifest.name)
    assert meta["name"] == manifest.name and meta["versions"] == [manifest.version]
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("text", "BYTES", [-1]),
        ("title", "BYTES", [-1]),
        ("target", "BYTES", [-1]),
    ]
    expected = [
        (f"{h.name}_{kind}", dtype, [-1, len(h.labels)])
        for h in manifest.heads
        for kind, dtype in (("labels", "BYTES"), ("scores", "FP32"), ("assigned", "BOOL"))
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == expected
    with pytest.raises(InferenceServerException, match="no model 'other-model'"):
        client.get_model_metadata("other-model")


def test_triton_client_infers_with_binary_tensors_as_grpc_tags(
    client: triton.InferenceServerClient, served: HttpServed, loaded_model: Any
) -> None:
    name = loaded_model.manifest.name
    result = client.infer(name, [texts_input(TEXTS)], request_id="r1")  # binary in and out (defaults)
    assert result.get_response()["id"] == "r1"
    assert result.get_response()["model_version"] == "v1"
    assert_same_as_grpc(result, served, [h.name for h in loaded_model.manifest.heads])


def test_triton_client_infers_with_json_tensors_and_only_the_outputs_asked_for(
    client: triton.InferenceServerClient, served: HttpServed, loaded_model: Any
) -> None:
    name, version = loaded_model.manifest.name, loaded_model.manifest.version
    outputs = [
        triton.InferRequestedOutput(f"stance_{k}", binary_data=False)
        for k in ("labels", "scores", "assigned")
    ]
    result = client.infer(name, [texts_input(TEXTS, binary=False)], model_version=version, outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == [o.name() for o in outputs]
    assert result.as_numpy("topics_scores") is None
    assert_same_as_grpc(result, served, ["stance"])


def test_plain_json_infer_with_title_and_target(served: HttpServed, loaded_model: Any) -> None:
    name = loaded_model.manifest.name
    body = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [[TEXTS[0]], [TEXTS[1]]]},
            {"name": "title", "datatype": "BYTES", "shape": [2], "data": ["Talks", "Troops"]},
            {"name": "target", "datatype": "BYTES", "shape": [2], "data": ["", ""]},
        ],
        "outputs": [{"name": "topics_scores"}, {"name": "topics_scores"}],  # asked twice, answered once
    }
    reply = served.client.post(f"/v2/models/{name}/infer", json=body)
    assert reply.status_code == 200, reply.text
    (output,) = reply.json()["outputs"]
    width = len(loaded_model.manifest.head("topics").labels)
    assert (
        output["name"] == "topics_scores" and output["shape"] == [2, width] and output["datatype"] == "FP32"
    )
    assert len(output["data"]) == 2 * width and all(0 <= x <= 1 for x in output["data"])


def test_without_a_model_the_server_is_live_but_not_ready(tmp_path: Any) -> None:
    with serve_http(tmp_path / "empty-registry") as s:
        client = triton.InferenceServerClient(f"127.0.0.1:{s.port}", network_timeout=10)
        try:
            assert client.is_server_live()
            assert not client.is_server_ready()
        finally:
            client.close()
        reply = s.client.post("/v2/models/newstagger/infer", json={"inputs": []})
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        ready = s.client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        documented = json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))["paths"]
        assert "503" in documented["/v2/health/ready"]["get"]["responses"]
        assert "503" in documented["/v2/models/{model_name}/infer"]["post"]["responses"]
