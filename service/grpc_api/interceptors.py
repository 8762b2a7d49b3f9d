"""The server's edge: every call is timed and counted here, and an exception escaping a handler is
turned into its status code here (``errors.status_for``), so handlers just raise domain errors.

Requests are parsed here too (the handlers are registered without a deserializer), so a request
that is not a valid protobuf message is INVALID_ARGUMENT and counted like any other call, instead
of gRPC's own UNKNOWN; before that its fields are counted against the ``FieldBudget`` (``wire.py``),
so millions of tiny fields are refused without the parse that would hold the whole process. And
the calls of limited methods (``limits``: TaggerService's) are counted against their
``CallLimit``; beyond it a call is refused at once with RESOURCE_EXHAUSTED. Health
checking and reflection have no limit, so they answer however busy the service is.

A handler that writes through the context (TagStream) sees a write fail in gRPC core
(``grpc.aio.InternalError``) when the client cancelled or went away while the write waited: that
call is counted CANCELLED, like a cancellation gRPC delivered itself, and logged at no error level.

Wrapped handlers are built once per method; per call this costs one coroutine, a clock read and
three metric updates on cached label children."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from service.core.errors import InvalidRequest, Overloaded
from service.core.wire import FieldBudget, descriptor_of
from service.grpc_api.errors import status_for
from service.metrics import UNKNOWN_METHOD, Metrics

Deserializer = Callable[[bytes], Any] | None


class CallLimit:
    """At most ``most`` calls at once (used on the server loop only: no lock)."""

    def __init__(self, most: int, what: str) -> None:
        self.most = most
        self.what = what
        self.now = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.now >= self.most:
            raise Overloaded(f"too many {self.what} at once (limit {self.most}); retry later")
        self.now += 1
        try:
            yield
        finally:
            self.now -= 1


@contextmanager
def _within(limit: CallLimit | None) -> Iterator[None]:
    if limit is None:
        yield
    else:
        with limit.slot():
            yield


def _parse(call: _Call, raw: Any) -> Any:
    deserializer = call.deserializer
    if deserializer is None or not isinstance(raw, bytes):
        return raw
    if call.budget is not None and call.descriptor is not None:
        call.budget.check(raw, call.descriptor)  # before a parse that holds the GIL throughout
    try:
        return deserializer(raw)
    except Exception as exc:  # protobuf's DecodeError and friends: the caller sent garbage
        raise InvalidRequest("malformed request: not a valid protobuf message of the method's type") from exc


async def _parsed(call: _Call, raw_requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for raw in raw_requests:
        yield _parse(call, raw)


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
    def __init__(
        self, metrics: Metrics, limits: dict[str, CallLimit] | None = None, budget: FieldBudget | None = None
    ) -> None:
        self._metrics = metrics
        self._limits = limits or {}  # method path -> its limit
        self._budget = budget  # of every request's fields, counted before it is parsed
        self._wrapped: dict[str, Any] = {}  # method path -> wrapped handler (built once per method)
        self._unknown = metrics.grpc_requests.labels(UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED.name)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        path = str(handler_call_details.method)
        wrapped = self._wrapped.get(path)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # gRPC answers UNIMPLEMENTED; counted under one label, whatever the path
                self._unknown.inc()
                return None
            wrapped = self._wrapped[path] = self._wrap(path, handler)
        return wrapped

    def _wrap(self, path: str, handler: Any) -> Any:
        method = path.rsplit("/", 1)[-1]
        recorder = _Recorder(self._metrics, method)
        call = _Call(method, recorder, handler.request_deserializer, self._limits.get(path), self._budget)
        kinds = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
        )
        for behavior, make_handler in kinds:
            if behavior is not None:
                # a generator yields its responses; a coroutine returns its response, or writes
                # its responses through the context (TagStream, health's Watch) and returns None
                wrap = _generator if inspect.isasyncgenfunction(behavior) else _coroutine
                return make_handler(
                    wrap(call, behavior, handler.request_streaming),
                    request_deserializer=None,  # parsed in the wrapper: see the module docstring
                    response_serializer=handler.response_serializer,
                )
        return handler


class _Call:
    """What a wrapper needs to know about its method."""

    def __init__(
        self,
        method: str,
        recorder: _Recorder,
        deserializer: Deserializer,
        limit: CallLimit | None,
        budget: FieldBudget | None,
    ) -> None:
        self.method = method
        self.recorder = recorder
        self.deserializer = deserializer
        self.limit = limit
        self.budget = budget
        self.descriptor = descriptor_of(deserializer)


def _coroutine(
    call: _Call, behavior: Callable[[Any, Any], Any], streaming: bool
) -> Callable[[Any, Any], Any]:
    method, recorder = call.method, call.recorder

    async def wrapped(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = recorder.start()
        code = "OK"
        try:
            with _within(call.limit):
                request = _parsed(call, raw) if streaming else _parse(call, raw)
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except grpc.aio.InternalError as exc:  # gRPC core failed a write: the client cancelled or left
            code = "CANCELLED"
            raise asyncio.CancelledError from exc  # gRPC ends it quietly, as a cancelled call
        except Exception as exc:
            code = ""
            await _abort(method, exc, context, recorder, started)
            raise
        finally:
            if code:
                recorder.finish(code if code != "OK" else _code_name(context), started)

    return wrapped


def _generator(
    call: _Call, behavior: Callable[[Any, Any], AsyncIterator[Any]], streaming: bool
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    method, recorder = call.method, call.recorder

    async def wrapped(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = recorder.start()
        code = "OK"
        try:
            with _within(call.limit):
                request = _parsed(call, raw) if streaming else _parse(call, raw)
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
