"""The Open Inference Protocol (V2) over HTTP, called by the published client
(``tritonclient.http``, unmodified) and by plain JSON over httpx."""

from __future__ import annotations

import json
import struct
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


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ([], [], "the input tensor 'text'"),
        ([{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["  "]}], [], "text is empty"),
        ([{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}], [], "must be BYTES"),
        ([{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a"]}], [], "does not match 1"),
        (
            [
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a b"]},
                {"name": "title", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]},
            ],
            [],
            "input 'title' has 2 elements",
        ),
        ([{"name": "body", "datatype": "BYTES", "shape": [1], "data": ["a"]}], [], "unknown input(s) body"),
        (
            [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a b"]}],
            [{"name": "x"}],
            "unknown output",
        ),
        ([{"name": "text", "datatype": "BYTES", "shape": [9], "data": ["a"] * 9}], [], "the limit is 8"),
    ],
    ids=[
        "no-text",
        "blank",
        "not-bytes",
        "bad-shape",
        "lengths",
        "unknown-input",
        "unknown-output",
        "too-many",
    ],
)
def test_bad_infer_requests_are_400(
    served: HttpServed, loaded_model: Any, inputs: list[Any], outputs: list[Any], message: str
) -> None:
    reply = served.client.post(
        f"/v2/models/{loaded_model.manifest.name}/infer", json={"inputs": inputs, "outputs": outputs}
    )
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]


