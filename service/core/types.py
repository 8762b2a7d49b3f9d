"""Plain, immutable values that flow through the core."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Article:
    """One article to tag. ``target`` is what a target-aware stance head judges the stance toward."""

    id: str
    text: str
    title: str = ""
    target: str = ""


@dataclass(frozen=True, slots=True)
class TagOptions:
    """Per-call options. ``heads=()`` means every head of the model."""

    heads: tuple[str, ...] = ()
    top_k: int = 0  # 0 = no cap
    min_score: float | None = None  # None = the head's own thresholds
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
