"""Same data + same seed -> the same model: the same predictions, to the last bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.model.article_model import articles_to_matrix
from service.model.artifact import load_artifact
from tests.conftest import FAST_CONFIG
from tests.helpers import STARTER
from training.data import load_dataset
from training.train import train


def test_same_data_and_seed_give_the_same_predictions(tmp_path: Path) -> None:
    """The default config trained twice (on the starter's dev rows, to keep it quick)."""
    for name in ("first", "again"):
        train([STARTER / "dev.jsonl"], tmp_path / name, FAST_CONFIG, version="v1")
    first = load_artifact(tmp_path / "first")
    second = load_artifact(tmp_path / "again")
    assert second.manifest.heads == first.manifest.heads  # labels and tuned thresholds
    X = articles_to_matrix(load_dataset([STARTER / "shift.jsonl"], FAST_CONFIG).articles())
    heads = [h.name for h in first.manifest.heads]
    a, b = first.model.scores(X, heads), second.model.scores(X, heads)
    for head in heads:
        np.testing.assert_array_equal(a[head], b[head])


def test_the_manifest_records_what_retraining_needs(model_dir: Path) -> None:
    manifest = load_artifact(model_dir).manifest
    assert manifest.config["seed"] == FAST_CONFIG.seed
    assert manifest.config == json.loads(json.dumps(FAST_CONFIG.to_json()))
    (train_file,) = manifest.data["train"]
    assert (
        train_file["path"].endswith("train.jsonl")
        and len(train_file["sha256"]) == 64
        and train_file["rows"] > 0
    )
    assert len(manifest.data["dev"][0]["sha256"]) == 64
    assert {"newstagger", "scikit-learn", "numpy", "python"} <= set(manifest.versions)
