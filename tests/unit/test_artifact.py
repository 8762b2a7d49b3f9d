"""Model artifacts: round trip, refusal of tampered / malformed / unsafe ones, threshold tuning."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from service.core.errors import ArtifactError
from service.core.tagger import Tagger
from service.core.types import Article
from service.model.article_model import ArticleModel, articles_to_matrix
from service.model.artifact import (
    CARD_FILE,
    MODEL_FILE,
    LoadedModel,
    load_artifact,
    save_artifact,
    sha256_file,
)
from service.model.manifest import MANIFEST_FILE, read_manifest, write_manifest
from training.config import ThresholdConfig, load_config
from training.evaluate import tune_thresholds
from training.train import STARTER_CONFIG

TEXTS = [
    "North Korean troops were deployed to the Kursk region, officials said.",
    "The UN imposed new sanctions over the missile programme.",
    "Prisoners of war were exchanged after talks in the capital.",
    "The home side won the cup final after extra time.",
]


def manifest_fields(loaded: LoadedModel, version: str = "") -> dict[str, Any]:
    raw = loaded.manifest
    return {
        "name": raw.name,
        "version": version,
        "created_at": raw.created_at,
        "heads": raw.heads,
        "versions": raw.versions,
        "data": raw.data,
        "metrics": raw.metrics,
        "config": raw.config,
    }


def copy_artifact(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "artifact"
    shutil.copytree(src, dst)
    return dst


def scores(model: ArticleModel) -> dict[str, np.ndarray[Any, Any]]:
    X = articles_to_matrix([Article(str(i), t) for i, t in enumerate(TEXTS)])
    return model.scores(X, list(model.classifiers))


def test_round_trip_gives_the_same_predictions(loaded_model: LoadedModel, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    manifest = save_artifact(loaded_model.model, manifest_fields(loaded_model), out, "# {version}\n")
    assert sorted(p.name for p in out.iterdir()) == sorted([MODEL_FILE, MANIFEST_FILE, CARD_FILE])
    assert manifest.version  # derived from time and checksum when not given
    assert (out / CARD_FILE).read_text() == f"# {manifest.version}\n"
    again = load_artifact(out)
    assert again.manifest == manifest
    assert again.manifest.model_sha256 == sha256_file(out / MODEL_FILE)
    before, after = scores(loaded_model.model), scores(again.model)
    assert before.keys() == after.keys() == {"topics", "stance"}
    for head in before:
        np.testing.assert_allclose(after[head], before[head], rtol=0, atol=1e-12)
    articles = [Article(str(i), t) for i, t in enumerate(TEXTS)]
    old = [(h.labels, h.scores) for r in Tagger(loaded_model).tag(articles) for h in r.heads]
    new = [(h.labels, h.scores) for r in Tagger(again).tag(articles) for h in r.heads]
    assert old == new


def test_manifest_records_provenance(loaded_model: LoadedModel) -> None:
    raw = json.loads((loaded_model.path / MANIFEST_FILE).read_text())
    assert raw["format_version"] == 1 and raw["version"] == "v1"
    assert set(raw["versions"]) >= {"newstagger", "scikit-learn"}
    assert len(raw["data"]["train"][0]["sha256"]) == 64
    assert raw["model_sha256"] == sha256_file(loaded_model.path / MODEL_FILE)
    topics = next(h for h in raw["heads"] if h["name"] == "topics")
    assert topics["kind"] == "multi" and len(topics["thresholds"]) == len(topics["labels"])
    assert "micro" in raw["metrics"]["dev"]["topics"]


def test_save_refuses_a_non_empty_directory_and_writes_nothing(
    loaded_model: LoadedModel, tmp_path: Path
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not empty"):
        save_artifact(loaded_model.model, manifest_fields(loaded_model), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no staging directory left behind


def test_tampered_model_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    art = copy_artifact(model_dir, tmp_path)
    data = bytearray((art / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (art / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(art)


def test_manifest_with_another_checksum_is_refused(model_dir: Path, tmp_path: Path) -> None:
    art = copy_artifact(model_dir, tmp_path)
    raw = json.loads((art / MANIFEST_FILE).read_text())
    raw["model_sha256"] = "0" * 64
    (art / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(art)


def test_missing_manifest_is_refused(model_dir: Path, tmp_path: Path) -> None:
    art = copy_artifact(model_dir, tmp_path)
    (art / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"no {MANIFEST_FILE}"):
        load_artifact(art)


def test_missing_model_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    art = copy_artifact(model_dir, tmp_path)
    (art / MODEL_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"no {MODEL_FILE}"):
        load_artifact(art)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda raw: "{not json", "malformed manifest"),
        (lambda raw: json.dumps({k: v for k, v in raw.items() if k != "heads"}), "'heads'"),
        (lambda raw: json.dumps({**raw, "format_version": 99}), "format_version 99"),
        (
            lambda raw: json.dumps({**raw, "heads": [{**h, "kind": "ranked"} for h in raw["heads"]]}),
            "kind",
        ),
        (
            lambda raw: json.dumps(
                {**raw, "heads": [{**h, "thresholds": h["thresholds"][:1]} for h in raw["heads"]]}
            ),
            "thresholds",
        ),
        (lambda raw: json.dumps([raw]), "malformed manifest"),
    ],
    ids=["not-json", "no-heads", "future-format", "bad-kind", "threshold-count", "not-an-object"],
)
def test_malformed_manifest_is_refused(model_dir: Path, tmp_path: Path, change: Any, says: str) -> None:
    art = copy_artifact(model_dir, tmp_path)
    raw = json.loads((art / MANIFEST_FILE).read_text())
    (art / MANIFEST_FILE).write_text(change(raw))
    with pytest.raises(ArtifactError) as info:
        load_artifact(art)
    assert "malformed manifest" in str(info.value) and says in str(info.value)
    assert str(art / MANIFEST_FILE) in str(info.value)


def test_manifest_head_missing_from_the_model_is_refused(model_dir: Path, tmp_path: Path) -> None:
    art = copy_artifact(model_dir, tmp_path)
    raw = json.loads((art / MANIFEST_FILE).read_text())
    raw["heads"].append({"name": "region", "kind": "single", "labels": ["asia"]})
    write_manifest(art, raw)  # sealed, but not the model's
    with pytest.raises(ArtifactError, match="region"):
        load_artifact(art)


class Gadget:
    """A type no newstagger model contains."""

    def __init__(self) -> None:
        self.payload = "x"


@pytest.mark.parametrize(
    ("intruder", "type_name"),
    [
        (Gadget(), f"{__name__}.Gadget"),
        # skops trusts scikit-learn estimators by default; newstagger trusts only its own list
        (StandardScaler().fit(np.ones((3, 2))), "sklearn.preprocessing._data.StandardScaler"),
    ],
    ids=["foreign-class", "untrusted-sklearn-type"],
)
def test_untrusted_type_is_refused_and_named(
    loaded_model: LoadedModel, tmp_path: Path, intruder: Any, type_name: str
) -> None:
    model = loaded_model.model
    crafted = ArticleModel(
        model.featurizers, {**model.classifiers, "stance": intruder}, model.head_featurizer, model.labels
    )
    out = tmp_path / "crafted"
    save_artifact(crafted, manifest_fields(loaded_model, "evil"), out)  # manifest checksum is right
    assert read_manifest(out).model_sha256 == sha256_file(out / MODEL_FILE)
    with pytest.raises(ArtifactError) as info:
        load_artifact(out)
    assert "untrusted types" in str(info.value) and type_name in str(info.value)


def test_a_file_that_is_not_a_skops_archive_is_refused(model_dir: Path, tmp_path: Path) -> None:
    art = copy_artifact(model_dir, tmp_path)
    (art / MODEL_FILE).write_bytes(b"\x80\x04K\x01.")  # a pickle, not a skops zip
    raw = json.loads((art / MANIFEST_FILE).read_text())
    raw["model_sha256"] = sha256_file(art / MODEL_FILE)
    write_manifest(art, raw)
    with pytest.raises(ArtifactError, match="unreadable model file"):
        load_artifact(art)


def threshold_config(**kwargs: Any) -> ThresholdConfig:
    # rare labels take ``default``; a config that offers another fallback is told to use it
    if "fallback" in {f.name for f in fields(ThresholdConfig)}:
        kwargs.setdefault("fallback", "default")
    return ThresholdConfig(**kwargs)


def test_tune_thresholds_picks_the_f1_best_cut_and_rare_labels_get_the_default() -> None:
    # label 0: positives score high (best cut between 0.6 and 0.7)
    # label 1: positives score low (best cut between 0.1 and 0.2): a fixed 0.5 would miss them all
    # label 2: a single dev positive, too few to tune on
    s0 = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.05]
    y0 = [1, 1, 1, 0, 0, 0, 0, 0]
    s1 = [0.3, 0.25, 0.2, 0.1, 0.06, 0.05, 0.05, 0.05]
    y1 = [1, 1, 1, 0, 0, 0, 0, 0]
    s2 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.99]
    y2 = [0, 0, 0, 0, 0, 0, 0, 1]
    Y = np.array([y0, y1, y2], dtype=np.int8).T
    S = np.array([s0, s1, s2], dtype=np.float64).T
    cfg = threshold_config(default=0.5, min_positives=3, grid_steps=19)
    t0, t1, t2 = tune_thresholds(Y, S, cfg)
    assert 0.6 < t0 <= 0.7
    assert 0.1 < t1 <= 0.2
    assert t2 == 0.5
    for j, t in enumerate((t0, t1)):
        predicted = S[:, j] >= t
        assert (predicted == Y[:, j].astype(bool)).all()  # the tuned cut gives F1 = 1 on these


def test_tune_thresholds_prefers_f1_over_accuracy() -> None:
    # 2 positives among 10: the accuracy-best cut predicts nothing; the F1-best one finds both
    s = np.array([0.35, 0.3, 0.32, 0.31, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.int8)
    [t] = tune_thresholds(y[:, None], s[:, None], threshold_config(min_positives=2, grid_steps=19))
    predicted = s >= t
    tp = int((predicted & (y == 1)).sum())
    f1 = 2 * tp / (predicted.sum() + y.sum())
    assert tp >= 1 and f1 >= 2 * 2 / (4 + 2)  # at least as good as cutting just under 0.3


def test_scale_multiplies_every_tuned_cut_off_and_the_default_model_uses_it() -> None:
    s = np.array([[0.9, 0.1], [0.8, 0.3], [0.7, 0.25], [0.3, 0.2], [0.2, 0.05], [0.1, 0.05]])
    Y = np.array([[1, 1], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0]], dtype=np.int8)
    plain = tune_thresholds(Y, s, threshold_config(min_positives=1, grid_steps=19))
    scaled = tune_thresholds(Y, s, threshold_config(min_positives=1, grid_steps=19, scale=0.85))
    assert scaled == pytest.approx([0.85 * t for t in plain], abs=1e-4)
    assert load_config(STARTER_CONFIG).thresholds.scale == 0.85  # `newstagger train` with no --data
    assert ThresholdConfig().scale == 1.0  # your own data: the cross-validated cut-offs as they are


def test_thresholds_not_tuned_when_tuning_is_off() -> None:
    Y = np.array([[1, 0], [1, 1], [1, 1], [0, 1]], dtype=np.int8)
    S = np.array([[0.9, 0.1], [0.8, 0.9], [0.7, 0.8], [0.1, 0.7]])
    assert tune_thresholds(Y, S, threshold_config(tune=False, default=0.4, min_positives=1)) == [0.4, 0.4]
