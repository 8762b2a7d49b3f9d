"""Fit a model's featurizers and heads on a dataset, and score rows with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from service.model.article_model import ArticleModel, articles_to_matrix
from training.config import TrainConfig
from training.data import Dataset, Row
from training.evaluate import indicator
from training.pipeline import build_classifier, build_featurizer, featurizer_key


def fit_model(
    data: Dataset, config: TrainConfig, on_step: Callable[[str], None] = lambda _: None
) -> ArticleModel:
    """Fit every featurizer once and every head's classifier on ``data``."""
    articles = data.articles()
    X = articles_to_matrix(articles)
    featurizers: dict[str, Any] = {}
    matrices: dict[str, Any] = {}
    head_featurizer = {}
    for name, head in data.heads.items():
        key = featurizer_key(head)
        head_featurizer[name] = key
        if key not in featurizers:
            on_step(f"features '{key}'")
            featurizers[key] = build_featurizer(head, config)
            matrices[key] = featurizers[key].fit_transform(X)
    classifiers: dict[str, Any] = {}
    labels: dict[str, list[str]] = {}
    for name, head in data.heads.items():
        on_step(f"head '{name}' ({head.kind}-label)")
        gold = data.labels(name)
        label_set = list(head.labels) or sorted({label for row in gold for label in row})
        clf = build_classifier(head, config)
        if head.kind == "multi":
            Y = indicator(gold, label_set)
            clf.fit(matrices[head_featurizer[name]], Y)
        else:
            clf.fit(matrices[head_featurizer[name]], [g[0] for g in gold])
            label_set = [str(c) for c in clf.classes_]
        classifiers[name] = clf
        labels[name] = label_set
    return ArticleModel(featurizers, classifiers, head_featurizer, labels)


def score_rows(model: ArticleModel, rows: Sequence[Row]) -> dict[str, Any]:
    X = articles_to_matrix([r.article for r in rows])
    return model.scores(X, list(model.classifiers))


def with_fixed_labels(data: Dataset) -> Dataset:
    """``data`` whose multi-label heads name their full label set, so that every fold's model has
    the same columns (a rare label may be missing from a fold's training part)."""
    heads = {}
    for name, head in data.heads.items():
        if head.kind == "multi" and not head.labels:
            head = replace(head, labels=tuple(sorted({label for row in data.labels(name) for label in row})))
        heads[name] = head
    return replace(data, heads=heads)
