"""ModelRegistry: promote, rollback, crashes leaving it consistent, no junk left by `train`, CLI output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.core.errors import ArtifactError
from service.core.tagger import Tagger
from service.core.types import Article
from service.model import registry as registry_module
from service.model.artifact import MODEL_FILE, LoadedModel, load_artifact
from service.model.locate import load_model, resolve_model_path
from service.model.manifest import write_manifest
from service.model.registry import ModelRegistry
from service.reloader import ModelReloader
from tests.conftest import FAST_CONFIG
from tests.helpers import STARTER
from training.config import load_config


def add_version(reg: ModelRegistry, version: str, tamper: bool = False) -> Path:
    """A copy of v1 named ``version`` (manifest edited; the model checksum still holds)."""
    src = reg.path("v1")
    dst = reg.new_version_dir(version)
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = version
    manifest["created_at"] = f"2099-01-01T00:00:{len(reg.versions()):02d}Z"
    write_manifest(dst, manifest)
    if tamper:
        with (dst / MODEL_FILE).open("ab") as fh:
            fh.write(b"tampered")
    return dst


def test_promote_and_rollback_walk_back(registry: ModelRegistry) -> None:
    add_version(registry, "v2")
    add_version(registry, "v3")
    assert registry.versions() == ["v1", "v2", "v3"]
    assert registry.promote("v2") == "v1"
    assert registry.promote("v3") == "v2"
    assert resolve_model_path(registry.root) == registry.path("v3")
    assert registry.rollback() == "v2"
    assert registry.rollback() == "v1"
    assert registry.current() == "v1"
    with pytest.raises(ArtifactError, match="nothing to roll back to"):
        registry.rollback()
    assert [e.action for e in registry.entries()] == ["promote", "promote", "promote", "rollback", "rollback"]


def test_promote_refuses_a_tampered_version(registry: ModelRegistry) -> None:
    add_version(registry, "bad", tamper=True)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        registry.promote("bad")
    assert registry.current() == "v1"
    with pytest.raises(ArtifactError, match="no version"):
        registry.promote("../v1")


def test_crash_before_the_pointer_switch_keeps_the_old_current(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_version(registry, "v2")

    def crash(*_: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(registry_module.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        registry.promote("v2")
    monkeypatch.undo()
    assert registry.current() == "v1"  # the old pointer, whole
    assert registry.versions() == ["v1", "v2"]  # the new version is there, unpromoted
    assert registry.leftovers() == []  # no temporary pointer left behind
    assert load_artifact(resolve_model_path(registry.root)).manifest.version == "v1"


def test_crash_after_the_pointer_switch_before_history(registry: ModelRegistry) -> None:
    add_version(registry, "v2")
    # what a crash between os.replace(current) and the history append leaves: pointer only
    (registry.root / "current").write_text("v2\n")
    assert registry.lineage() == ["v1", "v2"]
    assert registry.rollback() == "v1"


def test_a_version_appears_whole_or_not_at_all(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save_artifact stages under a hidden name; a crash mid-write adds no version and no junk."""
    from service.model import artifact

    def crash(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(artifact.sio, "dump", crash)
    loaded = load_artifact(registry.path("v1"))
    with pytest.raises(ArtifactError, match="cannot write a model under .*versions: disk full"):
        artifact.save_artifact(loaded.model, {}, registry.new_version_dir("v2"))
    assert registry.versions() == ["v1"] and registry.leftovers() == []


def test_train_leaves_no_pending_directory_on_failure(
    registry: ModelRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "", "stance": "neutral"}\n')
    assert main(["train", "--data", str(bad), "--registry", str(registry.root)]) == 2
    assert "field 'text'" in capsys.readouterr().err
    assert registry.leftovers() == [] and registry.versions() == ["v1"]

    # the rename into place fails (e.g. the version appeared meanwhile): still no junk
    def refuse(self: Path, target: Path) -> Path:
        raise OSError("directory not empty")

    monkeypatch.setattr(Path, "rename", refuse)
    fast = tmp_path / "fast.toml"
    fast.write_text("[thresholds]\ncv_folds = 0\n")
    args = [
        "train",
        "--data",
        str(STARTER / "dev.jsonl"),
        "--config",
        str(fast),
        "--registry",
        str(registry.root),
    ]
    assert main(args) == 2
    assert "cannot add version" in capsys.readouterr().err
    assert registry.leftovers() == [] and registry.versions() == ["v1"] and registry.current() == "v1"


def test_models_cli_output(
    registry: ModelRegistry, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    add_version(registry, "v2")
    broken = registry.new_version_dir("half")
    broken.mkdir()
    (registry.versions_dir / ".pending-1-abc").mkdir()
    reg = ["--registry", str(registry.root)]
    assert main(["models", "promote", "v2", *reg]) == 0
    out = capsys.readouterr().out
    assert "promoted v2 to current" in out and "(was: v1)" in out
    assert main(["models", "list", *reg]) == 0
    out = capsys.readouterr().out
    assert "* v2" in out and "  v1" in out and "topics(" in out
    assert "BROKEN" in out and "half" in out and "1 hidden staging leftover" in out
    config = tmp_path / "config.toml"
    assert main(["models", "show", "v1", "--summary", "--export-config", str(config), *reg]) == 0
    out = capsys.readouterr().out
    assert "version      v1" in out and "seed" in out and "sha256" in out and "train.jsonl" in out
    assert load_config(config) == FAST_CONFIG  # the manifest's config round-trips exactly
    assert main(["models", "show", *reg]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v2"
    assert main(["models", "rollback", *reg]) == 0
    assert "rolled back: v1 is current" in capsys.readouterr().out
    assert main(["models", "history", *reg]) == 0
    out = capsys.readouterr().out
    assert "promote   v2" in out and "rollback  v1" in out
    assert main(["models", "promote", "nope", *reg]) == 2
    assert "no version 'nope'" in capsys.readouterr().err


def test_empty_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--registry", str(tmp_path)]) == 0
    assert "no models" in capsys.readouterr().out
    assert main(["models", "rollback", "--registry", str(tmp_path)]) == 2
    with pytest.raises(ArtifactError, match="no model in"):
        resolve_model_path(tmp_path)
    assert not os.path.exists(tmp_path / "current")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=oct)
def test_a_promoted_version_is_readable_by_other_users_whatever_the_umask(
    tmp_path: Path, registry: ModelRegistry, umask: int
) -> None:
    """A service running as another uid (the image's 10001, registry mounted read-only) must be
    able to read `current` and the served version, also when the trainer's umask is 077: group and
    others get read (and search) access, nobody but the owner write access."""
    from service.model import artifact

    reg = ModelRegistry(tmp_path / "fresh")
    old = os.umask(umask)
    try:
        loaded = load_artifact(registry.path("v1"))
        artifact.save_artifact(loaded.model, _fields(loaded, "v2"), reg.new_version_dir("v2"))
        reg.promote("v2")
    finally:
        os.umask(old)
    version = reg.path("v2")
    for directory in (reg.root, reg.versions_dir, version):
        assert oct(directory.stat().st_mode & 0o777) == oct(0o755), directory
    for path in [reg.root / "current", reg.root / "history", *version.iterdir()]:
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path


def _fields(loaded: LoadedModel, version: str) -> dict[str, Any]:
    """The manifest fields save_artifact takes, for a copy of ``loaded`` named ``version``."""
    m = loaded.manifest
    return {"name": m.name, "version": version, "created_at": m.created_at, "heads": m.heads}


@pytest.mark.parametrize("version", ["../../escaped", ".hidden", "v1/sub", "a" * 65, "v1"])
def test_train_refuses_a_bad_or_taken_version_before_training(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    """`--version ../../escaped` once wrote outside the registry; `.hidden` and `v1/sub` failed
    only after training, leaving debris."""
    before = sorted(p.name for p in registry.versions_dir.iterdir())
    missing = tmp_path / "never-read.jsonl"  # refused before the data is read
    args = ["train", "--data", str(missing), "--version", version, "--registry", str(registry.root)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"version {version!r}" in err and str(missing) not in err
    assert ("already exists" if version == "v1" else "must be 1-64 letters") in err
    assert sorted(p.name for p in registry.versions_dir.iterdir()) == before
    assert not (tmp_path / "escaped").exists()
    assert main(["train", "--data", str(missing), "--version", ".x", "--out", str(tmp_path / "o")]) == 2
    assert "must be 1-64 letters" in capsys.readouterr().err


def test_a_version_folder_whose_manifest_records_another_version_is_refused(
    registry: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    """versions/v3 holding a copy of v1 (renamed by hand) would be served and reported as v1:
    every way in refuses it, naming both, and a running service keeps its model."""
    shutil.copytree(registry.path("v1"), registry.new_version_dir("v3"))
    named = "the registry's version 'v3' holds model version 'v1'"
    assert registry.versions() == ["v1"]
    assert named in registry.broken()["v3"]
    with pytest.raises(ArtifactError, match=named):
        registry.promote("v3")
    assert registry.current() == "v1"
    reg = ["--registry", str(registry.root)]
    assert main(["models", "promote", "v3", *reg]) == 2
    assert named in capsys.readouterr().err
    assert main(["models", "list", *reg]) == 0
    assert "! v3" in capsys.readouterr().out
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0)
    assert reloader.check().result == "loaded"
    (registry.root / "current").write_text("v3\n")  # the pointer edited by hand
    outcome = reloader.check()
    assert (outcome.result, named in outcome.message) == ("refused", True)
    assert tagger.tag([Article("a", "Ministers met to agree a trade deal.")])[0].model_version == "v1"
    with pytest.raises(ArtifactError, match=named):
        load_model(registry.root)  # what `tag`, `evaluate` and newstagger.load use
    assert load_model(registry.path("v3")).manifest.version == "v1"  # an artifact directory: any name


def test_a_version_whose_model_file_is_a_symlink_loop_is_refused_not_a_crash(
    registry: ModelRegistry,
) -> None:
    """`versions/v2/model.skops` a link to itself: resolving it raised RuntimeError (not an
    OSError, not an ArtifactError), a traceback from `models promote` and at every reloader poll."""
    v2 = add_version(registry, "v2")
    (v2 / MODEL_FILE).unlink()
    (v2 / MODEL_FILE).symlink_to(MODEL_FILE)
    with pytest.raises(ArtifactError, match="v2.*[Ss]ymlink loop"):
        registry.promote("v2")
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0)
    assert reloader.check().result == "loaded"
    (registry.root / "current").write_text("v2\n")  # by hand: promote refuses it
    assert reloader.check().result == "missing"  # the old model keeps serving
    assert tagger.model is not None and tagger.model.manifest.version == "v1"
