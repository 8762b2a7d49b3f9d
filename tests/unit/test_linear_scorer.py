"""Compiled linear heads score exactly as scikit-learn's predict_proba, or are not compiled."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from service.model.classifiers import GatedClassifier, SigmoidLinearSVC
from service.model.linear import LinearScorer, compile_scorer

RNG = np.random.default_rng(7)
X = sparse.random(120, 50, density=0.2, random_state=RNG, format="csr")
MULTI = (RNG.random((120, 4)) < 0.3).astype(int)
MULTI[:, 3] = 0  # a label no training row has: scikit-learn keeps a constant predictor for it
CLASSES = np.asarray(["a", "b", "c"], dtype=object)[RNG.integers(0, 3, 120)]
BINARY = RNG.integers(0, 2, 120)


def fitted(clf: Any, y: Any) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the constant label's warning
        return clf.fit(X, y)


@pytest.mark.parametrize(
    ("clf", "y", "link"),
    [
        (OneVsRestClassifier(LogisticRegression()), MULTI, "sigmoid"),
        (OneVsRestClassifier(SigmoidLinearSVC()), MULTI, "sigmoid"),
        (OneVsRestClassifier(LogisticRegression()), CLASSES, "normalised"),
        (LogisticRegression(), CLASSES, "softmax"),
        (LogisticRegression(), BINARY, "sigmoid"),
        (SigmoidLinearSVC(), CLASSES, "softmax"),
        (SigmoidLinearSVC(), BINARY, "sigmoid"),
    ],
)
def test_compiled_scores_equal_predict_proba(clf: Any, y: Any, link: str) -> None:
    model = fitted(clf, y)
    scorer = compile_scorer(model, X.shape[1])
    assert isinstance(scorer, LinearScorer) and scorer.link == link
    rows = sparse.random(30, 50, density=0.3, random_state=RNG, format="csr")
    np.testing.assert_allclose(scorer(rows), model.predict_proba(rows), rtol=0, atol=1e-12)


def test_a_classifier_it_does_not_know_keeps_its_own_scores() -> None:
    gated = fitted(GatedClassifier(LogisticRegression(), LogisticRegression(), gate_label="a"), CLASSES)
    assert compile_scorer(gated, X.shape[1]) is None

    class Shifted(LogisticRegression):  # a subclass may score differently: never compiled
        def predict_proba(self, X: Any) -> Any:
            return super().predict_proba(X) ** 2

    assert compile_scorer(fitted(OneVsRestClassifier(Shifted()), MULTI), X.shape[1]) is None


def test_a_scorer_that_disagrees_on_the_probe_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fitted(OneVsRestClassifier(LogisticRegression()), MULTI)
    monkeypatch.setattr(LinearScorer, "__call__", lambda self, rows: np.zeros((rows.shape[0], 4)))
    assert compile_scorer(model, X.shape[1]) is None
