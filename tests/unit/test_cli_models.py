"""The model CLI end to end: train --out and evaluate (--json, gold labels the model does not know,
no model). `tag`: test_cli_tag.py; the registry's models list/show/promote/rollback:
test_cli_registry.py."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from service.model.artifact import MODEL_FILE
from service.model.manifest import MANIFEST_FILE
from tests.conftest import run_cli
from tests.helpers import STARTER, starter_rows


def test_train_out_writes_an_artifact_and_shows_progress(cli_model: tuple[Path, str, str]) -> None:
    out, stdout, stderr = cli_model
    assert f"model newstagger cli-1 written to {out}" in stdout
    assert "[1/2] tuning thresholds" in stderr and "[2/2] done" in stderr  # cv_folds = 0: fit + tune
    n_dev = starter_rows("dev")
    assert f"dev score: {n_dev} dev rows (the cut-offs were tuned on these rows: optimistic)" in stdout
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["version"] == "cli-1"
    assert manifest["config"]["features"]["use_char"] is False
    assert {h["name"] for h in manifest["heads"]} == {"topics", "stance"}
    card = (out / "MODEL_CARD.md").read_text()
    assert "cli-1" in card and "micro-F1" in card


def test_train_out_refuses_an_existing_artifact(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], fast_config: Path
) -> None:
    out = cli_model[0]
    before = (out / MODEL_FILE).read_bytes()
    code, _, err = run_cli(
        capsys, "train", "--data", str(STARTER / "dev.jsonl"), "--config", str(fast_config), "--out", str(out)
    )
    assert code == 2 and "not empty" in err
    assert (out / MODEL_FILE).read_bytes() == before
    # refused before any training (as a bad --version is): one line, no progress before it
    said = f"newstagger train: {out} exists and is not empty; choose a new --out"
    assert err.strip().splitlines() == [said]
    code, _, err = run_cli(capsys, "train", "--config", str(fast_config), "--out", str(out / MODEL_FILE))
    assert code == 2 and err.strip().splitlines() == [
        f"newstagger train: {out / MODEL_FILE} is a file, not a directory; choose a new --out"
    ]


def test_evaluate_prints_metrics_and_writes_json(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "metrics.json"
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--model",
        str(cli_model[0]),
        "--data",
        str(STARTER / "dev.jsonl"),
        "--json",
        str(report),
    )
    assert code == 0
    rows = len((STARTER / "dev.jsonl").read_text(encoding="utf-8").splitlines())
    assert f"model newstagger cli-1 on {rows} rows" in out
    assert "topics: micro-F1" in out and "stance: accuracy" in out and "confusion" in out
    metrics = json.loads(report.read_text())
    topics, stance = metrics["topics"], metrics["stance"]
    assert topics["kind"] == "multi" and topics["n"] == rows
    assert 0.5 < topics["micro"]["f1"] <= 1.0 and 0.0 < topics["macro"]["f1"] <= 1.0
    assert "troop_deployment" in topics["per_label"]
    assert stance["kind"] == "single" and 0.0 < stance["accuracy"] <= 1.0
    matrix = stance["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == rows and len(matrix) == 3
    # the figures on the command line and in the manifest agree
    dev = json.loads((cli_model[0] / MANIFEST_FILE).read_text())["metrics"]["dev"]
    assert dev["topics"]["micro"] == topics["micro"]


def test_evaluate_reports_gold_labels_the_model_does_not_know_and_counts_them_as_errors(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in (STARTER / "dev.jsonl").read_text().splitlines() if line]
    for r in rows[:3]:
        r["stance"] = r["stance"].capitalize()  # "Neutral" for `neutral`
    for r in rows[3:5]:
        r["topics"] = [*r["topics"], "brand_new_topic"]
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "metrics.json"
    code, out, _ = run_cli(
        capsys, "evaluate", "--model", str(cli_model[0]), "--data", str(data), "--json", str(report)
    )
    assert code == 0
    stance, topics = (json.loads(report.read_text())[h] for h in ("stance", "topics"))
    assert stance["n"] == topics["n"] == len(rows)  # no row dropped
    ids = [r["id"] for r in rows]
    assert stance["unknown_gold"]["count"] == 3 and stance["unknown_gold"]["examples"] == ids[:3]
    assert topics["unknown_gold"] == {
        "count": 2,
        "rows": 2,
        "labels": {"brand_new_topic": 2},
        "examples": ids[3:5],
    }
    assert f"stance: accuracy {stance['accuracy']:.4f}" in out
    assert "! 3 gold label(s) in 3 row(s) that the model does not know, counted as errors" in out
    assert "'brand_new_topic' x2" in out
    # the three rows count as wrong (a label no prediction matches); the new topic as missed
    assert sum(map(sum, stance["confusion"]["matrix"])) == len(rows)
    assert stance["per_label"][rows[0]["stance"]]["support"] >= 1
    assert stance["per_label"][rows[0]["stance"]]["f1"] == 0.0
    assert topics["per_label"]["brand_new_topic"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 2,
    }


def test_tag_and_evaluate_with_no_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "evaluate", "--model", str(tmp_path), "--data", str(STARTER / "dev.jsonl"))
    assert code == 2 and "no model in" in err and "newstagger train" in err


def test_evaluate_refuses_a_json_path_it_cannot_write_before_scoring(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """It was found only after the model was loaded and every row scored."""
    out = tmp_path / "missing" / "m.json"
    code, _, err = run_cli(
        capsys, "evaluate", "--model", str(tmp_path), "--data", str(STARTER / "dev.jsonl"), "--json", str(out)
    )
    assert code == 2 and f"no directory {out.parent}" in err and "no model in" not in err


def test_evaluate_writes_its_json_even_when_stdout_is_closed(
    cli_model: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`newstagger evaluate ... --json m.json | head` exited 0 without m.json: the report was printed
    first, and the reader closing the pipe ended the command before the file was written."""
    from service.cli import main

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    report = tmp_path / "m.json"
    argv = ["evaluate", "--model", str(cli_model[0]), "--data", str(STARTER / "dev.jsonl"), "--quiet"]
    assert main([*argv, "--json", str(report)]) == 0
    assert json.loads(report.read_text())["stance"]["n"] == starter_rows("dev")
