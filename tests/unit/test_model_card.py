"""The model card says how far its figures reach."""

from __future__ import annotations

from pathlib import Path

from service.cli import main
from tests.helpers import binary_rows, write_jsonl

NOTE = "Trained on the project's starter set"


def test_a_model_trained_on_the_starter_set_warns_that_real_news_scores_lower(model_dir: Path) -> None:
    card = (model_dir / "MODEL_CARD.md").read_text()
    limits = card[card.index("## Limits") :]
    assert NOTE in limits and "real news" in limits


def test_a_model_trained_on_other_data_has_no_such_note(tmp_path: Path) -> None:
    train_path = write_jsonl(tmp_path / "train.jsonl", binary_rows())
    config = tmp_path / "c.toml"
    config.write_text("[thresholds]\ncv_folds = 2\n")
    out = tmp_path / "model"
    args = ["train", "--quiet", "--data", str(train_path), "--config", str(config), "--out", str(out)]
    assert main(args) == 0
    assert NOTE not in (out / "MODEL_CARD.md").read_text()
