"""Custom scikit-learn transformers that live inside saved models.

They are here, not in ``training``, because the server must be able to load them; every class
here is on the artifact loader's trusted-type list.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

#: Column order of the raw input matrix every model receives (see ``articles_to_matrix``).
COLUMNS = ("title", "text", "target")


class ColumnText(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Joins some columns of the raw (n, 3) object matrix into one string per row."""

    def __init__(self, columns: tuple[str, ...] = ("title", "text"), sep: str = "\n") -> None:
        self.columns = columns
        self.sep = sep

    def fit(self, X: Any, y: Any = None) -> ColumnText:
        self.indices_ = [COLUMNS.index(c) for c in self.columns]
        return self

    def transform(self, X: NDArray[np.object_]) -> list[str]:
        if len(self.indices_) == 1:
            return [str(v) for v in X[:, self.indices_[0]]]
        return [self.sep.join(str(v) for v in row if v) for row in X[:, self.indices_]]


class CompactTfidfVectorizer(TfidfVectorizer):  # type: ignore[misc]
    """TfidfVectorizer whose vocabulary is saved as one array of terms (in index order) instead of
    a dict of a few hundred thousand separately stored entries: skops writes and reads it ~100x faster."""

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(super().__getstate__())
        vocabulary = state.pop("vocabulary_", None)
        if vocabulary is not None:
            terms = [""] * len(vocabulary)
            for term, index in vocabulary.items():
                terms[int(index)] = term
            state["vocabulary_terms_"] = np.asarray(terms, dtype=str)
        state.pop("stop_words_", None)  # only informative, and can be huge
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        terms = state.pop("vocabulary_terms_", None)
        if terms is not None:
            state["vocabulary_"] = {str(term): i for i, term in enumerate(terms.tolist())}
        super().__setstate__(state)
