"""Tagger: a batch of articles in, one result per article out.

Thread-safe: each call reads the current model once and uses it to the end, so ``swap`` never
changes the model under a call that has started (the old model finishes what it began).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.core.errors import InvalidRequest, ModelNotReady
from service.core.types import DEFAULT_OPTIONS, Article, HeadResult, LabelScore, TagOptions, TagResult
from service.core.validation import check_options, validate_article
from service.model.article_model import articles_to_matrix
from service.model.artifact import LoadedModel
from service.model.manifest import HeadSpec

EXPLAIN_TERMS = 5
#: The model reads at most this many characters of an article's text (a news article is far
#: shorter), so one long article costs at most about a tenth of a second of model time.
MAX_MODEL_TEXT_CHARS = 100_000


def _model_view(article: Article) -> Article:
    """What the model reads of ``article``: the text cut to MAX_MODEL_TEXT_CHARS."""
    if len(article.text) <= MAX_MODEL_TEXT_CHARS:
        return article
    return Article(article.id, article.text[:MAX_MODEL_TEXT_CHARS], article.title, article.target)


def _requested_heads(options: TagOptions, all_heads: list[str]) -> list[str]:
    """The heads ``options`` asks for, each once, in the model's head order (what TagResult.heads
    promises, however the caller ordered or repeated the names)."""
    if not options.heads:
        return all_heads
    asked = set(options.heads)
    return [h for h in all_heads if h in asked]


class Tagger:
    def __init__(self, model: LoadedModel | None = None, max_text_bytes: int = 1_000_000) -> None:
        self._model = model
        self._swap_lock = threading.Lock()
        self.max_text_bytes = max_text_bytes

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def require_model(self) -> LoadedModel:
        model = self._model
        if model is None:
            raise ModelNotReady("no model is loaded")
        return model

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` from now on; returns the one it replaced."""
        with self._swap_lock:
            old, self._model = self._model, model
        return old

    def validate(self, article: Article, options: TagOptions | None = None) -> None:
        """Raise InvalidArticle / InvalidRequest for what no model could tag (``validation``)."""
        validate_article(article, self.max_text_bytes)
        if options is not None:
            self.check_options(options)

    def check_options(self, options: TagOptions, model: LoadedModel | None = None) -> None:
        """Raise InvalidRequest for bad options; heads are checked against ``model``
        (default: the current one)."""
        if model is None:
            model = self._model
        check_options(options, None if model is None else model.head_names)

    def tag(
        self, articles: Sequence[Article], options: TagOptions | Sequence[TagOptions] = DEFAULT_OPTIONS
    ) -> list[TagResult]:
        """Tag ``articles`` with one vectorized call per head. ``options`` is one for all or one each.

        Raises InvalidArticle (naming the article) if any article has empty or over-long text.
        """
        loaded = self.require_model()  # read once: a concurrent swap does not change this call's model
        per_item = [options] * len(articles) if isinstance(options, TagOptions) else list(options)
        if len(per_item) != len(articles):
            raise InvalidRequest("need one TagOptions per article")
        if not articles:
            return []
        all_heads = [h.name for h in loaded.manifest.heads]
        for opts in set(per_item):
            self.check_options(opts, loaded)
        for article in articles:
            self.validate(article)
        wanted = {h for opts in per_item for h in (opts.heads or all_heads)}
        heads = [h for h in all_heads if h in wanted]
        X = articles_to_matrix([_model_view(a) for a in articles])
        features = loaded.model.features(X, heads)
        scores = loaded.model.scores(X, heads, features)
        manifest = loaded.manifest
        results = []
        for i, (article, opts) in enumerate(zip(articles, per_item, strict=True)):
            head_results = []
            for name in _requested_heads(opts, all_heads):
                spec = manifest.head(name)
                row_features = features[loaded.model.head_featurizer[name]][i] if opts.explain else None
                head_results.append(self._head_result(loaded, spec, scores[name][i], opts, row_features))
            results.append(TagResult(article.id, tuple(head_results), manifest.name, manifest.version))
        return results

    @staticmethod
    def _head_result(
        loaded: LoadedModel, spec: HeadSpec, row: NDArray[np.float64], opts: TagOptions, row_features: Any
    ) -> HeadResult:
        order = np.argsort(-row, kind="stable")
        distribution = tuple(LabelScore(spec.labels[j], round(float(row[j]), 6)) for j in order)
        if spec.kind == "single":  # always exactly its winner: min_score is for multi-label heads
            chosen = [int(order[0])]
        else:
            cut = spec.thresholds if opts.min_score is None else (opts.min_score,) * len(spec.labels)
            chosen = [int(j) for j in order if row[j] >= cut[j]]
        if opts.top_k:
            chosen = chosen[: opts.top_k]
            distribution = distribution[: opts.top_k]
        labels = tuple(LabelScore(spec.labels[j], round(float(row[j]), 6)) for j in chosen)
        explanations: dict[str, tuple[str, ...]] = {}
        if row_features is not None:
            for j in chosen:
                explanations[spec.labels[j]] = loaded.model.explain(row_features, spec.name, j, EXPLAIN_TERMS)
        return HeadResult(spec.name, spec.kind, labels, distribution, explanations)
