"""`train` and `evaluate` read each data file once: the rows checked before training (the dev/eval
overlap, the label limits) are the rows trained on, scored and gated on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import training.data
from service.cli import main
from service.model.registry import ModelRegistry
from tests.unit.test_label_limits import write_rows

FAST = "[thresholds]\ncv_folds = 2\n[features]\nword_min_df = 1\n"


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """How many times each data file is read."""
    counts: Counter[Path] = Counter()
    read = training.data.read_records

    def counting(path: Path) -> Any:
        counts[Path(path)] += 1
        return read(path)

    monkeypatch.setattr(training.data, "read_records", counting)
    return counts


def small_data(tmp_path: Path) -> tuple[Path, Path, Path]:
    train = write_rows(tmp_path / "train.jsonl", [[f"l{i % 3}"] for i in range(30)])
    dev_lines = [
        json.dumps({"id": f"d{i}", "text": f"dev text {i} troops", "topics": [f"l{i % 3}"]}) for i in range(9)
    ]
    dev = tmp_path / "dev.jsonl"
    dev.write_text("\n".join(dev_lines) + "\n")
    config = tmp_path / "config.toml"
    config.write_text(FAST)
    return train, dev, config


def test_train_reads_each_file_once_through_the_quality_gate(tmp_path: Path, reads: Counter[Path]) -> None:
    train, dev, config = small_data(tmp_path)
    models = tmp_path / "models"
    argv = ["train", "--quiet", "--data", str(train), "--dev", str(dev), "--config", str(config)]
    assert main([*argv, "--registry", str(models), "--version", "v1"]) == 0
    assert reads == {train: 1, dev: 1}
    reads.clear()
    # the gate scores the --dev rows with both models: still read once
    assert main([*argv, "--registry", str(models), "--version", "v2", "--promote-if-better"]) == 0
    assert reads == {train: 1, dev: 1}
    assert ModelRegistry(models).current() == "v2"


def test_evaluate_reads_its_file_once(tmp_path: Path, reads: Counter[Path]) -> None:
    train, dev, config = small_data(tmp_path)
    assert (
        main(
            ["train", "--quiet", "--data", str(train), "--config", str(config), "--out", str(tmp_path / "m")]
        )
        == 0
    )
    reads.clear()
    assert main(["evaluate", "--quiet", "--model", str(tmp_path / "m"), "--data", str(dev)]) == 0
    assert reads == {dev: 1}
