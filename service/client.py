"""A thin, typed Python client for newstagger's gRPC API.

    from service.client import TaggerClient

    with TaggerClient("127.0.0.1:50051") as client:
        result = client.tag("Pyongyang sent more troops to the front.", article_id="a1")
        print(result.heads[0].labels)          # (LabelScore(label='troop_deployment', score=0.97),)
        print(client.model().version)

Results are the core's own frozen dataclasses (``service.core.types``). A failed call raises a
``RemoteError`` carrying the status ``code`` and the server's message, as the subclass for its
code: ``InvalidArgumentError`` (also an ``InvalidRequest``), ``UnavailableError`` (no server, no
model yet, or draining), ``OverloadedError`` (also an ``Overloaded``: retry with backoff),
``DeadlineError`` (also a ``DeadlineExceeded``), ``TooLargeError`` (also an ``InvalidRequest``: a
request or response over gRPC's message size limit; send fewer or shorter articles per call); any
other code raises ``RemoteError`` itself. Text that UTF-8 cannot hold (a lone surrogate) raises
``InvalidArgumentError`` before anything is sent.

Every call has a deadline: ``timeout`` seconds (default 10), per client or per call. The client
never retries: ``UnavailableError`` and ``OverloadedError`` are worth retrying with backoff (or
elsewhere), the others are not. One client (one channel) may be shared by any number of threads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from service.core.errors import DeadlineExceeded, InvalidRequest, NewstaggerError, Overloaded
from service.core.types import Article, HeadResult, LabelScore, TagOptions, TagResult
from service.core.validation import lone_surrogate, quote
from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    heads: dict[str, tuple[str, ...]]  # head -> labels


@dataclass(frozen=True)
class ItemError:
    article_id: str
    code: grpc.StatusCode
    message: str


def _options(options: TagOptions) -> pb.TagOptions:
    if any(lone_surrogate(head) is not None for head in options.heads):
        raise InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT, "a head name holds a lone surrogate, which is not Unicode text"
        )
    message = pb.TagOptions(heads=list(options.heads), top_k=options.top_k, explain=options.explain)
    if options.min_score is not None:
        message.min_score = options.min_score
    return message


def _article(article: Article) -> pb.Article:
    for name in ("id", "text", "title", "target"):
        if (at := lone_surrogate(getattr(article, name))) is not None:
            message = f"article {quote(article.id)}: {name} holds a lone surrogate at character {at}"
            raise InvalidArgumentError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{message}, which is not Unicode text (not sent)"
            )
    return pb.Article(id=article.id, text=article.text, title=article.title, target=article.target)


def _scores(items: Sequence[pb.LabelScore]) -> tuple[LabelScore, ...]:
    return tuple(LabelScore(s.label, round(float(s.score), 6)) for s in items)


def result_from_proto(message: pb.TagResult) -> TagResult:
    heads = tuple(
        HeadResult(
            head=h.head,
            kind=h.kind,
            labels=_scores(h.labels),
            scores=_scores(h.scores),
            explanations={e.label: tuple(e.terms) for e in h.explanations},
        )
        for h in message.heads
    )
    return TagResult(message.article_id, heads, message.model_name, message.model_version)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class RemoteError(NewstaggerError):
    """A gRPC call failed; ``code`` is its status code, the message is the server's."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class InvalidArgumentError(RemoteError, InvalidRequest):
    """INVALID_ARGUMENT: empty or oversized text, too many articles, an unknown head."""


class UnavailableError(RemoteError):
    """UNAVAILABLE: the server cannot be reached, has no model loaded yet, or is draining."""


class OverloadedError(RemoteError, Overloaded):
    """RESOURCE_EXHAUSTED: the server's queue is full; retry with backoff."""


class DeadlineError(RemoteError, DeadlineExceeded):
    """DEADLINE_EXCEEDED: not tagged within the client's timeout."""


class TooLargeError(RemoteError, InvalidRequest):
    """RESOURCE_EXHAUSTED from gRPC's message size limit: not overload, retrying cannot help."""


ERROR_BY_STATUS: dict[grpc.StatusCode, type[RemoteError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineError,
}


_TOO_LARGE = re.compile(r"(SERVER|CLIENT): Received message larger than max \((\d+) vs\. (\d+)\)")


def _error(code: grpc.StatusCode, details: str) -> RemoteError:
    """The RemoteError for a status. gRPC itself refuses a message over the size limit with
    RESOURCE_EXHAUSTED, which would otherwise read as overload (retry later) though no retry can
    ever succeed."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (size := _TOO_LARGE.search(details)):
        side, got, most = size.groups()
        what = "request" if side == "SERVER" else "response"
        whose = "the server's" if side == "SERVER" else "this client's"
        return TooLargeError(
            code,
            f"the {what} is {got} bytes, over {whose} limit of {most}: send fewer or shorter "
            f"articles per call ({details})",
        )
    return ERROR_BY_STATUS.get(code, RemoteError)(code, details or str(code))


class TaggerClient:
    """Blocking client. ``credentials`` for TLS (``grpc.ssl_channel_credentials(...)``);
    ``timeout`` is every call's deadline in seconds unless the call gives its own."""

    def __init__(
        self, target: str, credentials: grpc.ChannelCredentials | None = None, timeout: float = 10.0
    ) -> None:
        self._channel = (
            grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        )
        self._stub = pb_grpc.TaggerServiceStub(self._channel)
        self.timeout = timeout

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        """``method(request)`` with a deadline; a gRPC error becomes the RemoteError for its code."""
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise _error(exc.code(), exc.details() or "") from None

    def tag(
        self,
        text: str,
        article_id: str = "",
        title: str = "",
        target: str = "",
        options: TagOptions | None = None,
        timeout: float | None = None,
    ) -> TagResult:
        request = pb.TagRequest(
            article=_article(Article(article_id, text, title, target)),
            options=_options(options or TagOptions()),
        )
        return result_from_proto(self._call(self._stub.Tag, request, timeout).result)

    def tag_batch(
        self, articles: Sequence[Article], options: TagOptions | None = None, timeout: float | None = None
    ) -> list[TagResult | ItemError]:
        """Results in the order given; an article that could not be tagged gives an ItemError."""
        request = pb.TagBatchRequest(
            articles=[_article(a) for a in articles], options=_options(options or TagOptions())
        )
        response = self._call(self._stub.TagBatch, request, timeout)
        out: list[TagResult | ItemError] = []
        for item in response.items:
            if item.HasField("result"):
                out.append(result_from_proto(item.result))
            else:
                code = _CODES.get(item.error.code, grpc.StatusCode.UNKNOWN)
                out.append(ItemError(item.article_id, code, item.error.message))
        return out

    def model(self, timeout: float | None = None) -> ModelInfo:
        response = self._call(self._stub.GetModel, pb.GetModelRequest(), timeout)
        return ModelInfo(response.name, response.version, {h.name: tuple(h.labels) for h in response.heads})

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TaggerClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
