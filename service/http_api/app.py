"""The Starlette application: REST routes, V2 routes, ``/openapi.json``, and the edge that every
request passes (``Edge``: body limit, metrics by route and status) and every error leaves by
(``guarded``: domain error -> status + JSON body, anything else -> 500 ``internal error``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http_api.errors import BodyTooLarge, headers_for, status_for
from service.metrics import Metrics

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorBody = Callable[[int, str, str], dict[str, Any]]


class JsonResponse(JSONResponse):
    """Starlette's JSONResponse, byte for byte, from one encoder built once and without the check
    for circular containers (a body is fresh dicts and lists): 5-6 us less per REST result."""

    _encoder = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, check_circular=False, separators=(",", ":")
    )

    def render(self, content: Any) -> bytes:
        return self._encoder.encode(content).encode("utf-8")


def rest_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "status": status, "message": message}}


def v2_error(code: int, status: str, message: str) -> dict[str, Any]:
    """The Open Inference Protocol's error body (its status is the HTTP status alone)."""
    return {"error": message}


def error_body_for(path: str) -> ErrorBody:
    """The error body of the API ``path`` belongs to: V2's under /v2, else REST's."""
    return v2_error if path == "/v2" or path.startswith("/v2/") else rest_error


def error_response(exc: BaseException, where: str, body: ErrorBody = rest_error) -> Response:
    code, status, message = status_for(exc, where)
    return JSONResponse(body(code, status, message), status_code=code, headers=headers_for(code))


#: nginx's "client closed request": what a request whose client left is counted as (never sent)
CLIENT_GONE = 499


async def _client_left(receive: Receive) -> None:
    """Returns when the client disconnects (called once the request body has been read: from
    then on uvicorn's ``receive`` waits until the client leaves or the response is sent)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, endpoint: Endpoint) -> Response:
    """``endpoint(request)``, cancelled if the client disconnects first: its articles still
    queued are then never computed (the bridge cancels their futures), as for a gRPC call."""
    work = asyncio.ensure_future(endpoint(request))
    gone = asyncio.ensure_future(_client_left(request.receive))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    return Response(status_code=CLIENT_GONE) if work.cancelled() else work.result()


def guarded(endpoint: Endpoint, body: ErrorBody = rest_error) -> Endpoint:
    """``endpoint`` with its exceptions turned into error responses, once, here; a client that
    leaves before its answer is counted ``CLIENT_GONE`` and its work is dropped."""

    @functools.wraps(endpoint)
    async def call(request: Request) -> Response:
        try:
            await request.body()  # read whole first (the endpoint gets it again from the cache)
            return await _unless_client_leaves(request, endpoint)
        except ClientDisconnect:  # left while sending the body: no one to answer, nothing to log
            return Response(status_code=CLIENT_GONE)
        except Exception as exc:  # noqa: BLE001 - mapped by the one table
            return error_response(exc, f"{request.method} {request.url.path}", body)

    return call


def guard_routes(routes: list[BaseRoute], body: ErrorBody = rest_error) -> list[BaseRoute]:
    return [
        Route(r.path, guarded(r.endpoint, body), methods=sorted(r.methods or ()))
        if isinstance(r, Route)
        else r
        for r in routes
    ]


UNMATCHED = "unmatched"  # the route label of a request whose path no route serves


def route_label(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route the router would pick for ``scope`` (one matching path and
    method, else one matching the path only), or UNMATCHED."""
    partial = UNMATCHED
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
        if match is Match.PARTIAL and partial == UNMATCHED:
            partial = str(getattr(route, "path", UNMATCHED))
    return partial


class Edge:
    """Pure ASGI middleware: refuses bodies over ``max_body_bytes`` (413) and records
    ``newstagger_http_requests_total{route,status}`` and the latency histogram per route. A body
    refused before routing (its Content-Length over the limit) is labelled with the route its
    path would have reached, as if routed."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, routes: Sequence[BaseRoute] = ()
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._max = max_body_bytes
        self._routes = routes
        self._latency: dict[str, Any] = {}
        self._counts: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self._metrics.http_in_flight.inc()
        status = 500
        label: str | None = None  # set when refused before routing
        limit, seen = self._max, 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"request body over the limit of {limit} bytes")
            return message

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                label = route_label(self._routes, scope)
                response = error_response(
                    BodyTooLarge(f"request body over the limit of {limit} bytes"),
                    "",
                    error_body_for(str(scope.get("path", ""))),
                )
                await response(scope, receive, status_send)
                return
            await self.app(scope, counted_receive, status_send)
        finally:
            self._metrics.http_in_flight.dec()
            route = label or str(getattr(scope.get("route"), "path", UNMATCHED))
            self._record(route, str(status), time.perf_counter() - started)

    def _record(self, route: str, status: str, seconds: float) -> None:
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = self._metrics.http_latency.labels(route)
        latency.observe(seconds)
        count = self._counts.get((route, status))
        if count is None:
            count = self._counts[(route, status)] = self._metrics.http_requests.labels(route, status)
        count.inc()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    names = {404: "NOT_FOUND", 405: "UNIMPLEMENTED"}
    body = error_body_for(request.url.path)(
        exc.status_code, names.get(exc.status_code, "INVALID_ARGUMENT"), str(exc.detail)
    )
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def build_app(routes: list[BaseRoute], metrics: Metrics, max_body_bytes: int) -> ASGIApp:
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    return Edge(app, metrics, max_body_bytes, app.routes)
