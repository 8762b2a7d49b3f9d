"""The server's edge: every call is timed and counted here, and an exception escaping a handler is
turned into its status code here (``errors.status_for``), so handlers just raise domain errors.

Wrapped handlers are built once per method; per call this costs one coroutine, a clock read and
three metric updates on cached label children."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.grpc_api.errors import status_for
from service.metrics import Metrics


def _code_name(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = context.code()  # set by context.abort / set_code; None = OK
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class _Recorder:
    """Metrics of one method, with the label children looked up once."""

    def __init__(self, metrics: Metrics, method: str) -> None:
        self._metrics = metrics
        self._method = method
        self._in_flight = metrics.grpc_in_flight
        self._latency = metrics.grpc_latency.labels(method)
        self._counts: dict[str, Any] = {}

    def start(self) -> float:
        self._in_flight.inc()
        return time.perf_counter()

    def finish(self, code: str, started: float) -> None:
        self._in_flight.dec()
        counter = self._counts.get(code)
        if counter is None:
            counter = self._counts[code] = self._metrics.grpc_requests.labels(self._method, code)
        counter.inc()
        self._latency.observe(time.perf_counter() - started)


async def _abort(
    method: str,
    exc: Exception,
    context: grpc.aio.ServicerContext[Any, Any],
    recorder: _Recorder,
    started: float,
) -> None:
    """Record the call and abort it with ``exc``'s status. The status reaches the client as soon as
    ``abort`` sends it, so the call is recorded first. A handler that aborted the call itself
    (``context.abort``) chose its status: it is recorded and the abort goes on."""
    if isinstance(exc, grpc.aio.AbortError) or context.code() not in (None, grpc.StatusCode.OK):
        recorder.finish(_code_name(context), started)
        raise exc
    code, message = status_for(exc, method)
    recorder.finish(code.name, started)
    await context.abort(code, message)  # always raises


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, Any] = {}  # method path -> wrapped handler (built once per method)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        path = str(handler_call_details.method)
        wrapped = self._wrapped.get(path)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped[path] = self._wrap(path.rsplit("/", 1)[-1], handler)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        recorder = _Recorder(self._metrics, method)
        kinds = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler, _unary),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler, _streaming),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler, _streaming),
        )
        for behavior, make_handler, wrap in kinds:
            if behavior is not None:
                if wrap is _streaming and not inspect.isasyncgenfunction(behavior):
                    return handler  # a streaming handler that writes through the context: none of ours
                return make_handler(
                    wrap(method, behavior, recorder),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler  # stream-unary: none of ours


def _unary(
    method: str, behavior: Callable[[Any, Any], Any], recorder: _Recorder
) -> Callable[[Any, Any], Any]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = recorder.start()
        code = "OK"
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = ""
            await _abort(method, exc, context, recorder, started)
            raise
        finally:
            if code:
                recorder.finish(code if code != "OK" else _code_name(context), started)

    return wrapped


def _streaming(
    method: str, behavior: Callable[[Any, Any], AsyncIterator[Any]], recorder: _Recorder
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = recorder.start()
        code = "OK"
        try:
            async for response in behavior(request, context):
                yield response
        except (asyncio.CancelledError, GeneratorExit):  # the call was cancelled while streaming
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = ""
            await _abort(method, exc, context, recorder, started)
            raise
        finally:
            if code:
                recorder.finish(code if code != "OK" else _code_name(context), started)

    return wrapped
