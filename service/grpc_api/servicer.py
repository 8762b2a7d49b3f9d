"""TaggerService and AdminService: translate protobuf <-> core and hand work to the shared batcher.

Handlers are ``grpc.aio`` coroutines on the server loop; they wait for the batcher's futures
through ``bridge.ResultBridge`` (the batcher thread wakes the loop once per burst of results), so
no thread is parked per call. Domain errors propagate as exceptions; ``interceptors.ServerInterceptor`` maps
them to status codes once (``errors.STATUS_BY_ERROR``). Per-item errors of TagBatch/TagStream are
mapped with the same table into ``ItemError``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any, TypeAlias

import grpc

from service.core.batcher import MicroBatcher
from service.core.errors import DeadlineExceeded, InvalidRequest, Overloaded
from service.core.tagger import Tagger
from service.core.types import Article, TagOptions, TagResult
from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.grpc_api.bridge import ResultBridge
from service.grpc_api.convert import model_to_proto, result_to_proto, to_article, to_options
from service.grpc_api.errors import code_number, status_for
from service.metrics import Metrics
from service.reloader import ModelReloader

logger = logging.getLogger(__name__)

STREAM_WINDOW = 64  # articles one stream may have queued or unread before it stops reading
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _deadline(context: Context) -> float | None:
    """The call's deadline on the time.monotonic() clock (what the batcher compares against)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class TaggerServicer(pb_grpc.TaggerServiceServicer):
    def __init__(
        self,
        tagger: Tagger,
        batcher: MicroBatcher,
        metrics: Metrics,
        max_articles: int,
        stream_idle_seconds: float = 60.0,
    ) -> None:
        self._tagger = tagger
        self._batcher = batcher
        self._metrics = metrics
        self._max_articles = max_articles
        self._idle = stream_idle_seconds
        self._bridge: ResultBridge | None = None

    async def _wait(self, future: Future[TagResult], deadline: float | None) -> TagResult:
        if self._bridge is None:
            self._bridge = ResultBridge(asyncio.get_running_loop())
            self._batcher.add_listener(self._bridge)
        return await self._bridge.wait(future, deadline)

    def _submit(self, article: Article, options: TagOptions, deadline: float | None) -> Future[TagResult]:
        try:
            future = self._batcher.submit(article, options, deadline)  # validates the article
        except Overloaded:
            self._metrics.overload_rejections.inc()
            raise
        finally:
            self._metrics.queue_depth.set(self._batcher.depth())
        return future

    async def Tag(self, request: pb.TagRequest, context: Context) -> pb.TagResponse:  # noqa: N802
        deadline = _deadline(context)
        future = self._submit(to_article(request.article), to_options(request.options), deadline)
        return pb.TagResponse(result=result_to_proto(await self._wait(future, deadline)))

    async def TagBatch(  # noqa: N802
        self,
        request: pb.TagBatchRequest,
        context: Context,
    ) -> pb.TagBatchResponse:
        if len(request.articles) > self._max_articles:
            raise InvalidRequest(
                f"{len(request.articles)} articles in one request; the limit is {self._max_articles}"
            )
        options = to_options(request.options)
        loaded = self._tagger.require_model()
        self._tagger.check_options(options)
        deadline = _deadline(context)
        pending: list[tuple[str, Future[TagResult] | BaseException]] = []
        for message in request.articles:
            article = to_article(message)
            try:
                pending.append((article.id, self._submit(article, options, deadline)))
            except Exception as exc:  # noqa: BLE001 - reported per item
                pending.append((article.id, exc))
        try:
            items = [await self._item(article_id, outcome, deadline) for article_id, outcome in pending]
        except BaseException:  # cancelled: what is still queued is not computed
            for _, outcome in pending:
                if isinstance(outcome, Future):
                    outcome.cancel()
            raise
        version = next((i.result.model_version for i in items if i.HasField("result")), "")
        return pb.TagBatchResponse(items=items, model_version=version or loaded.manifest.version)

    async def _item(
        self, article_id: str, outcome: Future[TagResult] | BaseException, deadline: float | None
    ) -> pb.TagItem:
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            return pb.TagItem(
                article_id=article_id, result=result_to_proto(await self._wait(outcome, deadline))
            )
        except Exception as exc:  # noqa: BLE001 - reported per item, mapped by the one table
            return _error_item(article_id, exc, "TagBatch")

    async def TagStream(  # type: ignore[override]  # noqa: N802 - writes through the context
        self,
        request_iterator: AsyncIterator[pb.TagStreamRequest],
        context: Context,
    ) -> None:
        """Reads requests in a task of its own while this coroutine writes responses. At most
        STREAM_WINDOW articles are queued or unread at a time; a stream that sends nothing, or
        reads no response, for ``stream_idle_seconds`` is ended (DEADLINE_EXCEEDED); when it ends
        for any reason, its articles still queued are cancelled (never computed)."""
        self._tagger.require_model()
        stream = _Stream(self, _deadline(context))
        reader = asyncio.create_task(stream.read(request_iterator))
        try:
            while (response := await stream.out.get()) is not None:
                if isinstance(response, Exception):
                    raise response
                await self._write(context, response)
                stream.window.release()
        finally:
            reader.cancel()
            stream.cancel()

    async def _write(self, context: Context, response: pb.TagStreamResponse) -> None:
        """Write one response; a client that reads none for the idle limit ends the stream (the
        write waits while HTTP/2 flow control says the client has read nothing)."""
        try:
            async with asyncio.timeout(self._idle):
                await context.write(response)
        except TimeoutError:
            raise DeadlineExceeded(f"stream idle: no response read for {self._idle:g}s") from None

    async def GetModel(  # noqa: N802
        self,
        request: pb.GetModelRequest,
        context: Context,
    ) -> pb.GetModelResponse:
        return model_to_proto(self._tagger.require_model())


