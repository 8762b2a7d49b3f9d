"""The Open Inference Protocol (KServe V2) over HTTP: health, server and model metadata, and
``infer`` for the served model, JSON or with the binary tensor data extension (what
``tritonclient.http`` sends by default: a JSON header of ``Inference-Header-Content-Length``
bytes, then the raw tensors). Errors are ``{"error": message}`` with the REST API's statuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import service
from service.core.errors import InvalidRequest
from service.dispatch import Dispatcher
from service.http_api.app import guard_routes
from service.http_api.errors import NotFound
from service.http_api.rest import deadline_of
from service.model.artifact import LoadedModel
from service.v2.tensors import decode_bytes_tensor, encode_tensor, infer, model_metadata, text_of

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]


def v2_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": message}


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _split_body(request: Request, body: bytes) -> tuple[dict[str, Any], bytes]:
    header = request.headers.get(HEADER_LENGTH)
    size = len(body)
    if header is not None:
        if not header.isdigit() or int(header) > len(body):
            raise InvalidRequest(f"bad {HEADER_LENGTH} header: {header!r}")
        size = int(header)
    try:
        parsed = json.loads(body[:size] or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("the request must be a JSON object")
    return parsed, body[size:]


def decode_inputs(parsed: dict[str, Any], binary: bytes) -> dict[str, list[str]]:
    inputs: dict[str, list[str]] = {}
    offset = 0
    for spec in parsed.get("inputs") or []:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest("every input needs a name")
        name = spec["name"]
        if spec.get("datatype") != "BYTES":
            raise InvalidRequest(f"input '{name}' must be BYTES, got {spec.get('datatype')!r}")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidRequest(f"input '{name}': binary_data_size does not match the body")
            inputs[name] = decode_bytes_tensor(binary[offset : offset + size])
            offset += size
        else:
            inputs[name] = [text_of(v) for v in _flatten(spec.get("data", []))]
        shape = spec.get("shape")
        if (
            isinstance(shape, list)
            and all(isinstance(d, int) for d in shape)
            and int(np.prod(shape)) != len(inputs[name])
        ):
            raise InvalidRequest(f"input '{name}': shape {shape} does not match {len(inputs[name])} elements")
    return inputs


def _requested(parsed: dict[str, Any]) -> tuple[list[str], set[str], bool]:
    """Requested output names, which of them are wanted as binary data, and whether all are."""
    binary_all = bool((parsed.get("parameters") or {}).get("binary_data_output"))
    names, binary = [], set()
    for spec in parsed.get("outputs") or []:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest("every requested output needs a name")
        names.append(spec["name"])
        if binary_all or (spec.get("parameters") or {}).get("binary_data"):
            binary.add(spec["name"])
    return names, binary, binary_all


class V2Api:
    def __init__(self, dispatcher: Dispatcher, max_articles: int) -> None:
        self._dispatcher = dispatcher
        self._max_articles = max_articles

    def routes(self) -> list[BaseRoute]:
        model = "/v2/models/{model_name}"
        versioned = model + "/versions/{model_version}"
        return guard_routes(
            [
                Route("/v2", self.server_metadata, methods=["GET"]),
                Route("/v2/health/live", self.live, methods=["GET"]),
                Route("/v2/health/ready", self.ready, methods=["GET"]),
                Route(model, self.model_metadata, methods=["GET"]),
                Route(versioned, self.model_metadata, methods=["GET"]),
                Route(model + "/ready", self.model_ready, methods=["GET"]),
                Route(versioned + "/ready", self.model_ready, methods=["GET"]),
                Route(model + "/infer", self.infer, methods=["POST"]),
                Route(versioned + "/infer", self.infer, methods=["POST"]),
            ],
            v2_error,
        )

    def _model(self, request: Request) -> LoadedModel:
        loaded = self._dispatcher.tagger.require_model()
        name = request.path_params["model_name"]
        version = request.path_params.get("model_version")
        if name != loaded.manifest.name or version not in (None, "", loaded.manifest.version):
            served = f"{loaded.manifest.name} version {loaded.manifest.version}"
            raise NotFound(f"no model {name!r}{f' version {version!r}' if version else ''}; serving {served}")
        return loaded

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "newstagger", "version": service.__version__, "extensions": EXTENSIONS})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self._dispatcher.serving()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        return JSONResponse(model_metadata(self._model(request)))

    async def model_ready(self, request: Request) -> Response:
        self._model(request)
        return JSONResponse({"name": request.path_params["model_name"], "ready": True})

    async def infer(self, request: Request) -> Response:
        loaded = self._model(request)
        parsed, binary = _split_body(request, await request.body())
        requested, binary_outputs, binary_all = _requested(parsed)
        version, tensors = await infer(
            self._dispatcher,
            loaded,
            decode_inputs(parsed, binary),
            requested,
            self._max_articles,
            deadline_of(request),
        )
        response: dict[str, Any] = {
            "model_name": loaded.manifest.name,
            "model_version": version,
            "outputs": [],
        }
        if isinstance(parsed.get("id"), str):
            response["id"] = parsed["id"]
        chunks = []
        for tensor in tensors:
            out: dict[str, Any] = {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.data.shape),
            }
            if binary_all or tensor.name in binary_outputs:
                chunk = encode_tensor(tensor)
                out["parameters"] = {"binary_data_size": len(chunk)}
                chunks.append(chunk)
            else:
                out["data"] = tensor.data.ravel().tolist()
            response["outputs"].append(out)
        if not chunks:
            return JSONResponse(response)
        header = json.dumps(response, separators=(",", ":")).encode()
        return Response(
            header + b"".join(chunks),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
