"""The server's edge: every call is timed and counted here, and an exception escaping a handler is
turned into its status code here (``errors.status_for``), so handlers just raise domain errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from service.grpc_api.errors import status_for
from service.metrics import Metrics


def _code_name(context: grpc.ServicerContext) -> str:
    code = context.code()  # set by context.abort / set_code; None = OK
    return "OK" if code is None else str(code.name)


class ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, Any] = {}  # method path -> wrapped handler (built once per method)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        path = str(handler_call_details.method)
        wrapped = self._wrapped.get(path)
        if wrapped is None:
            handler = continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped[path] = self._wrap(path.rsplit("/", 1)[-1], handler)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # stream-unary: none of ours

    def _finish(self, method: str, code: str, started: float) -> None:
        self._metrics.grpc_in_flight.dec()
        self._metrics.grpc_requests.labels(method, code).inc()
        self._metrics.grpc_latency.labels(method).observe(time.perf_counter() - started)

    def _abort(self, method: str, exc: Exception, context: grpc.ServicerContext) -> str:
        """Map ``exc`` to a status (unless the handler already aborted) and abort the call."""
        if context.code() not in (None, grpc.StatusCode.OK):
            raise exc  # the handler chose the status itself (context.abort)
        code, message = status_for(exc, method)
        context.abort(code, message)
        raise AssertionError("unreachable")  # context.abort always raises

    def _unary(self, method: str, behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            self._metrics.grpc_in_flight.inc()
            started = time.perf_counter()
            try:
                response = behavior(request, context)
            except Exception as exc:
                try:
                    self._abort(method, exc, context)
                finally:
                    self._finish(method, _code_name(context), started)
            self._finish(method, _code_name(context), started)
            return response

        return wrapped

    def _streaming(
        self, method: str, behavior: Callable[[Any, Any], Iterator[Any]]
    ) -> Callable[[Any, Any], Iterator[Any]]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._metrics.grpc_in_flight.inc()
            started = time.perf_counter()
            finished = False
            try:
                yield from behavior(request, context)
            except GeneratorExit:  # the call was cancelled while streaming
                finished = True
                self._finish(method, "CANCELLED", started)
                raise
            except Exception as exc:
                finished = True
                try:
                    self._abort(method, exc, context)
                finally:
                    self._finish(method, _code_name(context), started)
            finally:
                if not finished:
                    self._finish(method, _code_name(context), started)

        return wrapped
