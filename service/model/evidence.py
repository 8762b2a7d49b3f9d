"""FNC-style headline/body stance features: what the body's sentences closest to the headline say
about it (``SentenceEvidence``). Lives inside saved models, like ``service.model.features``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from service.model.features import (
    HEDGING_WORDS,
    REFUTING_WORDS,
    CompactTfidfVectorizer,
    column_values,
    unique_docs,
    word_tokens,
)

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_MAX_SIM_BINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8)
_NEGATIONS = frozenset(("not", "no", "never", "nor", "none", "cannot", "nothing", "nobody", "neither"))
#: Words that deny a claim (REFUTING_WORDS plus the debunking vocabulary of fact-check articles).
_DENIALS = frozenset(REFUTING_WORDS) | frozenset(
    (
        "fabricated",
        "satire",
        "satirical",
        "parody",
        "misleading",
        "baseless",
        "unfounded",
        "incorrect",
        "wrong",
    )
)
_HEDGES = frozenset(HEDGING_WORDS)
_DENY_OR_NEGATE = _DENIALS | _NEGATIONS
_EVIDENCE_STATS = (
    "max_sentence_cosine", "top_sentences_cosine", "first_sentence_cosine", "share_similar_sentences",
    "top_sentence_word_share", "top_denials", "body_denials", "top_negations", "top_hedges",
    "target_negated", "target_denies", "negation_parity_differs", "max_cosine_x_denials",
    "max_cosine_x_negations", "max_cosine_x_hedges", "target_denies_x_top_denials",
    "target_plain_x_top_denials",
)  # fmt: skip


def _sentences(text: str) -> list[str]:
    found = [s for s in _SENTENCE.split(text) if len(s.split()) >= 3]
    return found or [text]


class SentenceEvidence(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """What the body's sentences closest to the target say about it (FNC-style stance).

    Per row, the text is split into sentences and each is compared with the target (``column``:
    "title" or "target") by TF-IDF cosine. Features: the best, top-``top`` mean and first-sentence
    cosines (and the best one binned); denial, negation and hedging cue counts in those sentences
    and in the whole text, alone and times the best cosine; whether the target itself denies or
    negates; and the word n-grams of the ``top`` sentences (the "evidence"), once plainly and once
    more in a block used only when the target is itself a denial -- a body that says "hoax"
    agrees with a headline that says "hoax" but disagrees with one that states the claim. Nothing
    is tied to particular targets, so it carries over to new ones. Dense values are scaled by
    ``weight``; evidence n-grams need ``min_df`` distinct evidence texts.
    """

    def __init__(
        self,
        column: str = "title",
        weight: float = 1.0,
        top: int = 3,
        max_features: int = 50_000,
        min_df: int = 3,
    ) -> None:
        self.column = column
        self.weight = weight
        self.top = top
        self.max_features = max_features
        self.min_df = min_df

    def fit(self, X: Any, y: Any = None) -> SentenceEvidence:
        targets, texts = column_values(X, self.column), column_values(X, "text")
        self.tfidf_ = CompactTfidfVectorizer(
            stop_words="english", sublinear_tf=True, min_df=2, max_features=self.max_features
        ).fit(unique_docs(targets + texts)[0])
        evidence = [e for e, _ in self._evidence(targets, texts)]
        self.evidence_tfidf_ = CompactTfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, min_df=self.min_df, max_features=self.max_features
        ).fit(unique_docs(evidence)[0])
        return self

    def _evidence(self, targets: list[str], texts: list[str]) -> list[tuple[str, list[float]]]:
        """Per row: the top sentences joined, and the row's statistics."""
        target_docs, target_index = unique_docs(targets)
        T = sparse.csr_matrix(self.tfidf_.transform(target_docs))
        by_text: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            by_text.setdefault(text, []).append(i)
        out: list[tuple[str, list[float]]] = [("", [])] * len(texts)
        for text, rows in by_text.items():
            sents = _sentences(text)
            words = [set(word_tokens(s)) for s in sents]
            body_denials = float(any(_DENIALS & w for w in words))
            sims_all = np.asarray((self.tfidf_.transform(sents) @ T[target_index[rows]].T).toarray())
            for col, i in enumerate(rows):
                out[i] = self._row(targets[i], sents, words, sims_all[:, col], body_denials)
        return out

    def _row(
        self,
        target: str,
        sents: list[str],
        words: list[set[str]],
        sims: NDArray[np.float64],
        body_denials: float,
    ) -> tuple[str, list[float]]:
        order = np.argsort(-sims, kind="stable")[: self.top]
        top_words = [words[j] for j in order]
        target_words = set(word_tokens(target))
        content = target_words - ENGLISH_STOP_WORDS
        best = float(sims.max())
        denials = min(3, sum(len(_DENIALS & w) for w in top_words)) / 3
        negations = sum(len(_NEGATIONS & w) for w in top_words)
        hedges = min(3, sum(len(_HEDGES & w) for w in top_words)) / 3
        target_denies = float(bool(_DENY_OR_NEGATE & target_words))
        stats = [
            best,
            float(sims[order].mean()),
            float(sims[0]),
            float(np.mean(sims > 0.1)),
            max(len(content & w) / max(1, len(content)) for w in top_words),
            denials,
            body_denials,
            min(3, negations) / 3,
            hedges,
            float(bool(_NEGATIONS & target_words)),
            target_denies,
            float(len(_NEGATIONS & target_words) % 2 != negations % 2),
            best * denials,
            best * min(3, negations) / 3,
            best * hedges,
            target_denies * denials,
            (1 - target_denies) * denials,
        ]
        bins = [0.0] * len(_MAX_SIM_BINS)
        bins[int(np.searchsorted(_MAX_SIM_BINS, best, side="right")) - 1] = 1.0
        return " ".join(sents[j] for j in order), stats + bins

    def transform(self, X: Any) -> Any:
        rows = self._evidence(column_values(X, self.column), column_values(X, "text"))
        stats = np.asarray([s for _, s in rows], dtype=np.float64).reshape(len(rows), -1)
        evidence_docs, inverse = unique_docs([e for e, _ in rows])
        E = sparse.csr_matrix(self.evidence_tfidf_.transform(evidence_docs))[inverse]
        denies = sparse.diags(stats[:, _EVIDENCE_STATS.index("target_denies")])
        return sparse.hstack([sparse.csr_matrix(stats) * self.weight, E, denies @ E], format="csr")

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        words = [str(w) for w in self.evidence_tfidf_.get_feature_names_out()]
        names = [f"pair__{s}" for s in _EVIDENCE_STATS] + [f"pair__max_cosine>={b}" for b in _MAX_SIM_BINS]
        return np.asarray(names + words + [f"denying target|{w}" for w in words], dtype=object)
