"""The REST/JSON API: ``POST /v1/tag``, ``POST /v1/tag:batch``, ``GET /v1/model`` and
``POST /v1/admin/reload``. Handlers only translate JSON <-> core values; domain errors propagate
and ``app.py`` maps them once (``errors.STATUS_BY_ERROR``); batch items use the same table."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.core.errors import InvalidRequest
from service.core.json_values import check_rest_value_count
from service.core.types import result_to_json
from service.core.validation import cut
from service.dispatch import Dispatcher
from service.http_api.app import JsonResponse
from service.http_api.errors import Disabled, Unauthenticated, status_for
from service.http_api.schemas import TagBatchRequest, TagRequest, to_options
from service.model.artifact import LoadedModel
from service.reloader import ModelReloader

logger = logging.getLogger(__name__)

TIMEOUT_HEADER = "x-request-timeout"
M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: bytes) -> M:
    """The body as ``model``; a malformed one is InvalidRequest naming the field (each part of its
    path cut short: a field or metadata key is caller input). Only locations and messages are built
    for pydantic's errors: a body may hold thousands (inputs, context and URLs tripled their cost)."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        problems = "; ".join(
            f"{'.'.join(cut(str(p), 32) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]
        )
        raise InvalidRequest(f"bad request body: {problems}") from None


def deadline_of(request: Request) -> float | None:
    """The ``X-Request-Timeout`` header (seconds) as a time.monotonic() deadline."""
    given = request.headers.get(TIMEOUT_HEADER)
    if given is None:
        return None
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequest(f"{TIMEOUT_HEADER} must be a positive number of seconds, got {given!r}")
    return time.monotonic() + seconds


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def model_json(loaded: LoadedModel) -> dict[str, Any]:
    manifest = loaded.manifest
    return {
        "name": manifest.name,
        "version": manifest.version,
        "heads": [
            {
                "name": h.name,
                "kind": h.kind,
                "labels": list(h.labels),
                "thresholds": list(h.thresholds),
                "target": h.target,
            }
            for h in manifest.heads
        ],
        "metrics": manifest.metrics,
        "loaded_at": _iso(loaded.loaded_at),
        "created_at": manifest.created_at,
    }


def error_json(exc: BaseException, where: str) -> dict[str, Any]:
    code, status, message = status_for(exc, where)
    return {"code": code, "status": status, "message": message}


class RestApi:
    def __init__(
        self,
        dispatcher: Dispatcher,
        reloader: ModelReloader,
        max_articles: int,
        admin_token: str | None,
    ) -> None:
        self._dispatcher = dispatcher
        self._reloader = reloader
        self._max_articles = max_articles
        self._token = admin_token

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/tag", self.tag, methods=["POST"]),
            Route("/v1/tag:batch", self.tag_batch, methods=["POST"]),
            Route("/v1/model", self.model, methods=["GET"]),
            Route("/v1/admin/reload", self.reload, methods=["POST"]),
        ]

    async def _body(self, request: Request) -> bytes:
        """The body, counted before it is parsed (see json_values.py): pydantic holds the GIL while
        it parses, and a body of millions of tiny values held every caller for 0.3-40 s."""
        body = await request.body()
        await check_rest_value_count(body, self._max_articles)
        return body

    async def tag(self, request: Request) -> Response:
        body = parse_body(TagRequest, await self._body(request))
        result = await self._dispatcher.tag(body.to_article(), to_options(body.options), deadline_of(request))
        return JsonResponse({"result": result_to_json(result)})

    async def tag_batch(self, request: Request) -> Response:
        body = parse_body(TagBatchRequest, await self._body(request))
        if len(body.articles) > self._max_articles:
            raise InvalidRequest(
                f"{len(body.articles)} articles in one request; the limit is {self._max_articles}"
            )
        loaded = self._dispatcher.tagger.require_model()
        articles = [a.to_article() for a in body.articles]
        outcomes = await self._dispatcher.tag_each(articles, to_options(body.options), deadline_of(request))
        items: list[dict[str, Any]] = []
        version = ""
        for article, outcome in zip(articles, outcomes, strict=True):
            if isinstance(outcome, Exception):
                items.append({"id": article.id, "error": error_json(outcome, "tag:batch")})
            else:
                version = version or outcome.model_version
                items.append({"id": article.id, "result": result_to_json(outcome)})
        return JsonResponse({"items": items, "model_version": version or loaded.manifest.version})

    async def model(self, request: Request) -> Response:
        return JsonResponse(model_json(self._dispatcher.tagger.require_model()))

    async def reload(self, request: Request) -> Response:
        """Changes state: needs ``Authorization: Bearer <admin token>``, like AdminService."""
        if not self._token:
            raise Disabled("admin calls are disabled (start the server with --admin-token to enable them)")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._token.encode()):
            raise Unauthenticated("missing or wrong bearer token")
        outcome = await asyncio.to_thread(self._reloader.check)  # loads a model: not on the loop
        logger.info("admin reload over HTTP: %s %s", outcome.result, outcome.version)
        return JsonResponse(
            {"result": outcome.result, "version": outcome.version, "message": outcome.message}
        )
