"""FNC-style stance parts: sentence evidence features and the two-stage (gated) classifier."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from service.core.errors import DataError
from service.core.types import Article
from service.model.article_model import ArticleModel, articles_to_matrix
from service.model.artifact import MODEL_FILE, load_artifact, save_artifact, sha256_file
from service.model.classifiers import GatedClassifier
from service.model.evidence import SentenceEvidence
from service.model.manifest import MANIFEST_FILE, write_manifest
from training.config import (
    ClassifierConfig,
    FeatureConfig,
    HeadConfig,
    TrainConfig,
    config_to_toml,
    load_config,
)
from training.pipeline import build_classifier, build_featurizer

BODY = (
    "Residents of the small town were excited all week. "
    "The mayor said the story about an alien spaceship landing in the park was a hoax. "
    "Police confirmed nothing had landed there. Local shops reported a busy weekend."
)

#: (headline, body, stance): a tiny FNC-1. Bodies that debunk disagree with headlines stating the
#: claim and agree with headlines calling it a hoax; unrelated headlines share no words.
CATFISH = "A fisherman caught a giant catfish in the river on Sunday."
DEBUNK = "Officials said claims of a record catfish were false and a hoax."
SINGER = "The singer is reportedly thinking about leaving, sources said."
PAIRS = [
    ("Alien spaceship lands in town park", BODY, "disagree"),
    ("Spaceship landing in park was a hoax, mayor says", BODY, "agree"),
    ("Oil prices climb as markets rally", BODY, "unrelated"),
    ("Giant catfish caught in river", CATFISH, "agree"),
    ("Record catfish caught by angler", CATFISH, "agree"),
    ("Election results delayed", CATFISH, "unrelated"),
    ("Catfish record was fake", DEBUNK, "agree"),
    ("Angler lands record catfish", DEBUNK, "disagree"),
    ("Stocks tumble on rate fears", DEBUNK, "unrelated"),
    ("Singer may quit band", SINGER, "discuss"),
    ("Band singer quits", SINGER, "discuss"),
    ("New phone released", SINGER, "unrelated"),
]  # fmt: skip


def _matrix(pairs: list[tuple[str, str, str]]) -> np.ndarray:
    return articles_to_matrix([Article(str(i), body, head, "") for i, (head, body, _) in enumerate(pairs)])


def test_evidence_reads_the_sentences_closest_to_the_headline() -> None:
    X = _matrix(PAIRS)
    evidence = SentenceEvidence(column="title", top=1, min_df=1).fit(X)
    F = evidence.transform(X[:3]).toarray()
    names = [str(n) for n in evidence.get_feature_names_out()]
    assert F.shape == (3, len(names))
    best = names.index("pair__max_sentence_cosine")
    claim, hoax, unrelated = F[:, best]
    assert claim > 0.2 and hoax > 0.2 and unrelated == 0.0
    # the closest sentence is the mayor's denial: its words are the evidence, its "hoax" a denial cue
    assert F[0, names.index("hoax")] > 0 and F[0, names.index("residents")] == 0
    assert F[0, names.index("pair__top_denials")] > 0
    # the same evidence counts again only for a headline that itself denies ("hoax")
    denying = names.index("denying target|hoax")
    assert F[0, denying] == 0 and F[1, denying] > 0
    assert F[0, names.index("pair__target_plain_x_top_denials")] > 0
    assert F[1, names.index("pair__target_denies_x_top_denials")] > 0


def test_gated_classifier_decides_the_gate_label_first_and_offsets_favour_a_class() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n = 300
    X = rng.normal(size=(n, 3))
    y = np.where(X[:, 0] < -0.5, "unrelated", np.where(X[:, 1] > 0.8, "disagree", "agree")).astype(object)
    plain = GatedClassifier(LogisticRegression(), LogisticRegression(), "unrelated").fit(X, y)
    assert plain.classes_.tolist() == ["agree", "disagree", "unrelated"]
    P = plain.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert np.mean(plain.predict(X) == y) > 0.9
    # the gate alone decides "unrelated": the second stage never saw an unrelated row
    assert plain.model_.classes_.tolist() == ["agree", "disagree"]
    favoured = GatedClassifier(LogisticRegression(), LogisticRegression(), "unrelated", (("disagree", 2.0),))
    Q = favoured.fit(X, y).predict_proba(X)
    assert (Q[:, 1] >= P[:, 1] - 1e-12).all() and (favoured.predict(X) == "disagree").sum() > (
        plain.predict(X) == "disagree"
    ).sum()
    np.testing.assert_allclose(Q[:, 2], P[:, 2])  # the gate's share is untouched


def test_fnc_style_config_trains_and_survives_a_safe_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "fnc.toml"
    path.write_text(
        '[heads.stance]\nkind = "single"\ntarget = "title"\n'
        "[features]\nword_min_df = 1\ntarget_interaction = false\nsentence_evidence = true\n"
        '[classifier]\nmodel = "linear_svc"\ngate_label = "unrelated"\n'
        'offset_label = "disagree"\noffset = 1.0\n'
    )
    config = load_config(path)
    exported = tmp_path / "exported.toml"  # `newstagger models show --export-config` round-trips it
    exported.write_text(config_to_toml(json.loads(json.dumps(config.to_json()))))
    assert load_config(exported) == config
    head = config.heads["stance"]
    featurizer = build_featurizer(head, config)
    assert "evidence" in dict(featurizer.transformer_list)
    X = _matrix(PAIRS)
    y = [s for _, _, s in PAIRS]
    clf = build_classifier(head, config).fit(featurizer.fit_transform(X), y)
    assert isinstance(clf, GatedClassifier) and clf.offsets == (("disagree", 1.0),)
    model = ArticleModel({"t": featurizer}, {"stance": clf}, {"stance": "t"}, {"stance": list(clf.classes_)})
    save_artifact(model, {"name": "t", "version": "v", "created_at": "now", "heads": ()}, tmp_path / "m")
    loaded = load_artifact(tmp_path / "m").model
    np.testing.assert_allclose(loaded.scores(X, ["stance"])["stance"], model.scores(X, ["stance"])["stance"])
    old = _as_saved_before_the_move(tmp_path / "m", tmp_path / "old")
    np.testing.assert_allclose(old.scores(X, ["stance"])["stance"], model.scores(X, ["stance"])["stance"])


def _as_saved_before_the_move(src: Path, dst: Path) -> ArticleModel:
    """Load a copy of the artifact at ``src`` whose model file names SentenceEvidence,
    SigmoidLinearSVC and GatedClassifier where models saved before they moved did:
    ``service.model.features``."""
    schema = json.loads(zipfile.ZipFile(src / MODEL_FILE).read("schema.json"))
    text = json.dumps(schema)
    for new in ('"service.model.evidence"', '"service.model.classifiers"'):
        assert new in text
        text = text.replace(new, '"service.model.features"')
    dst.mkdir()
    with zipfile.ZipFile(src / MODEL_FILE) as zin, zipfile.ZipFile(dst / MODEL_FILE, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, text if item.filename == "schema.json" else zin.read(item.filename))
    raw = json.loads((src / MANIFEST_FILE).read_text())
    raw.pop("manifest_sha256")
    write_manifest(dst, {**raw, "model_sha256": sha256_file(dst / MODEL_FILE)})
    return load_artifact(dst).model


def test_new_knobs_default_to_todays_model(tmp_path: Path) -> None:
    config = TrainConfig()
    assert not config.features.sentence_evidence and config.classifier.gate_label == ""
    assert "evidence" not in dict(build_featurizer(HeadConfig("single", "title"), config).transformer_list)
    assert not isinstance(build_classifier(HeadConfig("single"), config), GatedClassifier)
    multi = TrainConfig(classifier=ClassifierConfig(gate_label="unrelated"))
    assert not isinstance(build_classifier(HeadConfig("multi"), multi), GatedClassifier)
    assert FeatureConfig().evidence_sentences == 8
    path = tmp_path / "c.toml"
    path.write_text('[classifier]\noffset_label = "disagree"\noffset = 1.0\n')
    with pytest.raises(DataError, match="gate_label"):
        load_config(path)
