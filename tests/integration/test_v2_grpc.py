"""The Open Inference Protocol (V2) over gRPC, through stubs generated from the protocol's
``.proto`` (``protos/inference/``) on a real server. The published clients (``tritonclient.grpc``,
KServe's) are driven in processes of their own by test_v2_clients."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.gen.inference import open_inference_grpc_pb2 as v2
from service.gen.inference import open_inference_grpc_pb2_grpc as v2_grpc
from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.grpc_api import server as grpc_server
from service.model.registry import ModelRegistry
from tests.integration.test_grpc_api import BlockingTagger
from tests.integration.test_grpc_support import Served, serve_in_process

TEXTS = [
    "Officials met in the capital on Monday to discuss the ceasefire agreement and next steps.",
    "North Korean troops were sent to Kursk to fight alongside Russian forces.",
]


@pytest.fixture()
def served(registry: ModelRegistry) -> Iterator[Served]:
    with serve_in_process(registry.root, max_text_bytes=2000, max_request_articles=8) as s:
        yield s


@pytest.fixture()
def stub(served: Served) -> v2_grpc.GRPCInferenceServiceStub:
    return v2_grpc.GRPCInferenceServiceStub(served.channel)


def raw_bytes(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def split_raw_bytes(raw: bytes) -> list[str]:
    out, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return out


def infer_request(
    model: str, texts: list[str], raw: bool, outputs: Sequence[str] = ()
) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[len(texts)])
    request = v2.ModelInferRequest(model_name=model, id="req-1", inputs=[tensor])
    request.outputs.extend(v2.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs)
    if raw:
        request.raw_input_contents.append(raw_bytes(texts))
    else:
        request.inputs[0].contents.bytes_contents.extend(t.encode() for t in texts)
    return request


def test_health_and_metadata(stub: v2_grpc.GRPCInferenceServiceStub, loaded_model: Any) -> None:
    manifest = loaded_model.manifest
    assert stub.ServerLive(v2.ServerLiveRequest(), timeout=5).live
    assert stub.ServerReady(v2.ServerReadyRequest(), timeout=5).ready
    assert stub.ModelReady(v2.ModelReadyRequest(name=manifest.name), timeout=5).ready
    assert stub.ModelReady(v2.ModelReadyRequest(name=manifest.name, version="v1"), timeout=5).ready
    assert not stub.ModelReady(v2.ModelReadyRequest(name=manifest.name, version="v9"), timeout=5).ready
    assert stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=5).name == "newstagger"
    meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=manifest.name), timeout=5)
    assert (meta.name, list(meta.versions)) == (manifest.name, ["v1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs][0] == ("text", "BYTES", [-1])
    topics = len(manifest.head("topics").labels)
    assert ("topics_scores", "FP32", [-1, topics]) in [
        (t.name, t.datatype, list(t.shape)) for t in meta.outputs
    ]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelMetadata(v2.ModelMetadataRequest(name="other"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "no model 'other'" in info.value.details()


@pytest.mark.parametrize("raw", [True, False], ids=["raw-contents", "typed-contents"])
def test_infer_returns_what_tag_returns(
    stub: v2_grpc.GRPCInferenceServiceStub, served: Served, loaded_model: Any, raw: bool
) -> None:
    reply = stub.ModelInfer(infer_request(loaded_model.manifest.name, TEXTS, raw), timeout=10)
    assert (reply.model_name, reply.model_version, reply.id) == (loaded_model.manifest.name, "v1", "req-1")
    outputs: dict[str, Any] = {}
    for i, out in enumerate(reply.outputs):
        shape = tuple(out.shape)
        if raw:
            data = reply.raw_output_contents[i]
            if out.datatype == "BYTES":
                outputs[out.name] = np.array(split_raw_bytes(data), dtype=object).reshape(shape)
            else:
                outputs[out.name] = np.frombuffer(data, "<f4" if out.datatype == "FP32" else "?").reshape(
                    shape
                )
        else:
            c = out.contents
            values: list[Any] = (
                [b.decode() for b in c.bytes_contents]
                if out.datatype == "BYTES"
                else list(c.fp32_contents if out.datatype == "FP32" else c.bool_contents)
            )
            outputs[out.name] = np.array(values, dtype=object).reshape(shape)
    for row, text in enumerate(TEXTS):
        expected = served.stub.Tag(pb.TagRequest(article=pb.Article(id="x", text=text)), timeout=10).result
        for head in expected.heads:
            labels = list(outputs[f"{head.head}_labels"][row])
            assert labels == [s.label for s in head.scores]
            scores = [float(x) for x in outputs[f"{head.head}_scores"][row]]
            assert scores == pytest.approx([s.score for s in head.scores], rel=1e-6)
            assigned = [bool(x) for x in outputs[f"{head.head}_assigned"][row]]
            assert [lbl for lbl, a in zip(labels, assigned, strict=True) if a] == [
                s.label for s in head.labels
            ]


def test_infer_only_the_outputs_asked_for(stub: v2_grpc.GRPCInferenceServiceStub, loaded_model: Any) -> None:
    reply = stub.ModelInfer(
        infer_request(loaded_model.manifest.name, TEXTS, False, ["stance_labels"]), timeout=10
    )
    assert [o.name for o in reply.outputs] == ["stance_labels"]
    assert list(reply.outputs[0].shape) == [2, len(loaded_model.manifest.head("stance").labels)]


def test_bad_infer_requests_are_invalid_argument(
    stub: v2_grpc.GRPCInferenceServiceStub, served: Served, loaded_model: Any
) -> None:
    name = loaded_model.manifest.name
    overflow = infer_request(name, [], raw=False)  # 2**64 elements claimed, none given
    overflow.inputs[0].shape[:] = [2**32, 2**32]
    negative = infer_request(name, ["a b"], raw=False)
    negative.inputs[0].shape[:] = [-1, -1]
    twice = infer_request(name, ["a b"], raw=False)
    twice.inputs.append(twice.inputs[0])
    cases = [
        (infer_request(name, ["  "], raw=True), "text is empty"),
        (infer_request(name, ["a"] * 9, raw=False), "the limit is 8"),
        (infer_request(name, ["a b"], raw=False, outputs=["nope"]), "unknown output(s) nope"),
        (overflow, "shape [4294967296, 4294967296]: more articles than one request may carry"),
        (negative, "shape must be a list of non-negative integers"),
        (twice, "input 'text' is given twice"),
    ]
    for request, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in info.value.details()
    assert served.sample(
        "newstagger_grpc_requests_total", method="ModelInfer", code="INVALID_ARGUMENT"
    ) == len(cases)


def test_error_messages_quote_caller_names_cut_short(
    stub: v2_grpc.GRPCInferenceServiceStub, loaded_model: Any
) -> None:
    """Huge or many names in a request make no huge status message (which a client with gRPC's
    default metadata limit could not even receive)."""
    name, big = loaded_model.manifest.name, "n" * 100_000
    wrong_type = infer_request(name, ["a b"], raw=False)
    wrong_type.inputs[0].name, wrong_type.inputs[0].datatype = big, "FP32" + big
    unknown_input = infer_request(name, ["a b"], raw=False)
    unknown_input.inputs.extend(
        v2.ModelInferRequest.InferInputTensor(name=f"{i}{big}", datatype="BYTES", shape=[0])
        for i in range(20)
    )
    cases = [
        (wrong_type, grpc.StatusCode.INVALID_ARGUMENT, "must be BYTES, got 'FP32nnn"),
        (unknown_input, grpc.StatusCode.INVALID_ARGUMENT, "and 15 more; the model takes text, title, target"),
        (
            infer_request(name, ["a b"], raw=False, outputs=[big]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown output",
        ),
        (infer_request(big, ["a b"], raw=False), grpc.StatusCode.NOT_FOUND, "no model 'nnn"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert (info.value.code(), message in info.value.details()) == (code, True), info.value.details()[
            :200
        ]
        assert len(info.value.details()) < 1000


def test_a_tensor_of_many_tiny_elements_is_refused_before_it_is_decoded(
    stub: v2_grpc.GRPCInferenceServiceStub, loaded_model: Any
) -> None:
    """15 MiB of 2-byte BYTES elements: refused by the shape's count, or as soon as the data
    holds more elements than the shape says, not after decoding millions of strings on the loop
    that also answers health checks (which took 2.5 s before)."""
    many = 2_700_000
    raw = raw_bytes(["ab"] * many)
    name = loaded_model.manifest.name
    cases = [
        ([many], "more articles than one request may carry; the limit is 8"),
        ([1], "more than the 1 elements"),
    ]
    for shape, message in cases:
        tensor = v2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=shape)
        request = v2.ModelInferRequest(model_name=name, inputs=[tensor], raw_input_contents=[raw])
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()
        assert time.monotonic() - started < 1.0


def test_no_model_is_unavailable_and_not_ready(tmp_path: Any) -> None:
    with serve_in_process(tmp_path / "empty") as s:
        stub = v2_grpc.GRPCInferenceServiceStub(s.channel)
        assert stub.ServerLive(v2.ServerLiveRequest(), timeout=5).live
        assert not stub.ServerReady(v2.ServerReadyRequest(), timeout=5).ready
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(infer_request("newstagger", ["a b"], raw=False), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_infer_shares_taggerservices_call_limit_and_health_still_answers(
    registry: ModelRegistry, loaded_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ModelInfer counts against the one limit of unary tagging calls (--queue-size + 128; here
    1): beyond it a call is refused at once, whichever API it came by, and probes still answer."""
    monkeypatch.setattr(grpc_server, "MAX_CONCURRENT_CALLS", 0)
    tagger = BlockingTagger()
    with serve_in_process(registry.root, tagger=tagger, queue_size=1, max_batch_size=1) as s:
        stub = v2_grpc.GRPCInferenceServiceStub(s.channel)
        request = infer_request(loaded_model.manifest.name, TEXTS[:1], raw=False)
        held = stub.ModelInfer.future(request, timeout=30)
        assert tagger.entered.wait(10)  # one ModelInfer in flight: the limit is reached
        refused = [
            (stub.ModelInfer, request),
            (s.stub.Tag, pb.TagRequest(article=pb.Article(id="a", text=TEXTS[0]))),
        ]
        for call, message in refused:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                call(message, timeout=3)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.details() == "too many calls at once (limit 1); retry later"
            assert time.monotonic() - started < 2
        health = health_pb2_grpc.HealthStub(s.channel)
        for name in ("", "newstagger.v1.TaggerService"):
            check = health_pb2.HealthCheckRequest(service=name)
            assert health.Check(check, timeout=2).status == health_pb2.HealthCheckResponse.SERVING
        assert stub.ServerReady(v2.ServerReadyRequest(), timeout=2).ready  # a probe: not limited
        assert s.sample("newstagger_grpc_requests_total", method="ModelInfer", code="RESOURCE_EXHAUSTED") == 1
        tagger.release.set()
        assert held.result(10).outputs
        assert stub.ModelInfer(request, timeout=10).outputs  # the slot is free again


def test_data_in_the_wrong_contents_field_is_refused(
    stub: v2_grpc.GRPCInferenceServiceStub, loaded_model: Any
) -> None:
    """A BYTES input's data in another typed field was read as no data: refused only by a shape
    mismatch ("shape [2] does not match 0 elements"), or with shape [0] answered as zero articles;
    with raw_input_contents, an input's contents were silently ignored."""
    name = loaded_model.manifest.name
    cases = []
    for field, values, shape in (
        ("int64_contents", [1, 2], [2]),
        ("fp32_contents", [1.0], [1]),
        ("int64_contents", [7], [0]),
    ):
        request = infer_request(name, [], raw=False)
        request.inputs[0].shape[:] = shape
        getattr(request.inputs[0].contents, field).extend(values)
        cases.append(
            (
                request,
                f"input 'text' is BYTES: its data belongs in contents.bytes_contents "
                f"(or raw_input_contents), not contents.{field}",
            )
        )
    both = infer_request(name, TEXTS[:1], raw=True)
    both.inputs[0].contents.bytes_contents.append(b"another text")
    cases.append((both, "input 'text' has contents.bytes_contents, but the request has raw_input_contents"))
    for request, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in info.value.details(), info.value.details()
