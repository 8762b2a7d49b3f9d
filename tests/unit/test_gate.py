"""The quality gate: promote, refuse, tie, tolerance, new and dropped heads, and the CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.model.artifact import LoadedModel
from service.model.manifest import HeadSpec
from service.model.registry import ModelRegistry
from tests.conftest import FAST_CONFIG
from tests.helpers import STARTER, starter_rows
from training.data import Dataset, load_dataset, read_data
from training.eval_set import load_eval_set
from training.gate import compare_models, format_comparison, head_metric

FAST_TOML = "[thresholds]\ncv_folds = 0\n"


@pytest.fixture(scope="module")
def dev_set() -> Dataset:
    return load_dataset([STARTER / "dev.jsonl"], FAST_CONFIG)


def with_manifest(model: LoadedModel, version: str, **changes: object) -> LoadedModel:
    return replace(model, manifest=replace(model.manifest, version=version, **changes))


def blunted(model: LoadedModel, version: str) -> LoadedModel:
    """The same model with topic thresholds so high it almost never predicts a topic: worse."""
    heads = tuple(
        replace(h, thresholds=tuple(0.999 for _ in h.thresholds)) if h.kind == "multi" else h
        for h in model.manifest.heads
    )
    return with_manifest(model, version, heads=heads)


def test_tie_promotes(loaded_model: LoadedModel, dev_set: Dataset) -> None:
    decision = compare_models(loaded_model, with_manifest(loaded_model, "v2"), dev_set)
    assert decision.promote
    assert decision.current_score == decision.new_score
    assert "tie" in decision.reason
    table = format_comparison(decision)
    assert "PROMOTE" in table and "topics" in table and "stance" in table and "+0.0000" in table


def test_worse_model_is_refused_and_better_promoted(loaded_model: LoadedModel, dev_set: Dataset) -> None:
    worse = blunted(loaded_model, "v2")
    decision = compare_models(loaded_model, worse, dev_set)
    assert not decision.promote
    assert decision.new_score is not None and decision.current_score is not None
    assert decision.new_score < decision.current_score
    topics = next(r for r in decision.heads if r.head == "topics")
    stance = next(r for r in decision.heads if r.head == "stance")
    assert topics.delta is not None and topics.delta < -0.1
    assert stance.delta == 0.0
    assert "REFUSE" in format_comparison(decision)
    # the other way round the same pair promotes
    assert compare_models(worse, with_manifest(loaded_model, "v3"), dev_set).promote


def test_tolerance_lets_a_slightly_worse_model_through(loaded_model: LoadedModel, dev_set: Dataset) -> None:
    worse = blunted(loaded_model, "v2")
    gap = compare_models(loaded_model, worse, dev_set)
    assert gap.current_score is not None and gap.new_score is not None
    margin = gap.current_score - gap.new_score
    assert not compare_models(loaded_model, worse, dev_set, tolerance=margin * 0.9).promote
    within = compare_models(loaded_model, worse, dev_set, tolerance=margin * 1.01)
    assert within.promote and "within the tolerance" in within.reason


def test_micro_metric_and_unknown_metric(loaded_model: LoadedModel, dev_set: Dataset) -> None:
    assert not compare_models(loaded_model, blunted(loaded_model, "v2"), dev_set, "micro_f1").promote
    with pytest.raises(ValueError, match="unknown gate metric"):
        compare_models(loaded_model, loaded_model, dev_set, "auc")


def test_new_head_is_capability_and_dropped_head_refuses(loaded_model: LoadedModel, dev_set: Dataset) -> None:
    stance_only = with_manifest(
        loaded_model, "old", heads=tuple(h for h in loaded_model.manifest.heads if h.name == "stance")
    )
    grown = compare_models(stance_only, with_manifest(loaded_model, "v2"), dev_set)
    assert grown.promote
    assert {r.head: r.status for r in grown.heads} == {"stance": "shared", "topics": "new head"}
    shrunk = compare_models(loaded_model, with_manifest(stance_only, "v3"), dev_set)
    assert not shrunk.promote and "drops head(s) topics" in shrunk.reason
    allowed = compare_models(
        loaded_model, with_manifest(stance_only, "v3"), dev_set, allow_dropped_heads=True
    )
    assert allowed.promote  # `train --allow-head-changes`: shown, not refused
    assert {r.head: r.status for r in allowed.heads} == {"topics": "dropped head", "stance": "shared"}


def test_a_new_label_is_scored_over_the_union_of_labels() -> None:
    """A model that lacks a label the other has is scored as never predicting it."""
    gold = [("a",), ("b",), ("a", "b")]
    old = HeadSpec("topics", "multi", ("a",), (0.5,))
    new = HeadSpec("topics", "multi", ("a", "b"), (0.5, 0.5))
    union = ["a", "b"]
    old_scores = np.array([[0.9], [0.1], [0.8]])
    new_scores = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.7]])
    assert head_metric(old, gold, old_scores, union, "macro_f1") == pytest.approx(0.5)
    assert head_metric(new, gold, new_scores, union, "macro_f1") == pytest.approx(1.0)
    single_old = HeadSpec("stance", "single", ("x", "y"))
    single_new = HeadSpec("stance", "single", ("x", "y", "z"))
    sgold = [("x",), ("y",), ("z",)]
    labels = ["x", "y", "z"]
    old_s = head_metric(single_old, sgold, np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), labels, "macro_f1")
    new_s = head_metric(
        single_new, sgold, np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]), labels, "macro_f1"
    )
    assert new_s == pytest.approx(1.0) and old_s < 0.7


def test_no_current_model_promotes(loaded_model: LoadedModel, dev_set: Dataset) -> None:
    decision = compare_models(None, loaded_model, dev_set)
    assert decision.promote and decision.reason == "no current model to compare with"


def test_the_gate_names_the_held_out_rows_it_judges_on(loaded_model: LoadedModel) -> None:
    data, described = load_eval_set(
        loaded_model, loaded_model, FAST_CONFIG, dev_paths=[STARTER / "dev.jsonl"]
    )
    assert len(data.rows) == starter_rows("dev")
    assert "dev rows training only scored, never fitted or tuned on" in described
    data, described = load_eval_set(
        loaded_model, loaded_model, FAST_CONFIG, [STARTER / "shift.jsonl"], [STARTER / "dev.jsonl"]
    )
    assert len(data.rows) == starter_rows("shift") and described.startswith("--eval ")
    # --eval read before training (once), with rows allowed to be training rows: the line says so
    eval_rows = read_data([STARTER / "shift.jsonl"])
    data, described = load_eval_set(loaded_model, loaded_model, FAST_CONFIG, eval_rows, eval_overlap=3)
    assert len(data.rows) == starter_rows("shift")
    assert described.startswith(f"--eval {STARTER / 'shift.jsonl'}: WARNING: 3 of these rows are also")
    with pytest.raises(ValueError, match="needs --eval or --dev"):
        load_eval_set(loaded_model, loaded_model, FAST_CONFIG)


def train_args(registry: Path, version: str, config: Path, *extra: str, data: str = "train") -> list[str]:
    return [
        "train",
        "--data",
        str(STARTER / f"{data}.jsonl"),
        "--dev",
        str(STARTER / "dev.jsonl"),
        "--config",
        str(config),
        "--registry",
        str(registry),
        "--version",
        version,
        *extra,
    ]


def test_cli_gate_promotes_a_tie_and_refuses_a_worse_model(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fast = tmp_path / "fast.toml"
    fast.write_text(FAST_TOML)
    # the same data, config and seed as v1: the same model, so a tie, so promoted
    assert main(train_args(registry.root, "v2", fast, "--promote-if-better")) == 0
    out, err = capsys.readouterr()
    # the gate's own progress (it scores every row twice, after training's "done"), once silent
    rows = starter_rows("dev")
    assert f"[0/{2 * rows}] quality gate: scoring {rows} rows with v1 and v2" in err
    assert f"[{2 * rows}/{2 * rows}] quality gate: done" in err
    assert "quality gate: macro_f1" in out and "PROMOTE" in out and "promoted v2" in out
    assert "gates on: --dev" in out and "cut-offs were tuned on these rows (thresholds.cv_folds = 0)" in out
    assert registry.current() == "v2"

    weak = tmp_path / "weak.toml"
    weak.write_text(FAST_TOML + "[classifier]\nC = 0.001\n")
    # the 200 shift rows, not the 3,969 of train (3.4 s, not 14): macro_f1 0.62 against 0.87
    refused = ("--promote-if-better", "--gate-tolerance", "0.01")
    code = main(train_args(registry.root, "v3", weak, *refused, data="shift"))
    captured = capsys.readouterr()
    assert code == 3
    assert "REFUSE" in captured.out and "tolerance 0.0100" in captured.out
    assert "is worse than current" in captured.out  # refused on its score, not its labels or heads
    assert "refused to promote v3" in captured.err and "newstagger models promote v3" in captured.err
    assert registry.current() == "v2"
    assert "v3" in registry.versions()


def test_cli_no_promote_only_adds(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fast = tmp_path / "fast.toml"
    fast.write_text(FAST_TOML)
    # the starter's dev rows, to keep it quick: --no-promote adds whatever was trained
    argv = ["train", "--data", str(STARTER / "dev.jsonl"), "--config", str(fast), "--no-promote"]
    assert main([*argv, "--registry", str(registry.root), "--version", "v2"]) == 0
    assert "not promoted" in capsys.readouterr().out
    assert registry.current() == "v1" and registry.versions() == ["v1", "v2"]
    assert main(["train", "--out", str(tmp_path / "x"), "--no-promote"]) == 2


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-0.1"])
def test_cli_refuses_a_tolerance_that_is_no_finite_number(
    tolerance: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN tolerance refused every model (`new >= current - nan` is never true), an infinite one
    promoted any."""
    argv = ["train", "--registry", str(tmp_path), "--promote-if-better", "--gate-tolerance", tolerance]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert f"{tolerance}: must be a finite number >= 0" in capsys.readouterr().err


def test_a_head_of_another_kind_is_refused_or_shown_not_an_error(
    loaded_model: LoadedModel, dev_set: Dataset
) -> None:
    """A head whose kind changed (stance now multi-label) stopped `train --promote-if-better` with
    "cannot compare" (exit 2, the version left unpromoted without a word) even with
    --allow-head-changes, which the docs say lets a head of another kind through."""
    stance = loaded_model.manifest.head("stance")
    as_multi = replace(stance, kind="multi", thresholds=(0.5,) * len(stance.labels))
    heads = tuple(as_multi if h.name == "stance" else h for h in loaded_model.manifest.heads)
    new = with_manifest(loaded_model, "v2", heads=heads)
    refused = compare_models(loaded_model, new, dev_set)
    assert not refused.promote and refused.reason == "the new model changes the kind of head(s) stance"
    assert {r.head: r.status for r in refused.heads} == {"topics": "shared", "stance": "kind changed"}
    allowed = compare_models(loaded_model, new, dev_set, allow_dropped_heads=True)
    assert allowed.promote and "tie" in allowed.reason  # judged on topics, the head both serve alike
    assert "kind changed" in format_comparison(allowed)
