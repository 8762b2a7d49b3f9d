"""The REST API's request and response bodies as pydantic models: requests are parsed with them,
and the OpenAPI document (``openapi.py``) is generated from them. Field names and meanings are the
gRPC API's (``protos/newstagger/v1/tagger.proto``); results have the JSON shape of tagged Kafka
events (``service.core.types.result_to_json``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.core.types import DEFAULT_OPTIONS, Article, TagOptions


class _In(BaseModel):
    # strict: JSON types as documented ("2" is not a top_k, 1 is not a boolean), as gRPC's are
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ArticleIn(_In):
    """One news article to tag."""

    id: str = Field("", description="Caller's identifier, echoed in the result.")
    text: str = Field("", description="Body text. Required and non-blank; at most the server's limit.")
    title: str = Field("", description="Headline; used by the model together with the text.")
    target: str = Field("", description="What a target-aware stance head judges the stance toward.")
    source: str = Field("", description="Publisher or feed name; accepted, not used or returned.")
    url: str = Field("", description="Canonical URL; accepted, not used or returned.")
    published_at: str = Field("", description="Publication time (RFC 3339); accepted, not used or returned.")
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Free-form; accepted, not used or returned. A request's JSON may hold at most "
        "16 values per article of the server's `--max-request-articles` plus 1,000 (the articles and "
        "their fields included): room for 7 entries per article of a full batch.",
    )

    def to_article(self) -> Article:
        return Article(id=self.id, text=self.text, title=self.title, target=self.target)


class TagOptionsIn(_In):
    """Per-call options; the defaults tag every head with each head's own thresholds."""

    heads: list[str] = Field(default_factory=list, description="Heads to run; empty = every head.")
    top_k: int = Field(0, le=2**31 - 1, description="Cap on labels and scores returned per head; 0 = no cap.")
    min_score: float | None = Field(
        None,
        description="One cut-off in [0, 1] instead of the tuned thresholds of multi-label heads; "
        "a single-label head always returns exactly its best label.",
    )
    explain: bool = Field(False, description="Also return the terms behind each returned label.")

    def to_options(self) -> TagOptions:
        if not self.model_fields_set:
            return DEFAULT_OPTIONS
        return TagOptions(tuple(self.heads), self.top_k, self.min_score, self.explain)


def to_options(options: TagOptionsIn | None) -> TagOptions:
    return DEFAULT_OPTIONS if options is None else options.to_options()


class TagRequest(_In):
    """`POST /v1/tag`."""

    article: ArticleIn | None = None
    options: TagOptionsIn | None = None

    def to_article(self) -> Article:
        return self.article.to_article() if self.article is not None else Article(id="", text="")


class TagBatchRequest(_In):
    """`POST /v1/tag:batch`: at most the server's `--max-request-articles`."""

    articles: list[ArticleIn] = Field(default_factory=list)
    options: TagOptionsIn | None = None


# --- responses (documented; built as plain dicts by rest.py and checked against these in tests) ---


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="In [0, 1].")


class HeadResult(BaseModel):
    head: str = Field(description="Head name, e.g. `topics`.")
    kind: str = Field(description="`multi` (any number of labels) or `single` (exactly one).")
    labels: list[LabelScore] = Field(description="The labels assigned, highest score first.")
    scores: list[LabelScore] = Field(description="The full distribution, highest first (capped by top_k).")
    explanations: dict[str, list[str]] | None = Field(
        None, description="Per returned label, its most influential terms (only with `explain`)."
    )


class ModelRef(BaseModel):
    name: str
    version: str


class TagResult(BaseModel):
    id: str = Field(description="The caller's article id.")
    heads: list[HeadResult]
    model: ModelRef = Field(description="The model that produced this result.")


class TagResponse(BaseModel):
    result: TagResult


class ErrorBody(BaseModel):
    code: int = Field(description="The HTTP status of the same failure (400, 413, 429, 503, 504, 500).")
    status: str = Field(description="The gRPC status name of the same failure, e.g. `INVALID_ARGUMENT`.")
    message: str = Field(description="Safe to show; never internals.")


class Error(BaseModel):
    error: ErrorBody


class TagItem(BaseModel):
    id: str = Field(description="The caller's article id (also set when the item failed).")
    result: TagResult | None = None
    error: ErrorBody | None = None


class TagBatchResponse(BaseModel):
    items: list[TagItem] = Field(description="One per requested article, in request order.")
    model_version: str


class HeadInfo(BaseModel):
    name: str
    kind: str
    labels: list[str]
    thresholds: list[float] = Field(description="Per-label thresholds (multi-label heads), same order.")
    target: str = Field(description='What a target-aware stance head judges: "", "target" or "title".')


class ModelInfo(BaseModel):
    name: str
    version: str
    heads: list[HeadInfo]
    metrics: dict[str, Any] = Field(description="Dev metrics recorded when the model was trained.")
    loaded_at: str = Field(description="When this server loaded the model (RFC 3339).")
    created_at: str = Field(description="When the model was trained (from its manifest).")


class ReloadResponse(BaseModel):
    result: str = Field(description="`loaded`, `unchanged`, `refused` or `missing`.")
    version: str
    message: str


DOCUMENTED = (
    TagRequest,
    TagBatchRequest,
    TagResponse,
    TagBatchResponse,
    ModelInfo,
    ReloadResponse,
    Error,
)
