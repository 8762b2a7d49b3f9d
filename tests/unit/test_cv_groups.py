"""Grouped cross-validation: `train --group-field FIELD` / `group_field` keep rows that share a
value (a story, a body) in one fold, reproducibly, and the field never becomes a head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.cli import main
from service.core.errors import DataError
from service.model.artifact import load_artifact
from tests.helpers import write_jsonl
from training.config import TrainConfig
from training.cv import assign_folds, cross_validated_scores
from training.data import load_dataset

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def story_rows(stories: int = 12, per_story: int = 4) -> list[dict[str, Any]]:
    """Stories of near-duplicate rows sharing no word with other stories but filler, half of them
    "pro": only a model that saw the story's other rows can get its stance right."""
    rows = []
    for s in range(stories):
        words = f"the report said {WORDS[s % len(WORDS)]}{s} zulu{s} yankee{s}"
        stance = ["pro", "con"][s % 2]
        for k in range(per_story):
            rows.append({"id": f"s{s}-{k}", "text": f"{words} {k}", "story": f"st{s}", "stance": stance})
    return rows


def test_groups_never_straddle_folds_and_the_seed_decides() -> None:
    groups = [f"g{i % 7}" for i in range(40)]
    parts = assign_folds(40, 3, seed=1, groups=groups)
    assert sorted(np.concatenate(parts).tolist()) == list(range(40))  # every row held out once
    for part in parts:
        others = {groups[i] for p in parts if p is not part for i in p}
        assert not {groups[i] for i in part} & others
    again = assign_folds(40, 3, seed=1, groups=groups)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    shuffled = [assign_folds(40, 3, seed=s, groups=groups) for s in range(2, 8)]
    assert any(not np.array_equal(p[0], parts[0]) for p in shuffled)


def test_fewer_groups_than_folds_is_one_clear_error() -> None:
    with pytest.raises(DataError, match=r"^2 groups: too few for 5-fold grouped cross-validation"):
        assign_folds(10, 5, seed=1, groups=["a", "b"] * 5)


def test_the_group_field_survives_loading_and_is_not_a_head(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", story_rows(3, 2))
    data = load_dataset([path], TrainConfig(), group_field="story")
    assert list(data.heads) == ["stance"]
    assert data.groups() == ["st0", "st0", "st1", "st1", "st2", "st2"]
    assert load_dataset([path], TrainConfig()).heads.keys() == {"stance", "story"}  # not grouped: a head


def test_a_row_without_the_group_field_names_file_line_and_field(tmp_path: Path) -> None:
    rows = story_rows(3, 2)
    del rows[3]["story"]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train\.jsonl:4: field 'story': missing"):
        load_dataset([path], TrainConfig(), group_field="story")


def test_grouped_folds_do_not_leak_near_duplicates(tmp_path: Path) -> None:
    """Ungrouped, every held-out row has its story's twins in training and is "predicted"; grouped,
    the story is unseen and its stance a coin flip: the honest figure."""
    data = load_dataset([write_jsonl(tmp_path / "t.jsonl", story_rows())], TrainConfig(), group_field="story")
    gold = [g[0] for g in data.labels("stance")]
    labels = sorted(set(gold))

    def accuracy(groups: list[str] | None) -> float:
        scores = cross_validated_scores(data, TrainConfig(), 4, groups=groups)["stance"]
        return float(np.mean([labels[j] == g for j, g in zip(scores.argmax(axis=1), gold, strict=True)]))

    assert accuracy(None) > 0.9
    assert accuracy(data.groups()) <= 0.6


def test_cli_train_group_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", story_rows())
    out = tmp_path / "model"
    args = ["train", "--data", str(train_file), "--out", str(out), "--quiet"]
    assert main([*args, "--group-field", "story"]) == 0
    stdout, stderr = capsys.readouterr()
    assert stderr == ""
    manifest = load_artifact(out).manifest
    assert [h.name for h in manifest.heads] == ["stance"]
    assert manifest.data["cv"] == {"folds": 5, "rows": 48, "group_field": "story", "groups": 12}
    assert manifest.config["group_field"] == "story"
    assert "5-fold out-of-fold scores on 48 training rows, grouped by 'story' (12 groups)" in stdout
    assert main([*args[:-3], "--out", str(tmp_path / "m2"), "--group-field", "desk"]) == 2
    assert "train.jsonl:1: field 'desk': missing" in capsys.readouterr().err
    few = tmp_path / "few.toml"
    few.write_text('group_field = "story"\n[thresholds]\ncv_folds = 13\n', encoding="utf-8")
    assert main([*args[:-3], "--out", str(tmp_path / "m3"), "--config", str(few)]) == 2
    assert "12 groups: too few for 13-fold grouped cross-validation" in capsys.readouterr().err


def test_a_class_too_rare_for_the_folds_is_one_clear_error(tmp_path: Path) -> None:
    """Two classes, one of them on a single row: the fold that holds that row out would fit one
    class. Refused before any fitting, naming the head and the class."""
    rows = [{"id": f"r{i}", "text": f"report {WORDS[i % 10]} {i}", "stance": "pro"} for i in range(20)]
    rows.append({"id": "rare", "text": "a lone dissent", "stance": "con"})
    data = load_dataset([write_jsonl(tmp_path / "train.jsonl", rows)], TrainConfig())
    with pytest.raises(DataError, match=r"head 'stance': class\(es\) 'con' have too few training rows"):
        cross_validated_scores(data, TrainConfig(), 5)
