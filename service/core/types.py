"""Plain, immutable values that flow through the core."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Article:
    """One article to tag. ``target`` is what a target-aware stance head judges the stance toward."""

    id: str
    text: str
    title: str = ""
    target: str = ""


#: The fields of a labelled data row that make its Article; every other field is a label field.
ARTICLE_FIELDS = ("id", "text", "title", "target")


@dataclass(frozen=True, slots=True)
class TagOptions:
    """Per-call options. ``heads=()`` means every head of the model."""

    heads: tuple[str, ...] = ()
    top_k: int = 0  # 0 = no cap
    min_score: float | None = None  # None = the tuned thresholds; cuts multi-label heads only
    explain: bool = False


DEFAULT_OPTIONS = TagOptions()


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class HeadResult:
    """A head's verdict. Multi-label: ``labels`` = every label over its threshold, highest first.
    Single-label: ``labels`` = the winning label. ``scores`` = the full distribution, highest first."""

    head: str
    kind: str  # "multi" | "single"
    labels: tuple[LabelScore, ...]
    scores: tuple[LabelScore, ...]
    explanations: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TagResult:
    article_id: str
    heads: tuple[HeadResult, ...]
    model_name: str
    model_version: str


def _score(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def result_to_json(result: TagResult) -> dict[str, Any]:
    """The one JSON shape of a result, shared by `newstagger tag`, the REST API and tagged Kafka
    events."""
    heads = []
    for h in result.heads:
        head: dict[str, Any] = {
            "head": h.head,
            "kind": h.kind,
            "labels": [{"label": s.label, "score": _score(s.score)} for s in h.labels],
            "scores": [{"label": s.label, "score": _score(s.score)} for s in h.scores],
        }
        if h.explanations:
            head["explanations"] = {label: list(terms) for label, terms in h.explanations.items()}
        heads.append(head)
    return {
        "id": result.article_id,
        "heads": heads,
        "model": {"name": result.model_name, "version": result.model_version},
    }
