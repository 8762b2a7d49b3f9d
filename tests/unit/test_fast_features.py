"""The compiled text featurizer gives the pipeline's matrix exactly, and steps aside when it cannot."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from scipy import sparse

from service.model import fast_features
from service.model.article_model import articles_to_matrix
from service.model.fast_features import CompiledFeaturizer, compile_featurizer, same_matrix
from tests.helpers import REPO
from training.config import FeatureConfig, HeadConfig, TrainConfig
from training.pipeline import build_featurizer

ROWS = [json.loads(line) for line in (REPO / "training/starter/train.jsonl").read_text().splitlines()[:600]]


class Article:
    def __init__(self, title: str, text: str, target: str = "") -> None:
        self.title, self.text, self.target = title, text, target


def matrix(rows: list[dict[str, Any]]) -> Any:
    return articles_to_matrix([Article(r.get("title", ""), r["text"], r.get("target", "")) for r in rows])


@pytest.fixture(scope="module", params=[False, True], ids=["words", "words+char4"])
def featurizer(request: pytest.FixtureRequest) -> Any:
    config = TrainConfig(features=FeatureConfig(char4=request.param))
    return build_featurizer(HeadConfig("multi"), config).fit(matrix(ROWS))


BATCHES = {
    "one article": ROWS[:1],
    "a batch": ROWS[100:164],
    "repeats": ROWS[:3] * 3 + ROWS[5:6],
    "odd texts": [
        {"title": "", "text": ""},
        {"title": "Ünïcödé — “quotes”", "text": "日本語 текст 🙂 and troops crossed the border"},
        {"title": "x", "text": "a " * 5000},
    ],
}


@pytest.mark.parametrize("batch", list(BATCHES))
def test_compiled_matrix_is_the_pipelines(featurizer: Any, batch: str) -> None:
    compiled = compile_featurizer(featurizer)
    assert isinstance(compiled, CompiledFeaturizer)
    compiled(matrix(ROWS[:2]))  # the first call checks itself against the pipeline
    X = matrix(BATCHES[batch])
    assert same_matrix(compiled(X), sparse.csr_matrix(featurizer.transform(X)))


def test_a_target_aware_featurizer_is_not_compiled() -> None:
    rows = [dict(r, target="the border") for r in ROWS[:80]]
    featurizer = build_featurizer(HeadConfig("single", "target"), TrainConfig()).fit(matrix(rows))
    assert not isinstance(compile_featurizer(featurizer), CompiledFeaturizer)


def test_a_fast_path_that_differs_is_dropped_for_the_pipeline(
    featurizer: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A future scikit-learn whose TF-IDF differs (here: every value doubled) costs speed, not tags."""
    real = fast_features.tfidf_transform
    monkeypatch.setattr(fast_features, "tfidf_transform", lambda v, docs: real(v, docs) * 2.0)
    compiled = compile_featurizer(featurizer)
    X = matrix(ROWS[:4])
    with caplog.at_level(logging.WARNING, logger="service.model.fast_features"):
        first = compiled(X)
    assert "differs from the pipeline" in caplog.text
    assert same_matrix(first, sparse.csr_matrix(featurizer.transform(X)))
    assert same_matrix(compiled(X), sparse.csr_matrix(featurizer.transform(X)))


def test_a_fast_path_that_fails_is_dropped_for_the_pipeline(
    featurizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def moved(vectorizer: Any, docs: list[str]) -> Any:
        raise AttributeError("'TfidfVectorizer' object has no attribute '_count_vocab'")

    monkeypatch.setattr(fast_features, "tfidf_transform", moved)
    compiled = compile_featurizer(featurizer)
    X = matrix(ROWS[:4])
    assert same_matrix(compiled(X), sparse.csr_matrix(featurizer.transform(X)))
    assert same_matrix(compiled(X), sparse.csr_matrix(featurizer.transform(X)))
