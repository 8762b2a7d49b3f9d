"""Protobuf messages <-> core values. Pure translation: no validation beyond types, no I/O."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from service.core.types import DEFAULT_OPTIONS, Article, HeadResult, TagOptions, TagResult
from service.core.validation import check_head_count
from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.model.artifact import LoadedModel


def to_article(message: pb.Article) -> Article:
    return Article(id=message.id, text=message.text, title=message.title, target=message.target)


def to_options(message: pb.TagOptions) -> TagOptions:
    check_head_count(len(message.heads))  # before millions of names become Python strings
    if not message.ByteSize():  # nothing set (the common case): the shared default
        return DEFAULT_OPTIONS
    return TagOptions(
        heads=tuple(message.heads),
        top_k=message.top_k,
        min_score=message.min_score if message.HasField("min_score") else None,
        explain=message.explain,
    )


def _head_to_proto(head: HeadResult) -> pb.HeadResult:
    return pb.HeadResult(
        head=head.head,
        kind=head.kind,
        labels=[pb.LabelScore(label=s.label, score=s.score) for s in head.labels],
        scores=[pb.LabelScore(label=s.label, score=s.score) for s in head.scores],
        explanations=[pb.Explanation(label=k, terms=list(v)) for k, v in head.explanations.items()],
    )


def result_to_proto(result: TagResult) -> pb.TagResult:
    return pb.TagResult(
        article_id=result.article_id,
        heads=[_head_to_proto(h) for h in result.heads],
        model_name=result.model_name,
        model_version=result.model_version,
    )


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _parse_time(text: str) -> Timestamp | None:
    try:
        return _timestamp(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except (ValueError, OverflowError):
        return None


def model_to_proto(loaded: LoadedModel) -> pb.GetModelResponse:
    manifest = loaded.manifest
    metrics = Struct()
    metrics.update(manifest.metrics)
    response = pb.GetModelResponse(
        name=manifest.name,
        version=manifest.version,
        heads=[
            pb.HeadInfo(
                name=h.name,
                kind=h.kind,
                labels=list(h.labels),
                thresholds=list(h.thresholds),
                target=h.target,
            )
            for h in manifest.heads
        ],
        metrics=metrics,
        loaded_at=_timestamp(loaded.loaded_at),
    )
    created = _parse_time(manifest.created_at)
    if created is not None:
        response.created_at.CopyFrom(created)
    return response