TEXT_INPUT = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a b"]}
DEEP = "[" * 5000 + '"a"' + "]" * 5000


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        ('{"inputs": 5}', {}, "'inputs' must be a JSON array"),
        (json.dumps({"inputs": [TEXT_INPUT], "outputs": 5}), {}, "'outputs' must be a JSON array"),
        (json.dumps({"inputs": [TEXT_INPUT], "parameters": "x"}), {}, "'parameters' must be a JSON object"),
        (json.dumps({"inputs": [TEXT_INPUT | {"parameters": "x"}]}), {}, "'parameters' must be a JSON"),
        (
            json.dumps({"inputs": [TEXT_INPUT], "outputs": [{"name": "stance_scores", "parameters": 1}]}),
            {},
            "'parameters' must be a JSON object",
        ),
        ("{}", {"Inference-Header-Content-Length": b"\xb2"}, "bad inference-header-content-length"),
        ("{}", {"Inference-Header-Content-Length": "9" * 5000}, "bad inference-header-content-length"),
        (
            '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ' + DEEP + "}]}",
            {},
            "recursion limit exceeded",
        ),
        (json.dumps({"inputs": [TEXT_INPUT | {"data": [[["a"]]]}]}), {}, "nested deeper than its shape"),
        (json.dumps({"inputs": [TEXT_INPUT | {"shape": [2], "data": [["a", "b"]]}]}), {}, "nested deeper"),
        (
            json.dumps({"inputs": [TEXT_INPUT | {"shape": [2, 1], "data": ["a", ["b"]]}]}),
            {},
            "data is neither flat nor nested as its shape [2, 1]: data[1] is a list among elements",
        ),
        (
            json.dumps({"inputs": [TEXT_INPUT | {"shape": [1, 2], "data": [["a"], ["b"]]}]}),
            {},
            "neither flat nor nested as its shape [1, 2]: data has 2 lists where the shape has 1",
        ),
        (
            json.dumps({"inputs": [TEXT_INPUT | {"shape": [2, 1], "data": [["a", "b"], []]}]}),
            {},
            "as its shape [2, 1]: data[0] has 2 items where the shape has 1",
        ),
        (
            json.dumps({"inputs": [TEXT_INPUT | {"shape": [2, 1], "data": [["a"], "b"]}]}),
            {},
            "as its shape [2, 1]: data[1] is an element where a list of 1 belongs",
        ),
        (json.dumps({"id": 7, "inputs": [TEXT_INPUT]}), {}, "'id' must be a JSON string, got a number"),
        (
            json.dumps({"id": {"a": 1}, "inputs": [TEXT_INPUT]}),
            {},
            "'id' must be a JSON string, got an object",
        ),
        (
            json.dumps({"inputs": [TEXT_INPUT | {"shape": [2**32, 2**32], "data": []}]}),
            {},
            "has shape [4294967296, 4294967296]: more articles than one request may carry",
        ),
        (json.dumps({"inputs": [{k: v for k, v in TEXT_INPUT.items() if k != "shape"}]}), {}, "has no shape"),
        (json.dumps({"inputs": [TEXT_INPUT | {"shape": 1}]}), {}, "shape must be a list of non-negative"),
        (
            json.dumps({"inputs": [TEXT_INPUT | {"shape": [-1, -1]}]}),
            {},
            "shape must be a list of non-negative",
        ),
        (json.dumps({"inputs": [TEXT_INPUT | {"data": "troops"}]}), {}, "data must be a JSON array"),
        (json.dumps({"inputs": [{k: v for k, v in TEXT_INPUT.items() if k != "data"}]}), {}, "neither data"),
        (json.dumps({"inputs": [TEXT_INPUT, TEXT_INPUT]}), {}, "input 'text' is given twice"),
        (
            json.dumps({"inputs": [TEXT_INPUT], "parameters": {"binary_data_output": "no"}}),
            {},
            "the request: parameter binary_data_output must be true or false",
        ),
        (
            json.dumps(
                {
                    "inputs": [TEXT_INPUT],
                    "outputs": [{"name": "stance_scores", "parameters": {"binary_data": 0}}],
                }
            ),
            {},
            "output 'stance_scores': parameter binary_data must be true or false",
        ),
    ],
    ids=[
        "inputs-not-array",
        "outputs-not-array",
        "parameters-not-object",
        "input-parameters-not-object",
        "output-parameters-not-object",
        "header-not-ascii-digits",
        "header-too-long",
        "data-5000-deep",
        "data-deeper-than-shape",
        "data-nested-for-rank-1",
        "data-half-nested",
        "data-nested-transposed",
        "data-ragged",
        "data-element-for-a-row",
        "id-number",
        "id-object",
        "shape-overflows-int64",
        "no-shape",
        "shape-not-list",
        "negative-shape",
        "data-bare-string",
        "no-data",
        "input-twice",
        "binary-output-not-bool",
        "binary-data-not-bool",
    ],
)
def test_malformed_infer_requests_are_400_with_a_clear_message(
    served: HttpServed, loaded_model: Any, body: str, headers: dict[str, Any], message: str
) -> None:
    headers = {"content-type": "application/json"} | headers  # b"\xb2" arrives as "²" (Latin-1)
    reply = served.client.post(
        f"/v2/models/{loaded_model.manifest.name}/infer", content=body, headers=headers
    )
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]
    assert len(reply.json()["error"]) < 300


LONE = "\\ud800"  # a JSON escape of a lone surrogate: valid JSON, not encodable as UTF-8


@pytest.mark.parametrize(
    "body",
    [
        '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["troops ' + LONE + '"]}]}',
        '{"id": "' + LONE + '", "inputs": [' + json.dumps(TEXT_INPUT) + "]}",
        '{"inputs": [{"name": "t' + LONE + '", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}',
        '{"inputs": [' + json.dumps(TEXT_INPUT) + '], "outputs": [{"name": "x' + LONE + '"}]}',
    ],
    ids=["in-text", "in-id", "in-input-name", "in-output-name"],
)
def test_a_lone_surrogate_is_400_not_500(served: HttpServed, loaded_model: Any, body: str) -> None:
    """Python's json module accepts a lone surrogate escape; the text then failed in the model's
    batch (500, and its batch fell back to one article at a time) and a name failed while its
    error was written (500 in plain text, not even V2's error body)."""
    reply = served.client.post(f"/v2/models/{loaded_model.manifest.name}/infer", content=body)
    assert reply.status_code == 400, reply.text
    assert "not valid JSON" in reply.json()["error"]
    assert (
        served.client.post(
            f"/v2/models/{loaded_model.manifest.name}/infer", json={"inputs": [TEXT_INPUT]}
        ).status_code
        == 200
    )


