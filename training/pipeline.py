"""Build the scikit-learn parts of an ArticleModel from a TrainConfig."""

from __future__ import annotations

from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion, Pipeline

from service.model.classifiers import GatedClassifier, SigmoidLinearSVC
from service.model.evidence import SentenceEvidence
from service.model.features import ColumnText, TargetInteraction, TargetTextPairs, UniqueRows
from service.model.features import CompactTfidfVectorizer as TfidfVectorizer
from service.model.ngrams import ByteNgramTfidf
from training.config import FeatureConfig, HeadConfig, TrainConfig


def featurizer_key(head: HeadConfig) -> str:
    """Heads with the same key share one featurizer (computed once per batch)."""
    return f"text+{head.target}" if head.target else "text"


def _word_tfidf(cfg: FeatureConfig, max_features: int | None = None, min_df: int = 0) -> TfidfVectorizer:
    return TfidfVectorizer(
        ngram_range=(1, cfg.word_ngram_max),
        min_df=min_df or cfg.word_min_df,
        max_df=cfg.word_max_df,
        max_features=max_features or cfg.word_max_features,
        sublinear_tf=cfg.sublinear_tf,
        stop_words=cfg.stop_words or None,
    )


def build_text_features(cfg: FeatureConfig, columns: tuple[str, ...] = ("title", "text")) -> Pipeline:
    """TF-IDF over word n-grams and (optionally) character n-grams of the joined columns,
    computed once per distinct text."""
    parts: list[tuple[str, Any]] = [("word", _word_tfidf(cfg))]
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
    if cfg.char4:
        parts.append(("char4", ByteNgramTfidf(2, cfg.char_max_features, cfg.sublinear_tf)))
    union = FeatureUnion(parts) if len(parts) > 1 else parts[0][1]
    repeats = tuple(cfg.title_repeat if c == "title" else 1 for c in columns)
    return Pipeline([("columns", ColumnText(columns, repeats=repeats)), ("tfidf", UniqueRows(union))])


def build_featurizer(head: HeadConfig, config: TrainConfig) -> Any:
    """Plain text features, or for a target-aware head the text seen in relation to its target:
    per-target interaction blocks, the target's own n-grams, and target-text pair features."""
    cfg = config.features
    if not head.target:
        return build_text_features(cfg)
    # The target is judged separately, so the text features read the text alone.
    text: Any = build_text_features(cfg, ("text",))
    if cfg.target_interaction:
        text = TargetInteraction(
            text, head.target, cfg.interaction_min_count, cfg.interaction_max_targets, shared=True
        )
    parts: list[tuple[str, Any]] = [("text", text)]
    if cfg.target_ngrams:
        target_words = Pipeline(
            [
                ("columns", ColumnText((head.target,))),
                ("tfidf", UniqueRows(_word_tfidf(cfg, 20_000, min_df=1))),
            ]
        )
        parts.append(("target", target_words))
    if cfg.pair_features:
        parts.append(("pair", TargetTextPairs(head.target, cfg.pair_weight)))
    if cfg.sentence_evidence:
        parts.append(("evidence", SentenceEvidence(head.target, cfg.pair_weight, cfg.evidence_sentences)))
    return FeatureUnion(parts)


def build_classifier(head: HeadConfig, config: TrainConfig) -> Any:
    cc = config.classifier
    base: Any
    if cc.model == "linear_svc":
        base = SigmoidLinearSVC(C=cc.C, class_weight=cc.class_weight or None, max_iter=cc.max_iter)
    else:
        base = LogisticRegression(
            C=cc.C,
            class_weight=cc.class_weight or None,
            max_iter=cc.max_iter,
            solver="newton-cg",  # same optimum as lbfgs/liblinear here, 2-7x less CPU on sparse text
            random_state=config.seed,
        )
    if cc.calibration:
        base = CalibratedClassifierCV(base, method=cc.calibration, cv=cc.calibration_cv)
    if head.kind == "multi":
        return OneVsRestClassifier(base)
    if cc.gate_label:
        gate = LogisticRegression(
            C=cc.gate_C, max_iter=cc.max_iter, solver="newton-cg", random_state=config.seed
        )
        return GatedClassifier(
            gate, base, cc.gate_label, ((cc.offset_label, cc.offset),) if cc.offset_label else ()
        )
    return base
