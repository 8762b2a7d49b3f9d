"""The OpenAPI 3.1 document of the HTTP API, generated from the pydantic models in ``schemas.py``.
Served at ``/openapi.json``; the copy checked in at ``docs/openapi.json`` is kept identical by
``python scripts/gen_openapi.py --check`` (a test runs it)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

import service
from service.http_api.schemas import DOCUMENTED

REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "Bad request: malformed body, empty or over-long text, unknown head, bad option, "
    "too many articles.",
    "413": "Request body over `--http-max-body-bytes`.",
    "429": "Queue full; retry after the `Retry-After` seconds, with backoff.",
    "503": "No model loaded yet, or the server is draining (`Retry-After`).",
    "504": "Not tagged before the `X-Request-Timeout` deadline.",
    "500": "Unexpected; the message is `internal error` and the details are in the server log.",
}
TIMEOUT = {
    "name": "X-Request-Timeout",
    "in": "header",
    "required": False,
    "description": "Seconds the caller will wait; an article still queued after that is never computed "
    "(504).",
    "schema": {"type": "number", "exclusiveMinimum": 0},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _operation(summary: str, ok: str, request: str | None = None, **extra: Any) -> dict[str, Any]:
    responses = {"200": _json(ok, "OK")} | {code: _json("Error", text) for code, text in ERRORS.items()}
    operation: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        }
        operation["parameters"] = [TIMEOUT]
    return operation


V2_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "Safe to show; never internals."}},
    "required": ["error"],
}
#: The statuses of V2 calls besides 200 (the Open Inference Protocol's error body: ``{"error": ...}``).
V2_MODEL_ERRORS = {
    "404": "No such model or model version (the served version is in `GET /v1/model`).",
    "503": "No model loaded yet, or the server is draining (`Retry-After`).",
}
V2_INFER_ERRORS = {
    "400": "Bad request: malformed JSON or tensors (shape, data neither flat nor nested as the shape, "
    "datatype, names), an `id` that is not a string, empty or over-long text, unknown output, too many "
    "articles, more JSON values than 8 per article of `--max-request-articles` plus 10,000 (counted "
    "before parsing).",
    **V2_MODEL_ERRORS,
    "413": ERRORS["413"],
    "429": ERRORS["429"],
    "504": ERRORS["504"],
    "500": ERRORS["500"],
}
V2_NOT_LIVE = {
    "503": {"description": 'Not live (`{"live": false}`): the micro-batcher thread has died; restart needed.'}
}
V2_NOT_READY = {
    "503": {
        "description": 'Not ready (`{"ready": false}`): no model loaded, or the micro-batcher is not running.'
    }
}


def _v2(
    summary: str, *params: str, errors: dict[str, str] | None = None, responses: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A V2 operation: 200 as the protocol specifies, ``errors`` (status -> when) with the V2 error
    body, and other ``responses`` as given."""
    documented: dict[str, Any] = {"200": {"description": "As the Open Inference Protocol specifies."}}
    for code, text in (errors or {}).items():
        documented[code] = {"description": text, "content": {"application/json": {"schema": V2_ERROR_SCHEMA}}}
    return {
        "summary": summary,
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
        ],
        "tags": ["Open Inference Protocol (V2)"],
        "externalDocs": {"url": "https://github.com/kserve/open-inference-protocol"},
        "responses": documented | (responses or {}),
    }


def build_openapi() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in DOCUMENTED], ref_template=REF)
    admin = _operation(
        "Load the registry's current model now (verified and smoke-tested first).",
        "ReloadResponse",
        security=[{"bearer": []}],
    )
    admin["responses"] |= {
        "401": _json("Error", "Missing or wrong bearer token."),
        "501": _json("Error", "Admin calls are disabled (no `--admin-token`)."),
    }
    model_path = "/v2/models/{model_name}"
    versioned = model_path + "/versions/{model_version}"
    name, both = ("model_name",), ("model_name", "model_version")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "newstagger",
            "version": service.__version__,
            "description": "Tags news articles with topics and stance. The REST API mirrors the gRPC API "
            "(`protos/newstagger/v1/tagger.proto`); `/v2/...` is the Open Inference Protocol (KServe V2).",
        },
        "paths": {
            "/v1/tag": {"post": _operation("Tag one article.", "TagResponse", "TagRequest")},
            "/v1/tag:batch": {
                "post": _operation(
                    "Tag many articles; one item per article, in request order; a bad article fails alone.",
                    "TagBatchResponse",
                    "TagBatchRequest",
                )
            },
            "/v1/model": {"get": _operation("The model being served.", "ModelInfo")},
            "/v1/admin/reload": {"post": admin},
            "/v2": {"get": _v2("Server metadata.")},
            "/v2/health/live": {"get": _v2("Server live.", responses=V2_NOT_LIVE)},
            "/v2/health/ready": {"get": _v2("Server ready (a model is loaded).", responses=V2_NOT_READY)},
            model_path: {
                "get": _v2("Model metadata: inputs and output tensors.", *name, errors=V2_MODEL_ERRORS)
            },
            model_path + "/ready": {"get": _v2("Model ready.", *name, errors=V2_MODEL_ERRORS)},
            model_path + "/infer": {
                "post": _v2(
                    "Inference: BYTES `text` in, per-head tensors out.", *name, errors=V2_INFER_ERRORS
                )
            },
            versioned: {"get": _v2("Model metadata (this version).", *both, errors=V2_MODEL_ERRORS)},
            versioned + "/ready": {"get": _v2("Model ready (this version).", *both, errors=V2_MODEL_ERRORS)},
            versioned + "/infer": {"post": _v2("Inference (this version).", *both, errors=V2_INFER_ERRORS)},
        },
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
