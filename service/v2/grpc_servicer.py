"""``inference.GRPCInferenceService`` (the Open Inference Protocol over gRPC) on the gRPC server.

Inputs come as typed contents (``contents.bytes_contents``) or raw bytes (``raw_input_contents``,
what Triton's client sends), never both, and never in another typed field; the response answers in
kind. Domain errors propagate to the server
interceptor, which maps them with the one table (``grpc_api/errors.py``); an unknown model or
version is NOT_FOUND.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypeAlias

import grpc

import service
from service.core.errors import InvalidRequest
from service.core.validation import quote
from service.dispatch import Dispatcher
from service.gen.inference import open_inference_grpc_pb2 as pb
from service.gen.inference import open_inference_grpc_pb2_grpc as pb_grpc
from service.model.artifact import LoadedModel
from service.v2.tensors import (
    Tensor,
    check_shape,
    declared_count,
    decode_bytes_tensor,
    encode_tensor,
    infer,
    model_label,
    model_metadata,
    text_of,
)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = "inference.GRPCInferenceService"
INFER_METHOD = f"/{SERVICE_NAME}/ModelInfer"  # the one V2 call that tags: under the server's call limit


def _check_contents(tensor: pb.ModelInferRequest.InferInputTensor, raw: bool) -> None:
    """A BYTES input's data is in ``contents.bytes_contents`` or, for every input at once, in
    ``raw_input_contents``; data in another typed field (``int64_contents``...) or in both places
    is refused, not read as no data."""
    given = ", ".join(f"contents.{field.name}" for field, _ in tensor.contents.ListFields())
    if raw and given:
        raise InvalidRequest(
            f"input {quote(tensor.name)} has {given}, but the request has raw_input_contents: "
            "give every input's data one way, not both"
        )
    if given not in ("", "contents.bytes_contents"):
        raise InvalidRequest(
            f"input {quote(tensor.name)} is BYTES: its data belongs in contents.bytes_contents "
            f"(or raw_input_contents), not {given}"
        )


def _decode_inputs(request: pb.ModelInferRequest, max_articles: int) -> dict[str, list[str]]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs: dict[str, list[str]] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.datatype != "BYTES":
            raise InvalidRequest(f"input {quote(tensor.name)} must be BYTES, got {quote(tensor.datatype)}")
        _check_contents(tensor, bool(raw))
        if tensor.name in inputs:
            raise InvalidRequest(f"input {quote(tensor.name)} is given twice")
        shape = list(tensor.shape)
        count = declared_count(tensor.name, shape, max_articles)
        if raw:
            values = decode_bytes_tensor(raw[i], count)
            check_shape(tensor.name, shape, len(values))
        else:  # checked before any element is decoded
            check_shape(tensor.name, shape, len(tensor.contents.bytes_contents))
            values = [text_of(v) for v in tensor.contents.bytes_contents]
        inputs[tensor.name] = values
    return inputs


def _contents(tensor: Tensor) -> pb.InferTensorContents:
    flat = tensor.data.ravel().tolist()
    if tensor.datatype == "BYTES":
        return pb.InferTensorContents(bytes_contents=[str(v).encode() for v in flat])
    if tensor.datatype == "FP32":
        return pb.InferTensorContents(fp32_contents=flat)
    return pb.InferTensorContents(bool_contents=flat)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dispatcher: Dispatcher, max_articles: int) -> None:
        self._dispatcher = dispatcher
        self._max_articles = max_articles

    def _matches(self, name: str, version: str) -> LoadedModel | None:
        loaded = self._dispatcher.tagger.model
        if loaded is None or name != loaded.manifest.name or version not in ("", loaded.manifest.version):
            return None
        return loaded

    async def _model(self, name: str, version: str, context: Context) -> LoadedModel:
        loaded = self._dispatcher.tagger.require_model()
        if self._matches(name, version) is None:
            served = f"{loaded.manifest.name} version {loaded.manifest.version}"
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no model {model_label(name, version)}; serving {served}"
            )
        return loaded

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:  # noqa: N802
        return pb.ServerLiveResponse(live=self._dispatcher.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:  # noqa: N802
        return pb.ServerReadyResponse(ready=self._dispatcher.serving())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:  # noqa: N802
        return pb.ModelReadyResponse(ready=self._matches(request.name, request.version) is not None)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="newstagger", version=service.__version__, extensions=[])

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        meta: Mapping[str, Any] = model_metadata(await self._model(request.name, request.version, context))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:  # noqa: N802
        loaded = await self._model(request.model_name, request.model_version, context)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        requested = [o.name for o in request.outputs]
        version, tensors = await infer(
            self._dispatcher,
            loaded,
            _decode_inputs(request, self._max_articles),
            requested,
            self._max_articles,
            deadline,
        )
        raw = bool(request.raw_input_contents)
        response = pb.ModelInferResponse(
            model_name=loaded.manifest.name, model_version=version, id=request.id
        )
        for tensor in tensors:
            output = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape)
            if raw:
                response.raw_output_contents.append(encode_tensor(tensor))
            else:
                output.contents.CopyFrom(_contents(tensor))
        return response


def add_inference_service(server: grpc.aio.Server, dispatcher: Dispatcher, max_articles: int) -> str:
    """Serve the V2 gRPC API on ``server``; returns its full name (for reflection)."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dispatcher, max_articles), server)
    return SERVICE_NAME
