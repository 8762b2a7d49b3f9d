"""TaggerService and AdminService: translate protobuf <-> core and hand work to the shared batcher.

Domain errors propagate as exceptions; ``interceptors.ServerInterceptor`` maps them to status
codes once (``errors.STATUS_BY_ERROR``). Per-item errors of TagBatch/TagStream are mapped with
the same table into ``ItemError``.
"""

from __future__ import annotations

import hmac
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import grpc

from service.core.batcher import MicroBatcher
from service.core.errors import DeadlineExceeded, InvalidRequest, Overloaded
from service.core.tagger import Tagger
from service.core.types import Article, TagOptions, TagResult
from service.grpc_api.convert import model_to_proto, result_to_proto, to_article, to_options
from service.grpc_api.errors import code_number, status_for
from service.grpc_api.gen.newstagger.v1 import tagger_pb2 as pb
from service.grpc_api.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.metrics import Metrics
from service.reloader import ModelReloader

logger = logging.getLogger(__name__)

STREAM_WINDOW = 256  # articles one stream may have queued or unread before it stops reading


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The call's deadline on the time.monotonic() clock (what the batcher compares against)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _wait(future: Future[TagResult], deadline: float | None) -> TagResult:
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        return future.result(timeout)
    except FutureTimeout:
        future.cancel()  # still queued: the batcher skips it
        raise DeadlineExceeded("deadline passed before the article was tagged") from None


class TaggerServicer(pb_grpc.TaggerServiceServicer):
    def __init__(self, tagger: Tagger, batcher: MicroBatcher, metrics: Metrics, max_articles: int) -> None:
        self._tagger = tagger
        self._batcher = batcher
        self._metrics = metrics
        self._max_articles = max_articles

    def _submit(self, article: Article, options: TagOptions, deadline: float | None) -> Future[TagResult]:
        try:
            future = self._batcher.submit(article, options, deadline)
        except Overloaded:
            self._metrics.overload_rejections.inc()
            raise
        finally:
            self._metrics.queue_depth.set(self._batcher.depth())
        return future

    def Tag(self, request: pb.TagRequest, context: grpc.ServicerContext) -> pb.TagResponse:  # noqa: N802
        article, options = to_article(request.article), to_options(request.options)
        self._tagger.validate(article, options)
        deadline = _deadline(context)
        future = self._submit(article, options, deadline)
        context.add_callback(future.cancel)  # a cancelled call is not computed
        return pb.TagResponse(result=result_to_proto(_wait(future, deadline)))

    def TagBatch(  # noqa: N802
        self, request: pb.TagBatchRequest, context: grpc.ServicerContext
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
        items = [self._item(article_id, outcome, deadline) for article_id, outcome in pending]
        version = next((i.result.model_version for i in items if i.HasField("result")), "")
        return pb.TagBatchResponse(items=items, model_version=version or loaded.manifest.version)

    def _item(
        self, article_id: str, outcome: Future[TagResult] | BaseException, deadline: float | None
    ) -> pb.TagItem:
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            return pb.TagItem(article_id=article_id, result=result_to_proto(_wait(outcome, deadline)))
        except Exception as exc:  # noqa: BLE001 - reported per item, mapped by the one table
            code, message = status_for(exc, "TagBatch")
            return pb.TagItem(
                article_id=article_id, error=pb.ItemError(code=code_number(code), message=message)
            )

    def TagStream(  # noqa: N802
        self, request_iterator: Iterator[pb.TagStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.TagStreamResponse]:
        self._tagger.require_model()
        out: queue.Queue[pb.TagStreamResponse | None] = queue.Queue()
        window = threading.BoundedSemaphore(STREAM_WINDOW)
        deadline = _deadline(context)
        reader = threading.Thread(
            target=self._read_stream,
            args=(request_iterator, context, out, window, deadline),
            name="tag-stream-reader",
            daemon=True,
        )
        reader.start()
        while True:
            response = out.get()
            if response is None:
                return
            window.release()
            yield response

    def _read_stream(
        self,
        requests: Iterator[pb.TagStreamRequest],
        context: grpc.ServicerContext,
        out: queue.Queue[pb.TagStreamResponse | None],
        window: threading.BoundedSemaphore,
        deadline: float | None,
    ) -> None:
        outstanding = [0]
        lock = threading.Lock()
        finished_reading = threading.Event()

        def settle(response: pb.TagStreamResponse) -> None:
            out.put(response)
            with lock:
                outstanding[0] -= 1
                last = finished_reading.is_set() and outstanding[0] == 0
            if last:
                out.put(None)

        try:
            for request in requests:
                while not window.acquire(timeout=0.5):
                    if not context.is_active():
                        return
                with lock:
                    outstanding[0] += 1
                self._stream_one(request, deadline, settle)
        except Exception:  # the client went away or cancelled: nothing left to answer
            logger.debug("tag stream ended while reading", exc_info=True)
        finally:
            with lock:
                finished_reading.set()
                last = outstanding[0] == 0
            if last:
                out.put(None)

    def _stream_one(self, request: pb.TagStreamRequest, deadline: float | None, settle: Any) -> None:
        article, key = to_article(request.article), request.correlation_id

        def respond(item: pb.TagItem) -> None:
            settle(pb.TagStreamResponse(item=item, correlation_id=key))

        def error(exc: BaseException) -> pb.TagItem:
            code, message = status_for(exc, "TagStream")
            return pb.TagItem(
                article_id=article.id, error=pb.ItemError(code=code_number(code), message=message)
            )

        try:
            options = to_options(request.options)
            self._tagger.validate(article, options)
            future = self._submit(article, options, deadline)
        except Exception as exc:  # noqa: BLE001 - reported per item
            respond(error(exc))
            return

        def done(f: Future[TagResult]) -> None:
            if f.cancelled():
                respond(error(DeadlineExceeded("cancelled before tagging")))
            elif (exc := f.exception()) is not None:
                respond(error(exc))
            else:
                respond(pb.TagItem(article_id=article.id, result=result_to_proto(f.result())))

        future.add_done_callback(done)

    def GetModel(  # noqa: N802
        self, request: pb.GetModelRequest, context: grpc.ServicerContext
    ) -> pb.GetModelResponse:
        return model_to_proto(self._tagger.require_model())


class AdminServicer(pb_grpc.AdminServiceServicer):
    """ReloadModel, behind a bearer token. Without a configured token the service is disabled."""

    def __init__(self, reloader: ModelReloader, token: str | None) -> None:
        self._reloader = reloader
        self._token = token

    def ReloadModel(  # noqa: N802
        self, request: pb.ReloadModelRequest, context: grpc.ServicerContext
    ) -> pb.ReloadModelResponse:
        if not self._token:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "the admin service is disabled (start the server with --admin-token to enable it)",
            )
        given = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, token = str(given).partition(" ")
        expected = self._token or ""
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        outcome = self._reloader.check()
        logger.info("admin reload: %s %s", outcome.result, outcome.version)
        return pb.ReloadModelResponse(result=outcome.result, version=outcome.version, message=outcome.message)
