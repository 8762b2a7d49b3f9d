"""The parts behind model quality: target-aware transformers, safe round-trips, threshold fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from service.core.types import Article
from service.model.article_model import ArticleModel, articles_to_matrix
from service.model.artifact import load_artifact, save_artifact
from service.model.classifiers import SigmoidLinearSVC
from service.model.features import TargetInteraction, TargetTextPairs
from training.config import FeatureConfig, HeadConfig, ThresholdConfig, TrainConfig
from training.evaluate import tune_thresholds
from training.pipeline import build_featurizer, build_text_features

TWEETS = [
    ("we must protect the unborn, abortion is wrong", "Legalization of Abortion", "AGAINST"),
    ("my body my choice, keep abortion legal", "Legalization of Abortion", "FAVOR"),
    ("women deserve a choice about their own body", "Legalization of Abortion", "FAVOR"),
    ("every life is sacred from conception", "Legalization of Abortion", "AGAINST"),
    ("god is great, pray every day", "Atheism", "AGAINST"),
    ("religion is a fairy tale, no god needed", "Atheism", "FAVOR"),
    ("science not faith, there is no god", "Atheism", "FAVOR"),
    ("thank the lord for his blessings", "Atheism", "AGAINST"),
]


def _matrix(rows: list[tuple[str, str, str]]) -> np.ndarray:
    return articles_to_matrix([Article(str(i), text, "", target) for i, (text, target, _) in enumerate(rows)])


def _interaction(min_count: int = 2) -> TargetInteraction:
    text = build_text_features(FeatureConfig(use_char=False, word_min_df=1), ("text",))
    return TargetInteraction(text, "target", min_count=min_count, max_targets=10)


def test_interaction_puts_each_row_in_its_targets_block() -> None:
    X = _matrix(TWEETS)
    tx = _interaction().fit(X)
    F = tx.transform(X)
    d = len(tx.features_.get_feature_names_out())
    assert list(tx.targets_) == ["atheism", "legalization of abortion"]
    assert F.shape == (len(TWEETS), 3 * d)
    for i, (_, target, _) in enumerate(TWEETS):
        row = F[i].toarray().ravel()
        block = 1 + tx.targets_.tolist().index(" ".join(target.lower().split()))
        np.testing.assert_allclose(row[block * d : (block + 1) * d], row[:d])  # the shared copy, again
        other = 3 - block
        assert not row[other * d : (other + 1) * d].any()
    names = tx.get_feature_names_out()
    assert len(names) == F.shape[1] and names[d].startswith("atheism|")


def test_interaction_changes_features_when_only_the_target_changes() -> None:
    X = _matrix(TWEETS)
    tx = _interaction().fit(X)
    swapped = X.copy()
    swapped[:, 2] = ["Atheism" if t != "Atheism" else "Legalization of Abortion" for t in X[:, 2]]
    assert (tx.transform(X) != tx.transform(swapped)).nnz > 0
    unseen = X.copy()
    unseen[:, 2] = "Climate Change"
    F = tx.transform(unseen)
    assert F[:, F.shape[1] // 3 :].nnz == 0  # an unknown target: shared block only


def test_pair_features_see_how_text_relates_to_target() -> None:
    heads = ["Police deny the alien spaceship landing hoax", "Markets rally as rates fall"]
    body = "The police said reports of an alien spaceship landing were a hoax."
    X = articles_to_matrix([Article(str(i), body, h, "") for i, h in enumerate(heads)])
    pairs = TargetTextPairs(column="title").fit(X)
    F = pairs.transform(X).toarray()
    names = list(pairs.get_feature_names_out())
    assert F.shape == (2, len(names))
    cosine, share = names.index("cosine"), names.index("word_share")
    assert F[0, cosine] > F[1, cosine] and F[0, share] > F[1, share]
    assert F[0, names.index("target:hoax")] == 1 and F[1, names.index("target:hoax")] == 0


def test_target_aware_featurizer_and_classifiers_survive_a_safe_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(features=FeatureConfig(use_char=True, word_min_df=1, interaction_min_count=2))
    head = HeadConfig("single", "target")
    X = _matrix(TWEETS)
    y = [s for _, _, s in TWEETS]
    featurizer = build_featurizer(head, config)
    F = featurizer.fit_transform(X)
    svc = SigmoidLinearSVC(C=1.0).fit(F, y)
    multi = LogisticRegression().fit(F, y)
    model = ArticleModel(
        {"t": featurizer}, {"stance": svc, "other": multi}, {"stance": "t", "other": "t"},
        {"stance": [str(c) for c in svc.classes_], "other": [str(c) for c in multi.classes_]},
    )  # fmt: skip
    fields = {"name": "t", "version": "v", "created_at": "now", "heads": ()}
    save_artifact(model, fields, tmp_path / "m")
    loaded = load_artifact(tmp_path / "m").model
    before = model.scores(X, ["stance", "other"])
    after = loaded.scores(X, ["stance", "other"])
    for head_name in before:
        np.testing.assert_allclose(before[head_name], after[head_name])
        assert np.allclose(after[head_name].sum(axis=1), 1.0)
    feats = loaded.features(X, ["stance"])
    assert loaded.explain(feats["t"][1], "stance", list(svc.classes_).index("FAVOR"))


def test_rare_labels_take_the_pooled_cut_off_not_the_default() -> None:
    rng = np.random.default_rng(0)
    n = 400
    Y = np.zeros((n, 3), dtype=np.int8)
    Y[:100, 0] = 1
    Y[100:200, 1] = 1
    Y[399, 2] = 1  # one dev positive: too few to tune on
    scores = rng.uniform(0.0, 0.1, size=(n, 3))
    scores[Y == 1] += 0.2  # a linear model's positives: well above the rest, far below 0.5
    cfg = ThresholdConfig(min_positives=3, default=0.5, fallback="global")
    t = tune_thresholds(Y, scores, cfg)
    assert t[0] < 0.3 and t[1] < 0.3
    assert 0.1 <= t[2] <= 0.3  # pooled over all labels, so the rare label still fires
    assert (scores[:, 2] >= t[2]).sum() >= 1
    assert tune_thresholds(Y, scores, ThresholdConfig(fallback="default"))[2] == 0.5


def test_shrinkage_pulls_thin_labels_toward_the_pooled_cut_off() -> None:
    Y = np.zeros((200, 2), dtype=np.int8)
    Y[:100, 0] = 1
    Y[150, 1] = 1
    scores = np.linspace(0.0, 0.29, 200)[:, None].repeat(2, axis=1)
    scores[:100, 0] = 0.6
    scores[:5, 1] = 0.9  # a few confident negatives: alone, the thin label's cut-off goes high
    scores[150, 1] = 0.95
    tuned = tune_thresholds(Y, scores, ThresholdConfig(min_positives=1))
    shrunk = tune_thresholds(Y, scores, ThresholdConfig(min_positives=1, shrinkage=5.0))
    assert abs(shrunk[1] - shrunk[0]) < abs(tuned[1] - tuned[0])


def test_a_label_the_model_has_not_learnt_takes_the_fallback_instead_of_flooding() -> None:
    """Reuters' coconut-oil (3 positives, scored below most negatives): its best cut-off fired on
    every document, F1 0.008, and cost ~1.2 points of micro-F1 on dev."""
    rng = np.random.default_rng(1)
    n = 1000
    Y = np.zeros((n, 2), dtype=np.int8)
    Y[:200, 0] = 1
    Y[[10, 500, 900], 1] = 1
    scores = rng.uniform(0.0, 0.2, size=(n, 2))
    scores[:200, 0] += 0.5
    scores[[10, 500, 900], 1] = 0.02  # the lowest scores of all: only "fire on everything" finds them
    flooding = tune_thresholds(Y, scores, ThresholdConfig(min_f1=0.0))
    assert (scores[:, 1] >= flooding[1]).sum() > 0.8 * n
    guarded = tune_thresholds(Y, scores, ThresholdConfig())  # min_f1 = 0.1 by default
    assert guarded[1] == guarded[0]  # the pooled cut-off, like a label with too few positives
    assert (scores[:, 1] >= guarded[1]).sum() == 0


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[thresholds]\ncv_folds = "3"', "[thresholds]: cv_folds must be an integer, not '3'"),
        ('[thresholds]\nscale = "0.9"', "[thresholds]: scale must be a number, not '0.9'"),
        ('seed = "abc"', ": seed must be an integer, not 'abc'"),
        ("seed = -1", ": seed must be in [0, 2**32), not -1"),
        ("[classifier]\nC = -1", "[classifier]: C must be above 0, not -1"),
        ("[features]\nword_ngram_max = 0", "[features]: word_ngram_max must be at least 1, not 0"),
        ("[features]\nuse_char = 1", "[features]: use_char must be true or false, not 1"),
        ('ignore_fields = "story"', ": ignore_fields must be a list of strings, not 'story'"),
        ("group_field = 5", ": group_field must be a string, not 5"),
        ('[heads]\nstance = "single"', "[heads]: stance = 'single': a head is a table of options"),
        ("thresholds = 3", "[thresholds]: must be a table of options, not 3"),
    ],
)
def test_config_values_are_checked_for_type_and_range_on_load(tmp_path: Path, toml: str, says: str) -> None:
    """Each was once a traceback at training, or misread (a string as a set of characters)."""
    from service.core.errors import DataError
    from training.config import load_config

    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(DataError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}") and says in str(info.value)


def test_config_accepts_an_integer_for_a_number(tmp_path: Path) -> None:
    from training.config import load_config

    path = tmp_path / "c.toml"
    path.write_text('ignore_fields = ["story"]\n[classifier]\nC = 2\n[thresholds]\nscale = 1')
    config = load_config(path)
    assert config.classifier.C == 2.0 and isinstance(config.classifier.C, float)
    assert config.thresholds.scale == 1.0 and config.ignore_fields == ("story",)


@pytest.mark.parametrize("bad", ['[classifier]\nmodel = "forest"', '[thresholds]\nfallback = "zero"'])
def test_config_rejects_unknown_choices(tmp_path: Path, bad: str) -> None:
    from service.core.errors import DataError
    from training.config import load_config

    path = tmp_path / "c.toml"
    path.write_text(bad)
    with pytest.raises(DataError):
        load_config(path)


@pytest.mark.parametrize("target", ["", "target"])
def test_explanations_name_whole_words_even_with_character_n_grams(target: str) -> None:
    """A reader cannot tell what "oop" means: with character n-grams in the model, explanations
    still name only words and phrases of the article."""
    config = TrainConfig(features=FeatureConfig(use_char=True, word_min_df=1, interaction_min_count=2))
    featurizer = build_featurizer(HeadConfig("single", target), config)
    X = _matrix(TWEETS)
    y = [s for _, _, s in TWEETS]
    model = ArticleModel(
        {"t": featurizer.fit(X)}, {"stance": LogisticRegression(C=100).fit(featurizer.transform(X), y)},
        {"stance": "t"}, {"stance": sorted(set(y))},
    )  # fmt: skip
    features = model.features(X, ["stance"])["t"]
    for i, (text, about, stance) in enumerate(TWEETS):
        terms = model.explain(features[i], "stance", sorted(set(y)).index(stance), k=10)
        assert terms, text
        words = set(f"{text} {about}".lower().replace(",", " ").split())  # the target's words count
        assert all(set(term.split()) <= words for term in terms), (text, terms)
