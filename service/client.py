"""A thin, typed Python client for newstagger's gRPC API.

    from service.client import TaggerClient

    with TaggerClient("127.0.0.1:50051") as client:
        result = client.tag("Pyongyang sent more troops to the front.", article_id="a1")
        print(result.heads[0].labels)          # (LabelScore(label='troop_deployment', score=0.97),)
        print(client.model().version)

Results are the core's own frozen dataclasses (``service.core.types``). gRPC errors surface
as ``grpc.RpcError`` with the status code the API documents (INVALID_ARGUMENT, UNAVAILABLE, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import grpc

from service.core.types import Article, HeadResult, LabelScore, TagOptions, TagResult
from service.grpc_api.gen.newstagger.v1 import tagger_pb2 as pb
from service.grpc_api.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc


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
    message = pb.TagOptions(heads=list(options.heads), top_k=options.top_k, explain=options.explain)
    if options.min_score is not None:
        message.min_score = options.min_score
    return message


def _article(article: Article) -> pb.Article:
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


class TaggerClient:
    """Blocking client. ``credentials`` for TLS (``grpc.ssl_channel_credentials(...)``)."""

    def __init__(
        self, target: str, credentials: grpc.ChannelCredentials | None = None, timeout: float = 10.0
    ) -> None:
        self._channel = (
            grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        )
        self._stub = pb_grpc.TaggerServiceStub(self._channel)
        self.timeout = timeout

    def tag(
        self,
        text: str,
        article_id: str = "",
        title: str = "",
        target: str = "",
        options: TagOptions | None = None,
    ) -> TagResult:
        request = pb.TagRequest(
            article=_article(Article(article_id, text, title, target)),
            options=_options(options or TagOptions()),
        )
        return result_from_proto(self._stub.Tag(request, timeout=self.timeout).result)

    def tag_batch(
        self, articles: Sequence[Article], options: TagOptions | None = None
    ) -> list[TagResult | ItemError]:
        """Results in the order given; an article that could not be tagged gives an ItemError."""
        request = pb.TagBatchRequest(
            articles=[_article(a) for a in articles], options=_options(options or TagOptions())
        )
        response = self._stub.TagBatch(request, timeout=self.timeout)
        out: list[TagResult | ItemError] = []
        for item in response.items:
            if item.HasField("result"):
                out.append(result_from_proto(item.result))
            else:
                code = _CODES.get(item.error.code, grpc.StatusCode.UNKNOWN)
                out.append(ItemError(item.article_id, code, item.error.message))
        return out

    def model(self) -> ModelInfo:
        response = self._stub.GetModel(pb.GetModelRequest(), timeout=self.timeout)
        return ModelInfo(response.name, response.version, {h.name: tuple(h.labels) for h in response.heads})

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TaggerClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
