"""A promotion that would take away a head, a head's kind or a label that the current model serves
(callers relying on ``stance`` would silently get nothing) is refused, unless
``--allow-head-changes``; a `current` changed by hand to such a model is served, with a warning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from service.cli import main
from service.core.errors import InvalidRequest
from service.core.tagger import Tagger
from service.core.types import Article, TagOptions
from service.model.artifact import load_artifact, save_artifact
from service.model.errors import HeadsChanged
from service.model.manifest import MANIFEST_FILE, lost_heads
from service.model.registry import ModelRegistry
from service.reloader import ModelReloader
from tests.helpers import STARTER

ARTICLE = Article("a1", "Officials met in the capital to discuss the agreement.")


def add_without_head(registry: ModelRegistry, model_dir: Path, version: str, head: str) -> Path:
    """A real artifact of the session model with ``head`` taken out (model and manifest)."""
    loaded = load_artifact(model_dir)
    model = loaded.model
    for table in (model.classifiers, model.labels, model.head_featurizer):
        del table[head]
    raw = json.loads((model_dir / MANIFEST_FILE).read_text())
    fields = {k: v for k, v in raw.items() if k not in ("format_version", "model_sha256", "manifest_sha256")}
    fields.update(version=version, heads=tuple(h for h in loaded.manifest.heads if h.name != head))
    out = registry.new_version_dir(version)
    save_artifact(model, fields, out)
    return out


def test_lost_heads_names_missing_heads_kinds_and_labels(registry: ModelRegistry) -> None:
    old = registry.manifest("v1")
    topics, stance = old.head("topics"), old.head("stance")
    assert lost_heads(old, old) == []
    assert lost_heads(old, replace(old, heads=(topics,))) == ["head 'stance' is missing"]
    fewer = replace(stance, labels=stance.labels[1:])
    assert lost_heads(old, replace(old, heads=(topics, fewer))) == [
        f"head 'stance' lacks label(s) {stance.labels[0]}"
    ]
    as_multi = replace(stance, kind="multi", thresholds=(0.5,) * len(stance.labels))
    assert lost_heads(old, replace(old, heads=(topics, as_multi))) == [
        "head 'stance' is multi-label, not single-label"
    ]
    grown = replace(topics, labels=(*topics.labels, "cyber"), thresholds=(*topics.thresholds, 0.5))
    extra = replace(stance, name="region")
    assert lost_heads(old, replace(old, heads=(grown, stance, extra))) == []  # new capability only


def test_models_promote_refuses_a_version_without_a_current_head(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_without_head(registry, model_dir, "topics-only", "stance")
    root = ["--registry", str(registry.root)]
    assert main(["models", "promote", "topics-only", *root]) == 2
    err = capsys.readouterr().err
    assert "refusing to promote topics-only over v1: head 'stance' is missing" in err
    assert "--allow-head-changes" in err
    assert registry.current() == "v1"
    with pytest.raises(HeadsChanged) as refused:
        registry.promote("topics-only")
    assert refused.value.lost == ["head 'stance' is missing"]

    assert main(["models", "promote", "topics-only", "--allow-head-changes", *root]) == 0
    assert "promoted topics-only to current" in capsys.readouterr().out
    assert registry.current() == "topics-only"
    assert main(["models", "promote", "v1", *root]) == 0  # adding a head back takes nothing away
    assert registry.current() == "v1"


def test_a_current_that_does_not_read_does_not_block_a_promotion(
    registry: ModelRegistry, model_dir: Path
) -> None:
    add_without_head(registry, model_dir, "topics-only", "stance")
    (registry.path("v1") / MANIFEST_FILE).write_text("{}")  # the current version is broken
    assert registry.promote("topics-only") == "v1"


def test_train_into_a_registry_refuses_to_promote_a_version_without_a_current_head(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fast.toml"
    config.write_text("[thresholds]\ncv_folds = 0\n", encoding="utf-8")
    # the starter's dev rows, to keep it quick: the refusal is about the heads, not the data
    argv = ["train", "--data", str(STARTER / "dev.jsonl"), "--config", str(config), "--quiet"]
    argv += ["--heads", "topics", "--registry", str(registry.root), "--version", "t1"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "refused to promote t1: head 'stance' is missing" in err
    assert "newstagger models promote t1 --allow-head-changes" in err
    assert registry.current() == "v1" and "t1" in registry.versions()


def test_the_reloader_serves_a_hand_changed_current_without_a_head_and_says_so(
    registry: ModelRegistry, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The registry's pointer is what every process serves (a restarted one would load it too)."""
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0)
    assert reloader.check().result == "loaded"
    add_without_head(registry, model_dir, "topics-only", "stance")
    (registry.root / "current").write_text("topics-only\n")  # by hand, past `models promote`
    caplog.set_level("WARNING", logger="service.reloader")
    assert reloader.check().result == "loaded"
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "topics-only" in warning and "v1" in warning and "head 'stance' is missing" in warning
    [result] = tagger.tag([ARTICLE])
    assert [h.head for h in result.heads] == ["topics"] and result.model_version == "topics-only"
    with pytest.raises(InvalidRequest, match="unknown head"):
        tagger.tag([ARTICLE], TagOptions(heads=("stance",)))


def test_a_gate_refusal_with_allow_head_changes_says_how_to_promote_it_anyway(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --promote-if-better --allow-head-changes` of a version without a head, refused by the
    gate on its score: the suggested command lacked --allow-head-changes, and `models promote`
    then refused it again, for the head."""
    import argparse

    from service.commands.train_registry import EXIT_REFUSED, _promote

    add_without_head(registry, model_dir, "t1", "stance")
    args = argparse.Namespace(allow_head_changes=True)
    assert _promote(args, registry, "t1", why="new macro_f1 0.5 is worse than current 0.9") == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "refused to promote t1: new macro_f1 0.5 is worse" in err
    assert "newstagger models promote t1 --allow-head-changes --registry" in err
    assert registry.current() == "v1"
    assert _promote(args, registry, "t1") == 0  # the gate passed: promoted, heads allowed to change
    assert registry.current() == "t1"
