"""The Open Inference Protocol (KServe V2) over HTTP: health, server and model metadata, and
``infer`` for the served model, JSON or with the binary tensor data extension (what
``tritonclient.http`` sends by default: a JSON header of ``Inference-Header-Content-Length``
bytes, then the raw tensors). Errors are ``{"error": message}`` with the REST API's statuses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic_core import from_json
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import service
from service.core.errors import InvalidRequest
from service.core.json_values import INLINE_BODY_BYTES, check_value_count
from service.core.validation import cut, quote
from service.dispatch import Dispatcher
from service.http_api.app import JsonResponse, guard_routes, v2_error
from service.http_api.errors import NotFound
from service.http_api.rest import deadline_of
from service.model.artifact import LoadedModel
from service.v2.tensors import (
    check_shape,
    declared_count,
    decode_bytes_tensor,
    encode_tensor,
    infer,
    model_label,
    model_metadata,
    shape_dims,
    text_of,
)

HEADER_LENGTH = "inference-header-content-length"
MAX_HEADER_DIGITS = 18  # any JSON header this long is over every body limit
EXTENSIONS = ["binary_tensor_data"]


def _flatten(name: str, data: Any, shape: list[int], most: int) -> list[Any]:
    """The elements of ``data`` in row-major order. As the protocol allows, ``data`` is either
    flat (elements only) or nested exactly as ``shape`` (``shape[0]`` lists of ``shape[1]``
    ..., elements at the last level); anything between is refused, naming where. Walked with a
    stack of its own, so nesting cannot exhaust Python's; more than ``most`` elements (what the
    shape declares) is refused as soon as it is seen."""
    if not isinstance(data, list):
        raise InvalidRequest(f"input {quote(name)}: data must be a JSON array")
    nested = len(shape) > 1 and bool(data) and isinstance(data[0], list)
    wrong = f"input {quote(name)}: data is neither flat nor nested as its shape {cut(str(shape))}:"
    if nested and len(data) != shape[0]:
        raise InvalidRequest(f"{wrong} data has {len(data)} lists where the shape has {shape[0]}")
    elements: list[Any] = []
    stack = [("data", iter(enumerate(data)))]  # each list being walked: its path, where it is
    while stack:
        path, walk = stack[-1]
        step = next(walk, None)
        if step is None:
            stack.pop()
            continue
        (i, item), depth = step, len(stack)  # depth: of this item's list (1 for data's own)
        if isinstance(item, list):
            if not nested and len(shape) > 1:
                raise InvalidRequest(f"{wrong} {path}[{i}] is a list among elements")
            if depth >= len(shape):
                raise InvalidRequest(f"input {quote(name)}: data is nested deeper than its shape")
            if len(item) != shape[depth]:
                raise InvalidRequest(
                    f"{wrong} {path}[{i}] has {len(item)} items where the shape has {shape[depth]}"
                )
            stack.append((f"{path}[{i}]", iter(enumerate(item))))
        elif nested and depth < len(shape):
            raise InvalidRequest(f"{wrong} {path}[{i}] is an element where a list of {shape[depth]} belongs")
        elif len(elements) >= most:
            raise InvalidRequest(
                f"input {quote(name)}: data holds more than the {most} elements of its shape"
            )
        else:
            elements.append(item)
    return elements


def _object(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """``parent[key]``, which must be a JSON object if present ({} if absent or null)."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: '{key}' must be a JSON object")
    return value


def _array(parsed: dict[str, Any], key: str) -> list[Any]:
    """``parsed[key]``, which must be a JSON array if present ([] if absent or null)."""
    value = parsed.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"'{key}' must be a JSON array of tensors")
    return value


