"""``[features] char4``: within-word character 4-grams computed with numpy, as scikit-learn's
char_wb analyzer would give them, inside a model that saves, loads and scores the same."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from service.core.tagger import Tagger
from service.core.types import Article, TagOptions
from service.model.article_model import articles_to_matrix
from service.model.artifact import load_artifact
from service.model.ngrams import ByteNgramTfidf, _grams
from tests.conftest import FAST_CONFIG
from tests.helpers import STARTER
from training.data import load_dataset
from training.fit import fit_model
from training.train import train

TEXTS = [
    "North Korean troops were sent to Kursk.",
    "The  ministers   met in Geneva;\nsanctions were eased.",
    "a b",
    "",
]


def test_the_grams_are_char_wb_four_grams() -> None:
    analyzer = TfidfVectorizer(analyzer="char_wb", ngram_range=(4, 4)).build_analyzer()
    codes, doc = _grams(TEXTS)
    for i, text in enumerate(TEXTS):
        ours = sorted(int(c).to_bytes(4, "big").decode() for c in codes[doc == i])
        theirs = sorted(g for g in analyzer(text) if len(g) == 4)  # char_wb also emits " b " whole
        assert ours == theirs, text


def test_rows_are_l2_normalised_and_an_empty_text_is_a_zero_row() -> None:
    vectorizer = ByteNgramTfidf(min_df=1).fit(TEXTS)
    X = vectorizer.transform(TEXTS)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    assert np.allclose(norms, [1.0, 1.0, 0.0, 0.0])  # "a b": no word of 2+ letters
    assert vectorizer.transform([]).shape == (0, X.shape[1])
    assert (vectorizer.transform(["Kursk TROOPS"]) != vectorizer.transform(["kursk troops"])).nnz == 0


def test_a_char4_model_saves_loads_and_scores_the_same(tmp_path: Path) -> None:
    """The table left out of the saved model is rebuilt on load: the loaded model scores exactly
    as the one fitted in memory."""
    config = replace(
        FAST_CONFIG,
        features=replace(FAST_CONFIG.features, char4=True),
        thresholds=replace(FAST_CONFIG.thresholds, cv_folds=0),
    )
    in_memory = fit_model(load_dataset([STARTER / "dev.jsonl"], config), config)
    out = tmp_path / "model"
    train([STARTER / "dev.jsonl"], out, config, version="c4")
    loaded = load_artifact(out)
    union = loaded.model.featurizers["text"].steps[-1][1].transformer_
    char4 = dict(union.transformer_list)["char4"]
    assert isinstance(char4, ByteNgramTfidf) and "column_" not in char4.__getstate__()
    assert char4.column_.size == 1 << 22  # rebuilt on load
    X = articles_to_matrix([Article(id=str(i), text=t, title="News") for i, t in enumerate(TEXTS)])
    expected = in_memory.scores(X, ["topics"])["topics"]
    assert np.allclose(loaded.model.scores(X, ["topics"])["topics"], expected)
    # explanations name words only, never a hashed gram (they raised AttributeError before)
    [result] = Tagger(loaded).tag([Article("k", TEXTS[0], "News")], TagOptions(explain=True))
    terms = [t for head in result.heads for words in head.explanations.values() for t in words]
    assert terms and all("char4" not in t and t.replace(" ", "").isalpha() for t in terms), terms
