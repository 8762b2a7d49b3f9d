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

from service.core.errors import InvalidArticle, InvalidRequest, ModelNotReady
from service.core.types import DEFAULT_OPTIONS, Article, HeadResult, LabelScore, TagOptions, TagResult
from service.model.article_model import articles_to_matrix
from service.model.artifact import HeadSpec, LoadedModel

EXPLAIN_TERMS = 5


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
        """Raise InvalidArticle / InvalidRequest for what no model could tag."""
        if not article.text or not article.text.strip():
            raise InvalidArticle(f"article {article.id!r}: text is empty")
        # a UTF-8 character is at most 4 bytes: only texts that might be over the limit are encoded
        size = len(article.text)
        if size * 4 > self.max_text_bytes:
            size = len(article.text.encode("utf-8", "surrogatepass"))
        if size > self.max_text_bytes:
            raise InvalidArticle(
                f"article {article.id!r}: text is {size} bytes, over the limit of {self.max_text_bytes}"
            )
        if options is not None:
            self.check_options(options)

    def check_options(self, options: TagOptions, model: LoadedModel | None = None) -> None:
        """Raise InvalidRequest for bad options; heads are checked against ``model``
        (default: the current one)."""
        if options.top_k < 0:
            raise InvalidRequest("top_k must be >= 0")
        if options.min_score is not None and not 0.0 <= options.min_score <= 1.0:
            raise InvalidRequest("min_score must be between 0 and 1")
        if model is None:
            model = self._model
        if model is not None and options.heads:
            known = {h.name for h in model.manifest.heads}
            unknown = [h for h in options.heads if h not in known]
            if unknown:
                raise InvalidRequest(
                    f"unknown head(s) {', '.join(unknown)}; the model has {', '.join(sorted(known))}"
                )

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
        X = articles_to_matrix(articles)
        features = loaded.model.features(X, heads)
        scores = loaded.model.scores(X, heads, features)
        manifest = loaded.manifest
        results = []
        for i, (article, opts) in enumerate(zip(articles, per_item, strict=True)):
            head_results = []
            for name in opts.heads or all_heads:
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
        if spec.kind == "single":
            chosen = [int(order[0])]
            if opts.min_score is not None and row[order[0]] < opts.min_score:
                chosen = []
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