class _Stream:
    """One TagStream call: its request reader, its outstanding articles and its response queue."""

    def __init__(self, servicer: TaggerServicer, deadline: float | None) -> None:
        self._servicer = servicer
        self._deadline = deadline
        self.out: asyncio.Queue[pb.TagStreamResponse | Exception | None] = asyncio.Queue()
        self.window = asyncio.Semaphore(STREAM_WINDOW)
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished = False

    async def read(self, requests: AsyncIterator[pb.TagStreamRequest]) -> None:
        idle = self._servicer._idle
        iterator = aiter(requests)
        try:
            while True:
                try:
                    request = await asyncio.wait_for(anext(iterator), idle)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise DeadlineExceeded(f"stream idle: nothing sent for {idle:g}s") from None
                await self.window.acquire()  # released as responses are written
                self._start(request)
        except (InvalidRequest, DeadlineExceeded) as exc:  # the caller's fault: it ends the stream
            self.out.put_nowait(exc)
        except Exception:  # the client went away or cancelled: nothing left to answer
            logger.debug("tag stream ended while reading", exc_info=True)
        finally:
            self._finished = True
            if not self._tasks:
                self.out.put_nowait(None)

    def _start(self, request: pb.TagStreamRequest) -> None:
        task = asyncio.create_task(self._answer(request))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._finished and not self._tasks:
            self.out.put_nowait(None)

    async def _answer(self, request: pb.TagStreamRequest) -> None:
        article, key = to_article(request.article), request.correlation_id
        try:
            future = self._servicer._submit(article, to_options(request.options), self._deadline)
            item = pb.TagItem(
                article_id=article.id,
                result=result_to_proto(await self._servicer._wait(future, self._deadline)),
            )
        except Exception as exc:  # noqa: BLE001 - reported per item
            item = _error_item(article.id, exc, "TagStream")
        self.out.put_nowait(pb.TagStreamResponse(item=item, correlation_id=key))

    def cancel(self) -> None:
        """The call is over: cancel what is still waiting (the bridge cancels its future)."""
        for task in list(self._tasks):
            task.cancel()


def _error_item(article_id: str, exc: BaseException, method: str) -> pb.TagItem:
    code, message = status_for(exc, method)
    return pb.TagItem(article_id=article_id, error=pb.ItemError(code=code_number(code), message=message))


class AdminServicer(pb_grpc.AdminServiceServicer):
    """ReloadModel, behind a bearer token. Without a configured token the service is disabled."""

    def __init__(self, reloader: ModelReloader, token: str | None) -> None:
        self._reloader = reloader
        self._token = token

    async def ReloadModel(  # noqa: N802
        self,
        request: pb.ReloadModelRequest,
        context: Context,
    ) -> pb.ReloadModelResponse:
        if not self._token:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "the admin service is disabled (start the server with --admin-token to enable it)",
            )
        given = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, token = str(given).partition(" ")
        expected = self._token or ""
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        outcome = await asyncio.to_thread(self._reloader.check)  # loads a model: not on the loop
        logger.info("admin reload: %s %s", outcome.result, outcome.version)
        return pb.ReloadModelResponse(result=outcome.result, version=outcome.version, message=outcome.message)
