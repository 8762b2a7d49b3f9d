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
from collections.abc import AsyncIterator, Callable
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

STREAM_WINDOW = 256  # articles one stream may have queued or unread before it stops reading
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _deadline(context: Context) -> float | None:
    """The call's deadline on the time.monotonic() clock (what the batcher compares against)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class TaggerServicer(pb_grpc.TaggerServiceServicer):
    def __init__(self, tagger: Tagger, batcher: MicroBatcher, metrics: Metrics, max_articles: int) -> None:
        self._tagger = tagger
        self._batcher = batcher
        self._metrics = metrics
        self._max_articles = max_articles
        self._bridge: ResultBridge | None = None

    async def _wait(self, future: Future[TagResult], deadline: float | None) -> TagResult:
        if self._bridge is None:
            self._bridge = ResultBridge(asyncio.get_running_loop())
            self._batcher.add_listener(self._bridge)
        return await self._bridge.wait(future, deadline)

    def _submit(self, article: Article, options: TagOptions, deadline: float | None) -> Future[TagResult]:
        try:
            future = self._batcher.submit(article, options, deadline)
        except Overloaded:
            self._metrics.overload_rejections.inc()
            raise
        finally:
            self._metrics.queue_depth.set(self._batcher.depth())
        return future

    async def Tag(self, request: pb.TagRequest, context: Context) -> pb.TagResponse:  # noqa: N802
        article, options = to_article(request.article), to_options(request.options)
        self._tagger.validate(article, options)
        deadline = _deadline(context)
        future = self._submit(article, options, deadline)
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
                self._tagger.validate(article)
                pending.append((article.id, self._submit(article, options, deadline)))
            except Exception as exc:  # noqa: BLE001 - reported per item
                pending.append((article.id, exc))
        items = [await self._item(article_id, outcome, deadline) for article_id, outcome in pending]
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

    async def TagStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[pb.TagStreamRequest],
        context: Context,
    ) -> AsyncIterator[pb.TagStreamResponse]:
        self._tagger.require_model()
        out: asyncio.Queue[pb.TagStreamResponse | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)
        reader = asyncio.create_task(self._read_stream(request_iterator, out, window, _deadline(context)))
        try:
            while (response := await out.get()) is not None:
                window.release()
                yield response
        finally:
            reader.cancel()

    async def _read_stream(
        self,
        requests: AsyncIterator[pb.TagStreamRequest],
        out: asyncio.Queue[pb.TagStreamResponse | None],
        window: asyncio.Semaphore,
        deadline: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        outstanding, finished = 0, False

        def settle(response: pb.TagStreamResponse) -> None:  # on the loop
            nonlocal outstanding
            out.put_nowait(response)
            outstanding -= 1
            if finished and outstanding == 0:
                out.put_nowait(None)

        try:
            async for request in requests:
                await window.acquire()
                outstanding += 1
                self._stream_one(request, deadline, settle, loop)
        except Exception:  # the client went away or cancelled: nothing left to answer
            logger.debug("tag stream ended while reading", exc_info=True)
        finally:
            finished = True
            if outstanding == 0:
                out.put_nowait(None)

    def _stream_one(
        self,
        request: pb.TagStreamRequest,
        deadline: float | None,
        settle: Callable[[pb.TagStreamResponse], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        article, key = to_article(request.article), request.correlation_id

        def respond(item: pb.TagItem) -> None:
            settle(pb.TagStreamResponse(item=item, correlation_id=key))

        try:
            options = to_options(request.options)
            self._tagger.validate(article, options)
            future = self._submit(article, options, deadline)
        except Exception as exc:  # noqa: BLE001 - reported per item
            respond(_error_item(article.id, exc, "TagStream"))
            return

        def done(f: Future[TagResult]) -> None:  # on the loop
            if f.cancelled():
                respond(_error_item(article.id, DeadlineExceeded("cancelled before tagging"), "TagStream"))
            elif (exc := f.exception()) is not None:
                respond(_error_item(article.id, exc, "TagStream"))
            else:
                respond(pb.TagItem(article_id=article.id, result=result_to_proto(f.result())))

        future.add_done_callback(lambda f: loop.call_soon_threadsafe(done, f))

    async def GetModel(  # noqa: N802
        self,
        request: pb.GetModelRequest,
        context: Context,
    ) -> pb.GetModelResponse:
        return model_to_proto(self._tagger.require_model())


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
