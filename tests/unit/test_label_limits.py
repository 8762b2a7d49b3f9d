"""Bounded training inputs: a head with more labels than its ``max_labels`` is refused before any
fitting (it would train for many minutes), and errors quoting labels stay short however many or
long the labels are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.core.errors import DataError
from training.config import MAX_LABELS, TrainConfig, load_config
from training.data import load_dataset
from training.evaluate import headline
from training.trainable import check_trainable

WORDS = [
    "troops",
    "border",
    "talks",
    "sanctions",
    "missile",
    "grain",
    "harvest",
    "election",
    "court",
    "strike",
]


def write_rows(path: Path, labels: list[Any], head: str = "topics") -> Path:
    """One row per entry of ``labels`` (a label list, or one label), with a short distinct text."""
    lines = [
        json.dumps({"id": f"r{i}", "text": f"{WORDS[i % 10]} {WORDS[i // 10 % 10]} report {i}", head: value})
        for i, value in enumerate(labels)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A head over the limit would train for minutes: fail loudly if training starts."""

    def train(*_: Any, **__: Any) -> Any:
        raise AssertionError("trained before refusing")

    monkeypatch.setattr("training.train.train", train)
    monkeypatch.setattr("training.tune.tune", train)


def test_a_head_over_the_default_limit_is_refused_before_any_fitting(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    n = MAX_LABELS + 1
    # every label on one row, but label_0000 on three more
    data = write_rows(tmp_path / "many.jsonl", [[f"label_{i:04d}"] for i in range(n)] + [["label_0000"]] * 3)
    for extra in ([], ["--tune"]):
        out = tmp_path / "model"
        assert main(["train", "--quiet", "--data", str(data), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert f"head 'topics' has {n} distinct labels in the training data ({data})" in err
        assert f"over the limit of {MAX_LABELS}" in err
        # the rarest first, a few of them, then how many more
        assert "the rarest: 'label_0001', 'label_0002', 'label_0003', 'label_0004', 'label_0005'" in err
        assert f"and {n - 5} more" in err and "'label_0000'" not in err
        assert f"{n - 1} of them are on fewer than 3 rows" in err
        assert f"[heads.topics] max_labels = {n}" in err  # how to go on
        assert len(err) < 1200 and err.count("\n") == 1
        assert not out.exists()


def test_max_labels_in_the_config_sets_the_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_rows(tmp_path / "four.jsonl", [[f"l{i % 4}"] for i in range(40)])
    config = tmp_path / "config.toml"
    fast = "[thresholds]\ncv_folds = 2\n[features]\nword_min_df = 1\n"
    config.write_text(f"[heads.topics]\nmax_labels = 3\n{fast}")
    argv = ["train", "--quiet", "--data", str(data), "--config", str(config)]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    assert "head 'topics' has 4 distinct labels in the training data" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    config.write_text(f"[heads.topics]\nmax_labels = 4\n{fast}")  # at the limit: trained
    assert main([*argv, "--out", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model" / "manifest.json").exists()


def test_max_labels_must_be_at_least_one(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[heads.topics]\nmax_labels = 0\n")
    with pytest.raises(DataError, match=r"\[heads.topics\]: max_labels must be at least 1, not 0"):
        load_config(config)


def test_a_single_label_head_and_a_configured_label_set_are_limited_too(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "stance.jsonl", [f"s{i % 6}" for i in range(12)], head="stance")
    config = tmp_path / "config.toml"
    config.write_text('[heads.stance]\nkind = "single"\nmax_labels = 5\n')
    with pytest.raises(DataError, match="head 'stance' has 6 distinct labels in the training data"):
        check_trainable(load_dataset([data], load_config(config)))
    labels = ", ".join(f'"s{i}"' for i in range(7))
    config.write_text(f'[heads.stance]\nkind = "single"\nmax_labels = 6\nlabels = [{labels}]\n')
    with pytest.raises(DataError, match="head 'stance' has 7 distinct labels in its configured labels"):
        check_trainable(load_dataset([data], load_config(config)))


def test_labels_seen_once_are_trained_not_refused(tmp_path: Path) -> None:
    """Rare labels are kept (each gets the pooled cut-off): only the count is bounded."""
    data = write_rows(tmp_path / "rare.jsonl", [["common"]] * 10 + [["once"], ["twice"], ["twice"], []])
    check_trainable(load_dataset([data], TrainConfig()))


def test_labels_not_in_the_configured_set_are_quoted_few_and_short(tmp_path: Path) -> None:
    unknown = [f"{i:02d}-" + "x" * 1000 for i in range(40)]
    data = write_rows(tmp_path / "unknown.jsonl", [["known", *unknown]])
    config = tmp_path / "config.toml"
    config.write_text('[heads.topics]\nlabels = ["known", "other"]\n')
    with pytest.raises(DataError) as info:
        load_dataset([data], load_config(config))
    message = str(info.value)
    assert message.startswith(f"{data}:1: field 'topics': label(s) '00-xxx")
    assert (
        "'04-" in message
        and "'05-" not in message
        and "and 35 more not in the configured set of 2" in message
    )
    assert len(message) < 600


def test_evaluate_quotes_unknown_gold_labels_short() -> None:
    long = "y" * 1000
    metrics = {
        "topics": {
            "kind": "single",
            "accuracy": 0.5,
            "macro_f1": 0.5,
            "n": 2,
            "unknown_gold": {"count": 1, "rows": 1, "labels": {long: 1}, "examples": ["r1"]},
        }
    }
    line = headline(metrics).splitlines()[1]
    assert "'yyyy" in line and long not in line and len(line) < 300
