"""benchmarks/quality.py: official metrics and FNC-1 stories (quality_datasets.py), and CV/dev/test
columns end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import load_script

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    """The per-dataset part of ``benchmarks/quality.py``: preparation and official figures."""
    return load_script(REPO / "benchmarks" / "quality_datasets.py", "quality_datasets_bench")


def test_fnc_score_is_the_official_weighting(quality: ModuleType) -> None:
    labels = ["agree", "disagree", "discuss", "unrelated"]
    # gold rows, predicted columns: 2 agree right, 1 agree called discuss, 1 disagree called
    # unrelated, 3 unrelated right, 1 unrelated called agree
    matrix = [[2, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 3]]
    score = 2 * 1.0 + 1 * 0.25 + 0 + 3 * 0.25 + 0
    best = 4 * 1.0 + 4 * 0.25
    assert quality.fnc_score({"labels": labels, "matrix": matrix}) == pytest.approx(score / best)
    m = {"per_label": {"FAVOR": {"f1": 0.6}, "AGAINST": {"f1": 0.8}}}
    assert quality.official("semeval2016_task6", m) == {"f_avg": pytest.approx(0.7)}


def test_fnc_stories_are_components_over_related_pairs(quality: ModuleType) -> None:
    pairs = [
        {"headline": "h1", "body_id": "1", "stance": "agree"},
        {"headline": "h1", "body_id": "2", "stance": "discuss"},  # h1 joins bodies 1 and 2
        {"headline": "h2", "body_id": "3", "stance": "agree"},
        {"headline": "h2", "body_id": "1", "stance": "unrelated"},  # unrelated pairs join nothing
        {"headline": "h3", "body_id": "10", "stance": "unrelated"},
    ]
    assert quality.fnc_stories(pairs) == {"1": "story-1", "2": "story-1", "3": "story-3", "10": "story-10"}


def _fnc_split(folder: Path, name: str, stories: range) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bodies, pairs = [], []
    topics = ["storm", "election", "vaccine", "bridge", "strike", "merger", "drought", "rocket"]
    for s in stories:
        topic = topics[s % len(topics)]
        bodies.append(
            {"body_id": str(s), "text": f"The {topic} report number {s}: officials confirmed the {topic}."}
        )
        stances = ["agree", "disagree", "discuss", "unrelated"]
        for k, stance in enumerate(stances):
            words = topic if stance != "unrelated" else topics[(s + 3) % len(topics)]
            pairs.append(
                {
                    "id": f"{name}-{s}-{k}",
                    "headline": f"{words} claim {s}",
                    "body_id": str(s),
                    "stance": stance,
                }
            )
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    with (folder / "bodies.jsonl").open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(b) + "\n" for b in bodies)


def test_quality_reports_cv_dev_and_test_columns(tmp_path: Path) -> None:
    data, test = tmp_path / "data", tmp_path / "test"
    _fnc_split(data / "fnc1", "train", range(0, 24))
    _fnc_split(data / "fnc1", "dev", range(24, 30))
    _fnc_split(test / "fnc1", "test", range(30, 36))
    out = tmp_path / "raw.json"
    argv = [sys.executable, str(REPO / "benchmarks" / "quality.py"), "--datasets-dir", str(data)]
    result = subprocess.run(  # noqa: S603 - our own script
        [*argv, "--test-dir", str(test), "--only", "fnc1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    raw: dict[str, Any] = json.loads(out.read_text())["fnc1"]
    assert raw["cv"]["rows"] == 96 and raw["dev"]["rows"] == 24 and raw["test"]["rows"] == 24
    assert raw["cv_folds"] == "5-fold, grouped by story (24 groups)"
    for column in ("cv", "dev", "test"):
        assert 0.0 <= raw[column]["fnc_score"] <= 1.0 and "disagree_f1" in raw[column]
    assert (
        "| fnc1 | FNC score " in result.stdout
        and "| CV estimate (train) | dev (scored only) | test |" in (result.stdout)
    )
    missing = subprocess.run(  # noqa: S603
        [*argv, "--test-dir", str(tmp_path / "nowhere"), "--only", "fnc1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "nowhere/fnc1/test.jsonl" in missing.stderr