def test_unknown_model_or_version_is_404(served: HttpServed, loaded_model: Any) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a b"]}]}
    for path in ("/v2/models/nope/infer", f"/v2/models/{loaded_model.manifest.name}/versions/v9/infer"):
        reply = served.client.post(path, json=body)
        assert reply.status_code == 404 and "no model" in reply.json()["error"]


def test_error_messages_quote_caller_names_cut_short(served: HttpServed, loaded_model: Any) -> None:
    big = "n" * 50_000
    infer = f"/v2/models/{loaded_model.manifest.name}/infer"
    many = [{"name": f"{i}{big}", "datatype": "BYTES", "shape": [1], "data": ["a"]} for i in range(20)]
    cases = [
        (infer, {"inputs": [TEXT_INPUT, *many]}, 400, "and 15 more; the model takes text, title, target"),
        (infer, {"inputs": [TEXT_INPUT], "outputs": [{"name": big}]}, 400, "unknown output(s) nnn"),
        (f"/v2/models/{big}/infer", {"inputs": [TEXT_INPUT]}, 404, "no model 'nnn"),
    ]
    for path, body, status, message in cases:
        reply = served.client.post(path, json=body)
        assert reply.status_code == status and message in reply.json()["error"], reply.text[:200]
        assert len(reply.content) < 1000


def test_a_tensor_of_more_elements_than_its_shape_is_refused_as_soon_as_seen(
    served: HttpServed, loaded_model: Any
) -> None:
    infer = f"/v2/models/{loaded_model.manifest.name}/infer"
    many = 2_000_000
    binary = (struct.pack("<I", 2) + b"ab") * many
    cases = [([many], "the limit is 8"), ([1], "more than the 1 elements")]
    for shape, message in cases:
        spec = {
            "name": "text",
            "datatype": "BYTES",
            "shape": shape,
            "parameters": {"binary_data_size": len(binary)},
        }
        header = json.dumps({"inputs": [spec]}).encode()
        headers = {"Inference-Header-Content-Length": str(len(header))}
        reply = served.client.post(infer, content=header + binary, headers=headers)
        assert reply.status_code == 400 and message in reply.json()["error"], reply.text[:200]
    reply = served.client.post(infer, json={"inputs": [TEXT_INPUT | {"shape": [2], "data": ["a"] * 5_000}]})
    assert reply.status_code == 400 and "more than the 2 elements" in reply.json()["error"], reply.text[:200]
    # more JSON values than a request of 8 articles needs (8 x 8 + 10,000) are not even parsed
    reply = served.client.post(infer, json={"inputs": [TEXT_INPUT | {"shape": [2], "data": ["a"] * 100_000}]})
    assert reply.status_code == 400, reply.text[:200]
    assert reply.json()["error"] == (
        "the request's JSON holds more than 10064 array elements and object members "
        "(8 per article of the limit of 8, plus 10000)"
    )


def test_refusals_before_routing_have_v2_error_bodies(registry: ModelRegistry, loaded_model: Any) -> None:
    """A body over the limit (with or without a Content-Length) and a path V2 does not have are
    answered in V2's error shape, ``{"error": message}``, as every other V2 error."""
    infer = f"/v2/models/{loaded_model.manifest.name}/infer"
    big = json.dumps({"inputs": [TEXT_INPUT | {"data": ["word " * 2000]}]}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield big

    with serve_http(registry.root, http_max_body_bytes=4096) as s:
        for reply in (s.client.post(infer, content=big), s.client.post(infer, content=chunks())):
            assert reply.status_code == 413, reply.text
            assert isinstance(reply.json()["error"], str) and "4096" in reply.json()["error"]
        reply = s.client.get("/v2/models/x/no-such-endpoint")
        assert reply.status_code == 404 and isinstance(reply.json()["error"], str), reply.text


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
