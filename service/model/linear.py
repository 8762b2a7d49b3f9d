"""Linear heads scored as one matrix product, without scikit-learn's per-call input checks.

A multi-label head is a OneVsRestClassifier of one binary model per label. scikit-learn scores it
with one ``predict_proba`` per label, and each call validates its input again (type, sparsity,
finiteness, feature names): about 0.3 ms per label, whatever the batch size. For a batch of one
article that is most of the model's time. ``compile_scorer`` turns such a classifier into its
weights, so a batch costs one sparse-dense product and a logistic squash.

Only classifiers whose scores are known to be ``link(X @ W + b)`` are compiled, and a compiled
scorer is kept only if it gives the classifier's own scores on probe rows (else the head keeps
scikit-learn's path): a model with another classifier, or a future scikit-learn that scores
differently, is served as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from service.model.classifiers import SigmoidLinearSVC

Scorer = Callable[[Any], NDArray[np.float64]]

#: Weights above this many bytes (labels x features x 8) stay in scikit-learn's own form.
MAX_WEIGHT_BYTES = 64 * 1024 * 1024
PROBE_ROWS = 16
TOLERANCE = 1e-9


class LinearScorer:
    """Scores ``link(X @ weights + bias)``; ``constant`` columns (labels seen with one value in
    training) always score their value. ``link``: "sigmoid" per column (``scale`` times the
    margin), "softmax" across columns, or "normalised" (sigmoid, rows summed to 1)."""

    def __init__(
        self,
        weights: NDArray[np.float64],
        bias: NDArray[np.float64],
        link: str,
        scale: float = 1.0,
        constant: dict[int, float] | None = None,
        binary: bool = False,
    ) -> None:
        self.weights = weights
        self.bias = bias
        self.link = link
        self.scale = scale
        self.constant = constant or {}
        self.binary = binary

    def __call__(self, X: Any) -> NDArray[np.float64]:
        margin = np.asarray(X @ self.weights, dtype=np.float64) + self.bias
        if self.link == "softmax":
            return np.asarray(softmax(self.scale * margin, axis=1), dtype=np.float64)
        scores = np.asarray(expit(self.scale * margin), dtype=np.float64)
        for j, value in self.constant.items():
            scores[:, j] = value
        if self.binary:  # one weight column: the scores of class 0 and class 1
            return np.column_stack([1.0 - scores[:, 0], scores[:, 0]])
        if self.link == "normalised":
            scores /= scores.sum(axis=1, keepdims=True)
        return scores


def _binary_weights(est: Any) -> tuple[NDArray[np.float64], float, float] | None:
    """(w, b, scale) of a fitted binary linear model whose positive score is expit(scale * (x.w + b))."""
    if type(est) is LogisticRegression and est.coef_.shape[0] == 1:
        return dense_coef(est.coef_)[0], float(est.intercept_[0]), 1.0
    if type(est) is SigmoidLinearSVC and est.coef_.shape[0] == 1:
        return dense_coef(est.coef_)[0], float(est.intercept_[0]), 2.0
    return None


def _one_vs_rest(clf: OneVsRestClassifier, n_features: int) -> LinearScorer | None:
    columns, biases, scales, constant = [], [], set(), {}
    for j, est in enumerate(clf.estimators_):
        if hasattr(est, "y_"):  # scikit-learn's _ConstantPredictor: a label with one value
            constant[j] = float(np.ravel(est.y_)[0])
            columns.append(np.zeros(n_features))
            biases.append(0.0)
            continue
        parts = _binary_weights(est)
        if parts is None:
            return None
        columns.append(parts[0])
        biases.append(parts[1])
        scales.add(parts[2])
    if len(scales) > 1 or len(columns) < 2:
        return None
    link = "sigmoid" if clf.multilabel_ else "normalised"
    return LinearScorer(
        np.column_stack(columns), np.asarray(biases), link, scales.pop() if scales else 1.0, constant
    )


def _candidates(clf: Any, n_features: int) -> list[LinearScorer]:
    """Compiled forms ``clf`` may have; the probe picks the one that scores as ``clf`` does."""
    if isinstance(clf, OneVsRestClassifier):
        scorer = _one_vs_rest(clf, n_features)
        return [] if scorer is None else [scorer]
    if type(clf) not in (LogisticRegression, SigmoidLinearSVC):
        return []
    weights, bias = dense_coef(clf.coef_).T, np.asarray(clf.intercept_, dtype=np.float64)
    scale = 2.0 if type(clf) is SigmoidLinearSVC else 1.0
    if weights.shape[1] == 1:
        return [LinearScorer(weights, bias, "sigmoid", scale, binary=True)]
    return [LinearScorer(weights, bias, "softmax", scale), LinearScorer(weights, bias, "normalised", scale)]


def compile_scorer(clf: Any, n_features: int, seed: int = 0) -> Scorer | None:
    """A faster scorer equal to ``clf.predict_proba`` (checked on probe rows), or None."""
    if n_features * max(1, len(getattr(clf, "classes_", []))) * 8 > MAX_WEIGHT_BYTES:
        return None
    probe = _probe(n_features, seed)
    try:
        expected = np.asarray(clf.predict_proba(probe), dtype=np.float64)
        for scorer in _candidates(clf, n_features):
            got = scorer(probe)
            if got.shape == expected.shape and np.allclose(got, expected, rtol=0, atol=TOLERANCE):
                return scorer
    except (AttributeError, ValueError, TypeError):
        return None
    return None


def _probe(n_features: int, seed: int) -> sparse.csr_matrix:
    """Rows like tf-idf vectors (sparse, non-negative, unit length), a dense one and an empty one."""
    rng = np.random.default_rng(seed)
    rows = sparse.random(PROBE_ROWS, n_features, density=min(1.0, 40 / max(1, n_features)), random_state=rng)
    dense = np.abs(rng.normal(size=(1, n_features)))
    matrix = sparse.vstack([rows, sparse.csr_matrix(dense), sparse.csr_matrix((1, n_features))]).tocsr()
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1))).ravel()
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ matrix)


def dense_coef(coef: Any) -> NDArray[np.float64]:
    """A (possibly sparsified) coefficient matrix as a dense float array."""
    return np.asarray(coef.toarray() if sparse.issparse(coef) else coef, dtype=np.float64)
