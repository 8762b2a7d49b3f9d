"""Artifact integrity covers everything the server uses: an edited manifest, a version outside
the registry and a model file that unpacks to far more than its size are refused (by loading,
`newstagger tag` and the reloader; `serve` in tests/integration/test_grpc_abuse.py), and a
refused version fixed in place is retried."""

from __future__ import annotations

import json
import math
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.cli import main
from service.core.errors import ArtifactError
from service.core.tagger import Tagger
from service.core.types import Article
from service.metrics import Metrics
from service.model.artifact import MAX_UNPACK_RATIO, MODEL_FILE, UNPACK_ALLOWANCE, load_artifact, sha256_file
from service.model.manifest import MANIFEST_FILE, write_manifest
from service.model.registry import ModelRegistry
from service.reloader import ModelReloader

ARTICLE = Article("a1", "Officials criticised the deal and warned it would fail.")


def swap_stance_labels(raw: dict[str, Any]) -> None:
    stance = next(h for h in raw["heads"] if h["name"] == "stance")
    stance["labels"] = list(reversed(stance["labels"]))


def change_thresholds(raw: dict[str, Any]) -> None:
    topics = next(h for h in raw["heads"] if h["name"] == "topics")
    topics["thresholds"] = [0.01] * len(topics["thresholds"])


EDITS = pytest.mark.parametrize("edit", [swap_stance_labels, change_thresholds], ids=["labels", "thresholds"])


def edited_copy(src: Path, dst: Path, edit: Any, seal: bool = False) -> Path:
    shutil.copytree(src, dst)
    raw = json.loads((dst / MANIFEST_FILE).read_text())
    raw["version"] = dst.name  # named after its folder, so only ``edit`` is at fault
    edit(raw)
    if seal:
        write_manifest(dst, raw)
    else:
        (dst / MANIFEST_FILE).write_text(json.dumps(raw, indent=2))
    return dst


@EDITS
def test_a_manifest_edited_by_hand_is_refused(model_dir: Path, tmp_path: Path, edit: Any) -> None:
    art = edited_copy(model_dir, tmp_path / "edited", edit)
    with pytest.raises(ArtifactError, match="manifest checksum mismatch"):
        load_artifact(art)


def test_resealed_labels_that_are_not_the_models_are_refused(model_dir: Path, tmp_path: Path) -> None:
    art = edited_copy(model_dir, tmp_path / "edited", swap_stance_labels, seal=True)
    with pytest.raises(ArtifactError, match="labels of head 'stance' are not the model's"):
        load_artifact(art)


@EDITS
def test_newstagger_tag_refuses_an_edited_manifest(
    model_dir: Path, tmp_path: Path, edit: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    art = edited_copy(model_dir, tmp_path / "edited", edit)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a1", "text": ARTICLE.text}) + "\n")
    code = main(["tag", str(src), "--model", str(art)])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert "manifest checksum mismatch" in err


@EDITS
def test_the_reloader_refuses_it_and_the_old_model_keeps_serving(
    registry: ModelRegistry, model_dir: Path, edit: Any
) -> None:
    prom = CollectorRegistry()
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, Metrics(prom), interval=0)
    assert reloader.check().result == "loaded"
    edited_copy(model_dir, registry.new_version_dir("v2"), edit)
    registry.promote("v2", verify=False)  # behind the gate's back
    outcome = reloader.check()  # what ReloadModel answers
    assert outcome.result == "refused" and "manifest checksum mismatch" in outcome.message
    assert tagger.tag([ARTICLE])[0].model_version == "v1"


def test_a_refused_version_fixed_in_place_is_loaded(registry: ModelRegistry, model_dir: Path) -> None:
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0)
    assert reloader.check().result == "loaded"
    v2 = edited_copy(model_dir, registry.new_version_dir("v2"), change_thresholds)
    registry.promote("v2", verify=False)
    assert reloader.check().result == "refused"
    assert reloader.check().message == "already refused"
    raw = json.loads((v2 / MANIFEST_FILE).read_text())
    raw["version"] = "v2"
    write_manifest(v2, raw)  # fixed in place (a rewritten, sealed manifest)
    outcome = reloader.check()
    assert (outcome.result, outcome.version) == ("loaded", "v2")


def test_a_version_outside_the_registry_is_refused(
    registry: ModelRegistry, model_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(model_dir, outside)
    (registry.versions_dir / "v2").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArtifactError, match="outside the registry"):
        registry.path("v2")
    v3 = registry.new_version_dir("v3")
    v3.mkdir()
    shutil.copy(model_dir / MANIFEST_FILE, v3 / MANIFEST_FILE)
    (v3 / MODEL_FILE).symlink_to(outside / MODEL_FILE)
    with pytest.raises(ArtifactError, match="outside the registry"):
        registry.promote("v3", verify=False)
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0)
    assert reloader.check().result == "loaded"
    (registry.root / "current").write_text("v2\n")  # the pointer edited by hand
    assert "outside the registry" in reloader.check().message
    assert tagger.tag([ARTICLE])[0].model_version == "v1"