def _split_body(request: Request, body: bytes, max_articles: int) -> tuple[dict[str, Any], bytes]:
    header = request.headers.get(HEADER_LENGTH)
    size = len(body)
    if header is not None:
        digits = header.isascii() and header.isdigit() and len(header) <= MAX_HEADER_DIGITS
        if not digits or int(header) > len(body):
            raise InvalidRequest(f"bad {HEADER_LENGTH} header: {quote(header)}")
        size = int(header)
    check_value_count(body[:size], max_articles)  # counted, not parsed: see json_values.py
    try:  # the REST API's parser: it refuses lone surrogates, which UTF-8 cannot encode
        parsed = from_json(body[:size] or b"{}")
    except ValueError as exc:
        raise InvalidRequest(f"the request is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("the request must be a JSON object")
    _object(parsed, "parameters", "the request")
    return parsed, body[size:]


def decode_inputs(parsed: dict[str, Any], binary: bytes, max_articles: int) -> dict[str, list[str]]:
    """The request's BYTES inputs, strictly as the Open Inference Protocol has them: each with a
    name, a shape (a list of non-negative integers) and either ``data`` (a JSON array, flat or
    nested by the shape) or the binary extension's ``binary_data_size``."""
    inputs: dict[str, list[str]] = {}
    offset = 0
    for spec in _array(parsed, "inputs"):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest("every input needs a name")
        name = spec["name"]
        if spec.get("datatype") != "BYTES":
            raise InvalidRequest(f"input {quote(name)} must be BYTES, got {cut(repr(spec.get('datatype')))}")
        if name in inputs:
            raise InvalidRequest(f"input {quote(name)} is given twice")
        if "shape" not in spec:
            raise InvalidRequest(f"input {quote(name)} has no shape")
        shape = shape_dims(name, spec["shape"])
        count = declared_count(name, shape, max_articles)
        size = _object(spec, "parameters", f"input {quote(name)}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InvalidRequest(f"input {quote(name)}: binary_data_size does not match the body")
            inputs[name] = decode_bytes_tensor(binary[offset : offset + size], count)
            offset += size
        elif "data" not in spec:
            raise InvalidRequest(f"input {quote(name)} has neither data nor binary_data_size")
        else:
            inputs[name] = [text_of(v) for v in _flatten(name, spec["data"], shape, count)]
        check_shape(name, shape, len(inputs[name]))
    return inputs


def _requested(parsed: dict[str, Any]) -> tuple[list[str], set[str], bool]:
    """Requested output names, which of them are wanted as binary data, and whether all are."""
    binary_all = _flag(_object(parsed, "parameters", "the request"), "binary_data_output", "the request")
    names, binary = [], set()
    for spec in _array(parsed, "outputs"):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest("every requested output needs a name")
        names.append(spec["name"])
        where = f"output {quote(spec['name'])}"
        if binary_all or _flag(_object(spec, "parameters", where), "binary_data", where):
            binary.add(spec["name"])
    return names, binary, binary_all


def _json_type(value: Any) -> str:
    kinds = ((bool, "a boolean"), (int | float, "a number"), (dict, "an object"), (list, "an array"))
    return next((kind for t, kind in kinds if isinstance(value, t)), "a string")


def _request_id(parsed: dict[str, Any]) -> str | None:
    """The request's ``id``, echoed in the response. The protocol has it a string; a number, a
    boolean, an object or an array is refused (400), not dropped from the answer nor turned into a
    string. Absent or null: no id."""
    value = parsed.get("id")
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'id' must be a JSON string, got {_json_type(value)}")
    return value


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool:
    """A boolean parameter (absent: false); ``"no"`` or ``0`` is refused, not read as true."""
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where}: parameter {name} must be true or false")
    return value


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
            raise NotFound(f"no model {model_label(name, version)}; serving {served}")
        return loaded

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "newstagger", "version": service.__version__, "extensions": EXTENSIONS})

    async def live(self, request: Request) -> Response:
        live = self._dispatcher.live()
        return JSONResponse({"live": live}, status_code=200 if live else 503)

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
        body = await request.body()
        if len(body) > INLINE_BODY_BYTES:  # counting releases the GIL: the loop answers meanwhile
            parsed, binary = await asyncio.to_thread(_split_body, request, body, self._max_articles)
        else:
            parsed, binary = _split_body(request, body, self._max_articles)
        request_id = _request_id(parsed)
        requested, binary_outputs, binary_all = _requested(parsed)
        version, tensors = await infer(
            self._dispatcher,
            loaded,
            decode_inputs(parsed, binary, self._max_articles),
            requested,
            self._max_articles,
            deadline_of(request),
        )
        response: dict[str, Any] = {
            "model_name": loaded.manifest.name,
            "model_version": version,
            "outputs": [],
        }
        if request_id is not None:
            response["id"] = request_id
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
            return JsonResponse(response)
        header = json.dumps(response, separators=(",", ":")).encode()
        return Response(
            header + b"".join(chunks),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
