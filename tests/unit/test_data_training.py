"""What `train` does with data it cannot learn from: a failed run writes nothing, heads a classifier
cannot learn are refused before fitting (a one-label head is a binary tagger), --dev rows that are
training rows are refused or recorded, and a held-out split must leave something to fit."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.core.errors import DataError
from service.core.types import Article
from service.model.article_model import articles_to_matrix
from service.model.artifact import load_artifact
from tests.helpers import binary_rows, data_row, good_data_rows, write_jsonl
from training.config import TrainConfig
from training.train import train

CONFIG = TrainConfig()


def test_failed_train_leaves_no_artifact_directory(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [*good_data_rows(5), data_row("r0")])
    out = tmp_path / "models" / "m1"
    with pytest.raises(DataError, match=re.escape(f"{bad}:6:")):
        train([bad], out, CONFIG)
    assert not out.exists()
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_failed_train_on_the_command_line_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(data_row("a")).encode() + b"\n\xff\xfe\n")
    registry = tmp_path / "registry"
    assert main(["train", "--data", str(bad), "--registry", str(registry)]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err
    assert not (registry / "current").exists()
    leftovers = list((registry / "versions").iterdir()) if (registry / "versions").exists() else []
    assert leftovers == []
    out = tmp_path / "out"
    assert main(["train", "--data", str(bad), "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"stance": "neutral"}, "head 'stance' has one class ('neutral') in the training data ("),
        ({"topics": []}, "head 'topics' has no labels in any row of the training data ("),
        ({"topics": ["economy"]}, "head 'topics' has one label ('economy') and every training row has it"),
    ],
)
def test_heads_a_classifier_cannot_learn_are_refused_before_fitting(
    tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    """Each once crashed `train` with a scikit-learn traceback."""
    path = write_jsonl(tmp_path / "train.jsonl", [r | change for r in binary_rows()])
    out = tmp_path / "model"
    with pytest.raises(DataError) as info:
        train([path], out, CONFIG)
    assert says in str(info.value) and str(path) in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize("folds", [2, 0])
def test_a_multi_label_head_with_one_label_is_a_binary_tagger(tmp_path: Path, folds: int) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", binary_rows())
    config = replace(CONFIG, thresholds=replace(CONFIG.thresholds, cv_folds=folds))
    manifest = train([path], tmp_path / "model", config, [path] if folds == 0 else [])
    assert manifest.metrics["cv" if folds else "dev"]["topics"]["per_label"]["economy"]["f1"] > 0.5
    model = load_artifact(tmp_path / "model").model
    texts = ["Interest rates and inflation, the central bank said.", "An art exhibition at the museum."]
    X = articles_to_matrix([Article(str(i), t) for i, t in enumerate(texts)])
    scores = model.scores(X, ["topics"])["topics"]
    assert scores.shape == (2, 1) and scores[0, 0] > 0.5 > scores[1, 0]


def test_dev_rows_that_are_training_rows_are_refused_or_allowed_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Such a dev score was once called held out, with no warning; then warned about only after
    training. Now refused before training when more than 5% are shared, unless --allow-dev-overlap;
    warned about and recorded otherwise."""
    rows = binary_rows()
    train_path = write_jsonl(tmp_path / "train.jsonl", rows)
    same_text = rows[3] | {"id": "new-id", "text": rows[3]["text"].upper()}
    dev_path = write_jsonl(tmp_path / "dev.jsonl", [rows[0], same_text, data_row("fresh", "A quiet day.")])
    config = tmp_path / "c.toml"
    config.write_text("[thresholds]\ncv_folds = 2\n")
    out = tmp_path / "model"
    args = ["train", "--quiet", "--data", str(train_path), "--dev", str(dev_path), "--config", str(config)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 of the 3 --dev rows are also training rows (same id, or same title and text)" in err
    assert "ids 'r0', 'new-id'" in err and "--allow-dev-overlap" in err and not out.exists()
    registry = ["--registry", str(tmp_path / "reg")]
    assert main([*args, *registry, "--version", "v1", "--allow-dev-overlap"]) == 0
    captured = capsys.readouterr()
    assert "warning: 2 of the 3 --dev rows are also training rows (same id" in captured.err
    assert "dev score: 3 dev rows (WARNING: 2 of them are also training rows" in captured.out
    out = tmp_path / "reg" / "versions" / "v1"
    assert "WARNING: 2 of them are also training rows" in (out / "MODEL_CARD.md").read_text()
    assert load_artifact(out).manifest.data["dev_overlap"] == 2
    assert main(["models", "show", "v1", "--summary", *registry]) == 0
    assert "WARNING: 2 of them are also training rows: not held out" in capsys.readouterr().out
    # a few repeated articles, as real corpora have (5% or fewer): warned about and recorded
    few = [rows[0]] + [data_row(f"fresh-{i}", f"A quiet day number {i}.") for i in range(20)]
    few_path = write_jsonl(tmp_path / "few.jsonl", few)
    assert main([*args[:5], str(few_path), *args[6:], *registry, "--version", "v2"]) == 0
    assert "warning: 1 of the 21 --dev rows are also training rows" in capsys.readouterr().err
    assert load_artifact(tmp_path / "reg" / "versions" / "v2").manifest.data["dev_overlap"] == 1
    clean = write_jsonl(tmp_path / "clean.jsonl", [data_row("fresh", "A quiet day.")])
    assert main([*args[:5], str(clean), *args[6:], "--out", str(tmp_path / "m2")]) == 0
    assert "warning" not in capsys.readouterr().err.lower()


def test_a_head_left_with_one_class_after_the_held_out_split_is_refused(tmp_path: Path) -> None:
    """Without cross-validation or --dev, cut-offs are tuned on a held-out share: what is left
    to fit on must still be learnable (once a scikit-learn traceback)."""
    path = write_jsonl(tmp_path / "train.jsonl", binary_rows(20))
    config = replace(CONFIG, dev_fraction=0.95, thresholds=replace(CONFIG.thresholds, cv_folds=0))
    with pytest.raises(DataError, match="95% of the rows held out for cut-offs"):
        train([path], tmp_path / "model", config)
    assert not (tmp_path / "model").exists()