def test_a_model_file_that_unpacks_to_far_more_than_its_size_is_refused(
    model_dir: Path, tmp_path: Path
) -> None:
    art = tmp_path / "bomb"
    shutil.copytree(model_dir, art)
    with zipfile.ZipFile(model_dir / MODEL_FILE) as original:
        entries = {info.filename: original.read(info) for info in original.infolist()}
    original_size = (model_dir / MODEL_FILE).stat().st_size
    padding = MAX_UNPACK_RATIO * original_size + 2 * UNPACK_ALLOWANCE  # compresses about 1000:1
    with zipfile.ZipFile(art / MODEL_FILE, "w", zipfile.ZIP_DEFLATED) as bomb:
        for name, data in entries.items():
            if name != "schema.json":
                bomb.writestr(name, data)
        with bomb.open("schema.json", "w") as schema:  # valid JSON padded with blanks
            schema.write(entries["schema.json"])
            block = b" " * (1 << 20)
            for _ in range(padding >> 20):
                schema.write(block)
    raw = json.loads((art / MANIFEST_FILE).read_text())
    raw["model_sha256"] = sha256_file(art / MODEL_FILE)
    write_manifest(art, raw)
    assert (art / MODEL_FILE).stat().st_size <= original_size + (1 << 20)  # a small file...
    with pytest.raises(ArtifactError, match="unpacks to"):  # ...that would unpack to hundreds of MB
        load_artifact(art)


def thresholds_to(value: Any) -> Any:
    def edit(raw: dict[str, Any]) -> None:
        topics = next(h for h in raw["heads"] if h["name"] == "topics")
        topics["thresholds"][2] = value

    return edit


def metric_to(value: float) -> Any:
    def edit(raw: dict[str, Any]) -> None:
        raw["metrics"]["dev"]["topics"]["micro"]["f1"] = value

    return edit


OUT_OF_RANGE = [
    (thresholds_to(math.nan), "head 'topics': threshold nan is not a number in [0, 1]"),
    (thresholds_to(math.inf), "head 'topics': threshold inf is not a number in [0, 1]"),
    (thresholds_to(-0.1), "head 'topics': threshold -0.1 is not a number in [0, 1]"),
    (thresholds_to(1.5), "head 'topics': threshold 1.5 is not a number in [0, 1]"),
    (thresholds_to("0.5"), "head 'topics': threshold '0.5' is not a number in [0, 1]"),
    (thresholds_to(True), "head 'topics': threshold True is not a number in [0, 1]"),
    (metric_to(math.nan), "metrics.dev.topics.micro.f1 is not a finite number"),
]


@pytest.mark.parametrize(
    ("edit", "message"), OUT_OF_RANGE, ids=["nan", "inf", "neg", "over", "str", "bool", "metric"]
)
def test_resealed_out_of_range_numbers_are_refused_and_the_old_model_keeps_serving(
    registry: ModelRegistry, model_dir: Path, edit: Any, message: str
) -> None:
    """Re-sealed (a valid checksum), so only the values themselves can be refused."""
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0)
    assert reloader.check().result == "loaded"
    v2 = edited_copy(model_dir, registry.new_version_dir("v2"), edit, seal=True)
    with pytest.raises(ArtifactError, match=re.escape(f"malformed manifest: {message}")):
        load_artifact(v2)
    with pytest.raises(ArtifactError, match=re.escape(message)):
        registry.promote("v2")
    assert registry.current() == "v1"
    (registry.root / "current").write_text("v2\n")  # by hand, past `models promote`
    outcome = reloader.check()
    assert outcome.result == "refused" and message in outcome.message
    assert tagger.tag([ARTICLE])[0].model_version == "v1"


def no_heads(raw: dict[str, Any]) -> None:
    raw["heads"] = []


def a_head_twice(raw: dict[str, Any]) -> None:
    raw["heads"].append(raw["heads"][-1])


def a_label_twice(raw: dict[str, Any]) -> None:
    stance = next(h for h in raw["heads"] if h["name"] == "stance")
    stance["labels"][1] = stance["labels"][0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (a_head_twice, "head 'stance' is listed twice"),
        (a_label_twice, "head 'stance': labels must be a non-empty list of distinct names"),
    ],
    ids=["head-twice", "label-twice"],
)
def test_resealed_heads_or_labels_listed_twice_are_refused(
    model_dir: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    art = edited_copy(model_dir, tmp_path / "edited", edit, seal=True)
    with pytest.raises(ArtifactError, match=re.escape(f"malformed manifest: {message}")):
        load_artifact(art)


def test_a_model_with_no_heads_is_not_served(registry: ModelRegistry, model_dir: Path) -> None:
    """It loads (a model file round-trips so) but would tag nothing: the smoke check refuses it."""
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0)
    assert reloader.check().result == "loaded"
    edited_copy(model_dir, registry.new_version_dir("v2"), no_heads, seal=True)
    (registry.root / "current").write_text("v2\n")
    outcome = reloader.check()
    assert outcome.result == "refused" and "the model has no heads" in outcome.message
    assert tagger.tag([ARTICLE])[0].model_version == "v1"


def test_a_manifest_with_a_lone_surrogate_is_reported_broken_not_a_traceback(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON's "\\ud800" reads as a string no UTF-8 can hold: the checksum could not even be computed."""
    bad = registry.new_version_dir("bad")
    shutil.copytree(model_dir, bad)
    text = (bad / MANIFEST_FILE).read_text()
    assert '"version": "v1"' in text
    (bad / MANIFEST_FILE).write_text(text.replace('"version": "v1"', '"version": "v\\ud800"'))
    with pytest.raises(ArtifactError, match="malformed manifest: 'utf-8' codec can't encode"):
        load_artifact(bad)
    assert main(["models", "list", "--registry", str(registry.root)]) == 0
    listed = capsys.readouterr().out
    assert "* v1" in listed and "! bad" in listed and "BROKEN" in listed and "malformed manifest" in listed
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0)
    assert reloader.check().result == "loaded"
    (registry.root / "current").write_text("bad\n")
    assert reloader.check().result == "refused"
    assert tagger.tag([ARTICLE])[0].model_version == "v1"
