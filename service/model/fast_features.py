"""Text featurizers run without scikit-learn's per-call plumbing.

The text featurizer of a model (``training.pipeline.build_text_features``) is a Pipeline of
``ColumnText`` and ``UniqueRows`` around one vectorizer or a FeatureUnion of several (word n-grams
and character 4-grams in the default model). Each of those layers validates its input and output
again, and FeatureUnion runs its parts through joblib even with one job: about 1.6 ms per call,
whatever the batch size, about as much as the rest of tagging one article. ``compile_featurizer``
calls the same fitted vectorizers directly and stacks their blocks with scipy.

A compiled featurizer checks itself on its first batch: it also runs the pipeline, and if the two
matrices differ in any way (a future scikit-learn, say) it falls back to the pipeline for good.
Featurizers of another shape (target-aware heads) are not compiled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

from service.model.features import ColumnText, UniqueRows, unique_docs

logger = logging.getLogger(__name__)

Featurize = Callable[[Any], sparse.csr_matrix]


def tfidf_transform(vectorizer: TfidfVectorizer, docs: list[str]) -> sparse.csr_matrix:
    """``vectorizer.transform(docs)`` without its input and output checks: the same counts, tf
    scaling, idf weights and l2 row norms, by the same routines."""
    _, X = vectorizer._count_vocab(docs, fixed_vocab=True)
    X = sparse.csr_matrix(X, dtype=np.float64)
    if vectorizer.binary:
        X.data.fill(1)
    tfidf = vectorizer._tfidf
    if tfidf.sublinear_tf:
        np.log(X.data, X.data)
        X.data += 1.0
    if hasattr(tfidf, "idf_"):
        X.data *= tfidf.idf_[X.indices]
    inplace_csr_row_normalize_l2(X)
    return X


def _transform(part: Any) -> Callable[[list[str]], Any]:
    """The fast path of one fitted vectorizer: TF-IDF with l2 rows through ``tfidf_transform``."""
    if isinstance(part, TfidfVectorizer) and part.norm == "l2" and hasattr(part, "_tfidf"):
        return lambda docs: tfidf_transform(part, docs)
    return part.transform  # type: ignore[no-any-return]


def _parts(featurizer: Any) -> tuple[ColumnText, list[Any]] | None:
    """The ColumnText and the fitted vectorizers of a plain text featurizer, else None."""
    if type(featurizer) is not Pipeline or len(featurizer.steps) != 2:
        return None
    (_, columns), (_, unique) = featurizer.steps
    if (
        type(columns) is not ColumnText
        or type(unique) is not UniqueRows
        or not hasattr(unique, "transformer_")
    ):
        return None
    inner = unique.transformer_
    if type(inner) is not FeatureUnion:
        return columns, [inner]
    if inner.transformer_weights or any(
        isinstance(t, str) or t is None for _, t in inner.transformer_list
    ):  # "drop" / "passthrough" / weighted blocks: not this shape
        return None
    return columns, [t for _, t in inner.transformer_list]


class CompiledFeaturizer:
    """Calls ``featurizer``'s parts directly; the first batch is checked against the pipeline."""

    def __init__(self, featurizer: Any, columns: ColumnText, parts: list[Any]) -> None:
        self._featurizer = featurizer
        self._columns = columns
        self._parts = [_transform(part) for part in parts]
        self._verdict: bool | None = None  # None: not checked yet; False: use the pipeline
        self._lock = threading.Lock()

    def _fast(self, X: Any) -> sparse.csr_matrix:
        docs, inverse = unique_docs(self._columns.transform(X))
        blocks = [sparse.csr_matrix(transform(docs)) for transform in self._parts]
        out = sparse.hstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
        return out if len(docs) == len(inverse) else out[inverse]

    def _pipeline(self, X: Any) -> sparse.csr_matrix:
        return sparse.csr_matrix(self._featurizer.transform(X))

    def __call__(self, X: Any) -> sparse.csr_matrix:
        if self._verdict is None:
            with self._lock:
                if self._verdict is None:
                    expected = self._pipeline(X)
                    try:
                        self._verdict = same_matrix(self._fast(X), expected)
                    except Exception:  # e.g. a scikit-learn whose internals moved
                        logger.exception("compiled featurizer failed")
                        self._verdict = False
                    if not self._verdict:
                        logger.warning("compiled featurizer differs from the pipeline: using the pipeline")
                    return expected
        return self._fast(X) if self._verdict else self._pipeline(X)


def same_matrix(a: sparse.csr_matrix, b: sparse.csr_matrix) -> bool:
    """Equal shape, dtype and stored entries, in the same order."""
    return bool(
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data)
    )


def compile_featurizer(featurizer: Any) -> Featurize:
    """A faster equal ``featurizer.transform`` for the plain text featurizer, else that method."""
    parts = _parts(featurizer)
    if parts is None:
        return featurizer.transform  # type: ignore[no-any-return]
    return CompiledFeaturizer(featurizer, *parts)
