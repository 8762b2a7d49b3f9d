"""Classifiers that live inside saved models: a linear SVM with scores in [0, 1], and two stages
for a single-label head with one dominant label."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.svm import LinearSVC


class SigmoidLinearSVC(LinearSVC):  # type: ignore[misc]
    """LinearSVC with scores in [0, 1]: a logistic squash of the margin (binary) or a softmax over
    the classes' margins (multi-class). Not calibrated probabilities -- the margins' order is kept,
    which is all per-label cut-offs tuned on dev need -- but trains ~3x faster than calibrating."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> SigmoidLinearSVC:
        super().fit(X, y, sample_weight)
        if np.mean(self.coef_ != 0) < 0.3:  # few support vectors (rare labels): store sparse
            self.sparsify()
        return self

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        margin = np.asarray(self.decision_function(X), dtype=np.float64)
        if margin.ndim == 1:
            positive = 1.0 / (1.0 + np.exp(-2.0 * margin))
            return np.column_stack([1.0 - positive, positive])
        z = np.exp(2.0 * (margin - margin.max(axis=1, keepdims=True)))
        return np.asarray(z / z.sum(axis=1, keepdims=True), dtype=np.float64)


class GatedClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Two stages: ``gate`` (a binary classifier) first tells ``gate_label`` from the rest, then
    ``model`` picks among the rest, fitted on those rows only (FNC-1: unrelated first, then
    agree/disagree/discuss, whose cues are lost among the many unrelated rows in one model).

    Scores: ``gate_label`` gets the gate's probability p of it; each other class (1 - p) times
    ``model``'s probability, after adding ``offsets`` (label, value) to its log-probabilities --
    a decision rule that favours a rare class. ``classes_`` is sorted, as a classifier's is.
    """

    def __init__(
        self, gate: Any = None, model: Any = None, gate_label: str = "", offsets: tuple[Any, ...] = ()
    ) -> None:
        self.gate = gate
        self.model = model
        self.gate_label = gate_label
        self.offsets = offsets

    def fit(self, X: Any, y: Any) -> GatedClassifier:
        y = np.asarray(y, dtype=object)
        rest = y != self.gate_label
        self.gate_ = clone(self.gate).fit(X, rest)
        self.model_ = clone(self.model).fit(X[np.flatnonzero(rest)], y[rest])
        self.classes_ = np.asarray(sorted({str(c) for c in y}), dtype=object)
        return self

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        p_rest = self.gate_.predict_proba(X)[:, list(self.gate_.classes_).index(True)]
        inner = np.log(np.clip(self.model_.predict_proba(X), 1e-12, None))
        offset = dict(self.offsets)
        inner += np.asarray([float(offset.get(str(c), 0.0)) for c in self.model_.classes_])
        inner = np.exp(inner - inner.max(axis=1, keepdims=True))
        inner /= inner.sum(axis=1, keepdims=True)
        out = np.zeros((X.shape[0], len(self.classes_)), dtype=np.float64)
        index = {str(c): j for j, c in enumerate(self.classes_.tolist())}
        for j, c in enumerate(self.model_.classes_.tolist()):
            out[:, index[str(c)]] = p_rest * inner[:, j]
        if self.gate_label in index:
            out[:, index[self.gate_label]] = 1.0 - p_rest
        return out

    def predict(self, X: Any) -> NDArray[np.object_]:
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)], dtype=object)
