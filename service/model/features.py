"""Custom scikit-learn transformers that live inside saved models.

They are here, not in ``training``, because the server must be able to load them; every class
here is on the artifact loader's trusted-type list. FNC-style sentence evidence is in
``service.model.evidence``, the classifiers in ``service.model.classifiers``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

#: Column order of the raw input matrix every model receives (see ``articles_to_matrix``).
COLUMNS = ("title", "text", "target")


class ColumnText(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Joins some columns of the raw (n, 3) object matrix into one string per row.

    ``repeats`` (one count per column, default 1 each) repeats a column's text, which weights its
    words more: a headline repeated twice counts its words twice.
    """

    def __init__(
        self, columns: tuple[str, ...] = ("title", "text"), sep: str = "\n", repeats: tuple[int, ...] = ()
    ) -> None:
        self.columns = columns
        self.sep = sep
        self.repeats = repeats

    def fit(self, X: Any, y: Any = None) -> ColumnText:
        self.indices_ = [COLUMNS.index(c) for c in self.columns]
        return self

    def transform(self, X: NDArray[np.object_]) -> list[str]:
        repeats = self.repeats or (1,) * len(self.indices_)
        if len(self.indices_) == 1 and repeats[0] == 1:
            return [str(v) for v in X[:, self.indices_[0]]]
        return [
            self.sep.join(self.sep.join([str(v)] * r) for v, r in zip(row, repeats, strict=True) if v)
            for row in X[:, self.indices_]
        ]

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        return np.asarray(self.columns, dtype=object)


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


_TOKEN = re.compile(r"[a-z0-9]+")

#: FNC-1-style cue words: refuting and hedging vocabulary (Riedel et al. 2017; the FNC baseline).
REFUTING_WORDS = (
    "fake", "fraud", "hoax", "false", "deny", "denies", "denied", "not", "despite", "nope", "doubt",
    "doubts", "bogus", "debunk", "debunked", "debunks", "prank", "pranks", "retract", "retracted", "refute",
    "refutes", "refuted", "dismiss", "dismissed", "myth", "untrue", "never", "no", "rumor", "rumour",
)  # fmt: skip
HEDGING_WORDS = (
    "alleged", "allegedly", "apparently", "appears", "claim", "claims", "claimed", "could", "reportedly",
    "reports", "report", "reported", "rumors", "rumours", "unconfirmed", "suggests", "may", "might",
    "purportedly", "supposedly", "unverified", "possibly", "believed", "according",
)  # fmt: skip
_SIM_BINS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7)


def word_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def column_values(X: Any, name: str) -> list[str]:
    return [str(v) for v in np.asarray(X, dtype=object)[:, COLUMNS.index(name)]]


def unique_docs(docs: list[str]) -> tuple[list[str], NDArray[np.intp]]:
    """The distinct docs in first-seen order, and each doc's index into them."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(d, len(index)) for d in docs), dtype=np.intp, count=len(docs))
    return list(index), inverse


class UniqueRows(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Runs ``transformer`` on the distinct input strings only, then spreads the rows back out.

    FNC-style data repeats one body in dozens of rows; this makes featurizing them cheap.
    Fitting on the distinct strings also counts document frequency per distinct text.
    """

    def __init__(self, transformer: Any = None) -> None:
        self.transformer = transformer

    def fit(self, X: list[str], y: Any = None) -> UniqueRows:
        self.transformer_ = clone(self.transformer).fit(unique_docs(list(X))[0])
        return self

    def transform(self, X: list[str]) -> Any:
        docs, inverse = unique_docs(list(X))
        return sparse.csr_matrix(self.transformer_.transform(docs))[inverse]

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        return np.asarray(self.transformer_.get_feature_names_out(), dtype=object)


def _normal_target(value: str) -> str:
    return " ".join(word_tokens(value))


