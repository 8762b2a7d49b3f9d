"""The fitted multi-head model that an artifact stores.

One ``ArticleModel`` holds named featurizers (each computed once per batch, shared by the heads
that use it) and one classifier per head. Every head yields a score matrix of shape
(n_articles, n_labels) with values in [0, 1]: per-label probabilities for a multi-label head,
a probability distribution for a single-label head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from service.model.fast_features import Featurize, compile_featurizer
from service.model.features import COLUMNS
from service.model.linear import Scorer, compile_scorer, dense_coef


class ArticleFields(Protocol):
    """What the model reads of an article (``service.core.types.Article`` has these)."""

    @property
    def title(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def target(self) -> str: ...


def articles_to_matrix(articles: Sequence[ArticleFields]) -> NDArray[np.object_]:
    """The raw input every model takes: an (n, 3) object matrix of title, text, target."""
    matrix = np.empty((len(articles), len(COLUMNS)), dtype=object)
    for i, article in enumerate(articles):
        matrix[i, 0] = article.title
        matrix[i, 1] = article.text
        matrix[i, 2] = article.target
    return matrix


class ArticleModel:
    """Featurizers shared by heads, and a classifier per head.

    ``head_featurizer[head]`` names the featurizer whose output the head's classifier reads.
    Classifiers expose ``predict_proba`` (columns in the order of ``labels[head]``).
    """

    def __init__(
        self,
        featurizers: dict[str, Any],
        classifiers: dict[str, Any],
        head_featurizer: dict[str, str],
        labels: dict[str, list[str]],
    ) -> None:
        self.featurizers = featurizers
        self.classifiers = classifiers
        self.head_featurizer = head_featurizer
        self.labels = labels

    def features(self, X: NDArray[np.object_], heads: Sequence[str]) -> dict[str, Any]:
        """Each featurizer that ``heads`` need, computed once."""
        needed = {self.head_featurizer[h] for h in heads}
        return {name: self.featurizer(name)(X) for name in sorted(needed)}

    def featurizer(self, name: str) -> Featurize:
        """The featurizer's ``transform``, or an equal compiled one (``fast_features``), built on
        first use."""
        cache: dict[str, Featurize] = self.__dict__.setdefault("_featurizers", {})
        if name not in cache:
            cache[name] = compile_featurizer(self.featurizers[name])
        return cache[name]

    def scores(
        self, X: NDArray[np.object_], heads: Sequence[str], features: dict[str, Any] | None = None
    ) -> dict[str, NDArray[np.float64]]:
        """Score matrices per head, one vectorized call per head."""
        feats = features if features is not None else self.features(X, heads)
        out: dict[str, NDArray[np.float64]] = {}
        for head in heads:
            out[head] = np.asarray(self.scorer(head)(feats[self.head_featurizer[head]]), dtype=np.float64)
        return out

    def scorer(self, head: str) -> Scorer:
        """The head's ``predict_proba``, or an equal compiled one (``linear``), built on first use."""
        cache: dict[str, Scorer] = self.__dict__.setdefault("_scorers", {})
        if head not in cache:
            clf = self.classifiers[head]
            n_features = getattr(clf, "n_features_in_", None)
            compiled = compile_scorer(clf, n_features) if isinstance(n_features, int) else None
            scorer = compiled if compiled is not None else clf.predict_proba
            if len(self.labels[head]) == 1 and getattr(clf, "multilabel_", True) is False:
                scorer = _label_column(scorer)
            cache[head] = scorer
        return cache[head]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def feature_names(self, head: str) -> NDArray[np.str_]:
        """Names of the features a head reads (cached: building them takes a while)."""
        key = self.head_featurizer[head]
        cache: dict[str, NDArray[np.str_]] = self.__dict__.setdefault("_feature_names", {})
        if key not in cache:
            featurizer = self.featurizers[key]
            last = featurizer[-1] if hasattr(featurizer, "steps") else featurizer
            cache[key] = np.asarray(last.get_feature_names_out(), dtype=str)
        return cache[key]

    def explain(self, features_row: Any, head: str, label_index: int, k: int = 5) -> tuple[str, ...]:
        """The ``k`` words or phrases that pushed ``label_index`` of ``head`` up most for one article.

        Works for linear classifiers (coefficients times feature values); other classifiers
        give no explanation. Character n-grams (a reader cannot tell what "oop" means) and
        dense pair features are never named: only word n-grams are.
        """
        coef = linear_coefficients(self.classifiers[head], label_index)
        if coef is None:
            return ()
        row = sparse.csr_matrix(features_row)
        contributions = row.multiply(coef.reshape(1, -1)).tocsr()
        values = contributions.data
        names = self.feature_names(head)
        out: list[str] = []
        for i in np.argsort(-values):
            if values[i] <= 0 or len(out) == k:
                break
            term = readable_term(str(names[contributions.indices[i]]))
            if term is not None and term not in out:
                out.append(term)
        return tuple(out)


#: Prefixes FeatureUnion puts before a word n-gram's name (``text__word__north korea``).
_WORD_PREFIXES = ("text__", "target__", "word__", "title__", "evidence__")


def _label_column(scorer: Scorer) -> Scorer:
    """A multi-label head with one label (a binary tagger): scikit-learn's one-vs-rest fits it as
    a binary problem and scores both classes, not-the-label first. Keep the label's column."""

    def score(X: Any) -> NDArray[np.float64]:
        return np.asarray(scorer(X), dtype=np.float64)[:, 1:]

    return score


def readable_term(name: str) -> str | None:
    """A feature name as a reader sees it: the word n-gram, or None for a feature that is not one
    (character n-grams, pair features)."""
    while name.startswith(_WORD_PREFIXES):
        name = name.split("__", 1)[1]
    if "|" in name:  # a per-target interaction feature: "<target>|word__<n-gram>"
        return readable_term(name.split("|", 1)[1])
    if "__" in name and name.split("__", 1)[0] in ("char", "char4", "pair"):
        return None
    return name


def linear_coefficients(clf: Any, label_index: int) -> NDArray[np.float64] | None:
    """Coefficients for one output label of a (possibly wrapped) linear classifier, or None."""
    if hasattr(clf, "estimators_") and not hasattr(clf, "coef_"):  # OneVsRestClassifier
        coef = getattr(clf.estimators_[label_index], "coef_", None)  # None for a constant label
        return None if coef is None else dense_coef(coef)[0]
    if hasattr(clf, "calibrated_classifiers_"):  # CalibratedClassifierCV: average the folds
        coefs = [linear_coefficients(c.estimator, label_index) for c in clf.calibrated_classifiers_]
        kept = [c for c in coefs if c is not None]
        return np.asarray(np.mean(kept, axis=0), dtype=np.float64) if kept else None
    if hasattr(clf, "steps"):  # Pipeline ending in a linear model
        return linear_coefficients(clf.steps[-1][1], label_index)
    coef = getattr(clf, "coef_", None)
    if coef is None:
        return None
    dense = dense_coef(coef)
    if dense.shape[0] == 1:  # binary: one row, for the second class
        row: NDArray[np.float64] = dense[0] if label_index == 1 else -dense[0]
        return row
    return np.asarray(dense[label_index], dtype=np.float64)
