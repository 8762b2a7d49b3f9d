"""What the Open Inference Protocol (V2) over HTTP refuses, and how: bad and malformed infer
requests are 400 with a short clear message (lone surrogates too, not 500), an unknown model or
version is 404, caller names are quoted cut short, an oversized tensor is refused as soon as seen,
and refusals before routing have V2's error body."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from service.model.registry import ModelRegistry
from tests.integration.test_http_support import HttpServed, serve_http


@pytest.fixture()
def served(registry: ModelRegistry) -> Iterator[HttpServed]:
    with serve_http(registry.root, max_text_bytes=2000, max_request_articles=8) as s:
        yield s


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