class TargetInteraction(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Per-target copies of a featurizer's output: target-id x features interaction.

    For each of the (at most ``max_targets``) targets seen at least ``min_count`` times in
    training, the features of a row about that target are repeated in that target's own block, so
    a linear model learns a per-target weight for every n-gram ("abortion|pro life") next to the
    shared one (``shared``). Rows about other targets get only the shared block.
    """

    def __init__(
        self,
        features: Any = None,
        column: str = "target",
        min_count: int = 20,
        max_targets: int = 50,
        shared: bool = True,
    ) -> None:
        self.features = features
        self.column = column
        self.min_count = min_count
        self.max_targets = max_targets
        self.shared = shared

    def fit(self, X: Any, y: Any = None) -> TargetInteraction:
        self.fit_transform(X)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        counts = Counter(_normal_target(t) for t in column_values(X, self.column))
        common = [t for t, n in counts.most_common(self.max_targets) if n >= self.min_count and t]
        self.targets_ = np.asarray(sorted(common), dtype=str)
        self.features_ = clone(self.features)
        return self._expand(X, sparse.csr_matrix(self.features_.fit_transform(X)))

    def transform(self, X: Any) -> Any:
        return self._expand(X, sparse.csr_matrix(self.features_.transform(X)))

    def target_index(self, X: Any) -> NDArray[np.intp]:
        lookup = {str(t): i for i, t in enumerate(self.targets_.tolist())}
        found = [lookup.get(_normal_target(t), -1) for t in column_values(X, self.column)]
        return np.asarray(found, dtype=np.intp)

    def _expand(self, X: Any, F: Any) -> Any:
        n, d = F.shape
        k = self.target_index(X)
        per_row = np.diff(F.indptr)
        row_k = np.repeat(k, per_row)
        keep = row_k >= 0
        indptr = np.concatenate([[0], np.cumsum(per_row * (k >= 0))])
        blocks = sparse.csr_matrix(
            (F.data[keep], F.indices[keep] + d * row_k[keep], indptr), shape=(n, d * len(self.targets_))
        )
        return sparse.hstack([F, blocks], format="csr") if self.shared else blocks

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        base = np.asarray(self.features_.get_feature_names_out(), dtype=object)
        blocks = [np.asarray([f"{t}|{b}" for b in base], dtype=object) for t in self.targets_.tolist()]
        return np.concatenate(([base] if self.shared else []) + blocks)


class TargetTextPairs(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """How a row's text relates to its target (``column``: "target" or "title"): FNC-1-classic
    features, all dense-small and returned as a sparse matrix scaled by ``weight``.

    Cosine of the word TF-IDF vectors of target and text (and of target and the text's lead),
    binned too so a linear model can use it non-linearly; shares of the target's words, bigrams and
    trigrams found in the text; refuting/hedging cue words in target and text (one indicator each);
    negation parity.
    """

    def __init__(
        self, column: str = "target", weight: float = 1.0, lead_chars: int = 300, max_features: int = 50_000
    ) -> None:
        self.column = column
        self.weight = weight
        self.lead_chars = lead_chars
        self.max_features = max_features

    def fit(self, X: Any, y: Any = None) -> TargetTextPairs:
        docs, _ = unique_docs(column_values(X, self.column) + column_values(X, "text"))
        self.tfidf_ = CompactTfidfVectorizer(
            stop_words="english", sublinear_tf=True, min_df=2, max_features=self.max_features
        ).fit(docs)
        return self

    def _vectors(self, docs: list[str]) -> Any:
        unique, inverse = unique_docs(docs)
        return sparse.csr_matrix(self.tfidf_.transform(unique))[inverse]

    def transform(self, X: Any) -> Any:
        targets, texts = column_values(X, self.column), column_values(X, "text")
        T = self._vectors(targets)
        cos = np.asarray(T.multiply(self._vectors(texts)).sum(axis=1)).ravel()
        cos_lead = np.asarray(
            T.multiply(self._vectors([t[: self.lead_chars] for t in texts])).sum(axis=1)
        ).ravel()
        cues = (*REFUTING_WORDS, *HEDGING_WORDS)
        cache: dict[str, tuple[set[str], set[tuple[str, ...]], set[tuple[str, ...]], list[float]]] = {}

        def parse(doc: str) -> tuple[set[str], set[tuple[str, ...]], set[tuple[str, ...]], list[float]]:
            if doc not in cache:
                toks = word_tokens(doc)
                words = set(toks)
                neg = sum(t in ("not", "no", "never", "nor", "none", "cannot") for t in toks)
                cache[doc] = (
                    {t for t in words if t not in ENGLISH_STOP_WORDS},
                    set(zip(toks, toks[1:], strict=False)),
                    set(zip(toks, toks[1:], toks[2:], strict=False)),
                    [float(c in words) for c in cues] + [float(neg % 2)],
                )
            return cache[doc]

        rows = []
        for target, text in zip(targets, texts, strict=True):
            tw, tb, tt, tcue = parse(target)
            xw, xb, xt, xcue = parse(text)
            lead_w = parse(text[: self.lead_chars])[0]
            rows.append(
                [
                    len(tw & xw) / max(1, len(tw)),
                    len(tw & xw) / max(1, len(tw | xw)),
                    len(tw & lead_w) / max(1, len(tw)),
                    len(tb & xb) / max(1, len(tb)),
                    len(tt & xt) / max(1, len(tt)),
                    *tcue,
                    *xcue,
                    float(tcue[-1] == xcue[-1]),
                ]
            )
        dense = np.asarray(rows, dtype=np.float64).reshape(len(targets), -1)
        bins = np.zeros((len(targets), len(_SIM_BINS)), dtype=np.float64)
        bins[np.arange(len(targets)), np.searchsorted(_SIM_BINS, cos, side="right") - 1] = 1.0
        out = np.hstack([cos[:, None], cos_lead[:, None], bins, dense]) * self.weight
        return sparse.csr_matrix(out)

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        cues = (*REFUTING_WORDS, *HEDGING_WORDS, "negation_odd")
        names = ["cosine", "cosine_lead", *(f"cosine>={b}" for b in _SIM_BINS)]
        names += ["word_share", "word_jaccard", "lead_word_share", "bigram_share", "trigram_share"]
        names += [f"target:{c}" for c in cues] + [f"text:{c}" for c in cues] + ["negation_parity"]
        return np.asarray(names, dtype=object)


#: Classes that lived in this module until they moved; models saved before name them here.
_MOVED = {
    "SentenceEvidence": "service.model.evidence",
    "SigmoidLinearSVC": "service.model.classifiers",
    "GatedClassifier": "service.model.classifiers",
}


def __getattr__(name: str) -> Any:
    """Old models' ``service.model.features.<class>`` for the moved classes (imported lazily:
    ``service.model.evidence`` imports this module)."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
