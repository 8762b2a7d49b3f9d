"""Build the scikit-learn parts of an ArticleModel from a TrainConfig."""

from __future__ import annotations

from typing import Any

from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion, Pipeline

from service.model.features import ColumnText
from service.model.features import CompactTfidfVectorizer as TfidfVectorizer
from training.config import FeatureConfig, HeadConfig, TrainConfig


def featurizer_key(head: HeadConfig) -> str:
    """Heads with the same key share one featurizer (computed once per batch)."""
    return f"text+{head.target}" if head.target else "text"


def build_text_features(cfg: FeatureConfig, columns: tuple[str, ...] = ("title", "text")) -> Pipeline:
    """TF-IDF over word n-grams and (optionally) character n-grams of the joined columns."""
    parts: list[tuple[str, Any]] = [
        (
            "word",
            TfidfVectorizer(
                ngram_range=(1, cfg.word_ngram_max),
                min_df=cfg.word_min_df,
                max_features=cfg.word_max_features,
                sublinear_tf=cfg.sublinear_tf,
            ),
        )
    ]
    if cfg.use_char:
        parts.append(
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(cfg.char_ngram_min, cfg.char_ngram_max),
                    min_df=2,
                    max_features=cfg.char_max_features,
                    sublinear_tf=cfg.sublinear_tf,
                ),
            )
        )
    return Pipeline([("columns", ColumnText(columns)), ("tfidf", FeatureUnion(parts))])


def build_featurizer(head: HeadConfig, config: TrainConfig) -> Pipeline:
    if head.target:
        return build_text_features(
            config.features, (head.target, "text") if head.target != "title" else ("title", "text")
        )
    return build_text_features(config.features)


def build_classifier(head: HeadConfig, config: TrainConfig) -> Any:
    cc = config.classifier
    base = LogisticRegression(
        C=cc.C,
        class_weight=cc.class_weight or None,
        max_iter=cc.max_iter,
        solver="liblinear" if head.kind == "multi" else "lbfgs",
        random_state=config.seed,
    )
    if head.kind == "multi":
        return OneVsRestClassifier(base)
    return base
