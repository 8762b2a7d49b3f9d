"""The registry's `models` commands end to end: list/show/promote/rollback, their errors, a
tampered version refused, and a crash between writing a version and promoting it."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from service.cli import main
from service.model.artifact import MODEL_FILE
from service.model.manifest import MANIFEST_FILE, write_manifest
from service.model.registry import ModelRegistry
from tests.conftest import run_cli
from tests.helpers import STARTER, TAG_ARTICLES, tag_lines


def listed(out: str) -> dict[str, str]:
    """`models list` rows by version; the current one starts with '*'."""
    return {line[1:].split()[0]: line for line in out.splitlines() if line[1:].strip()}


def add_version(registry: ModelRegistry, source: Path, version: str, created_at: str) -> None:
    dst = registry.new_version_dir(version)
    shutil.copytree(source, dst)
    manifest = json.loads((dst / MANIFEST_FILE).read_text())
    manifest.update(version=version, created_at=created_at)
    write_manifest(dst, manifest)


def test_models_list_show_promote_rollback(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(registry.root)
    add_version(registry, model_dir, "v2", "2999-01-01T00:00:00Z")
    code, out, _ = run_cli(capsys, "models", "list", "--registry", root)
    assert code == 0
    rows = listed(out)
    assert rows["v1"].startswith("*") and not rows["v2"].startswith("*")
    assert "heads (kind, labels)" in out
    assert rows["v1"].endswith(" topics(multi, 9), stance(single, 3)")

    # a head's kind and target-awareness are shown (the list named only heads and label counts)
    dst = registry.path("v2")
    manifest = json.loads((dst / MANIFEST_FILE).read_text())
    for head in manifest["heads"]:
        if head["name"] == "stance":
            head["target"] = "target"
    write_manifest(dst, manifest)
    code, out, _ = run_cli(capsys, "models", "list", "--registry", root)
    assert listed(out)["v2"].endswith(" topics(multi, 9), stance(single, 3, target-aware: target)")

    code, out, _ = run_cli(capsys, "models", "show", "--registry", root)
    assert code == 0 and json.loads(out)["version"] == "v1"
    code, out, _ = run_cli(capsys, "models", "show", "v2", "--registry", root)
    assert json.loads(out)["version"] == "v2"

    code, out, _ = run_cli(capsys, "models", "promote", "v2", "--registry", root)
    assert code == 0 and "promoted v2" in out
    assert registry.current() == "v2"
    code, out, _ = run_cli(capsys, "models", "list", "--registry", root)
    assert listed(out)["v2"].startswith("*") and not listed(out)["v1"].startswith("*")

    code, out, _ = run_cli(capsys, "models", "rollback", "--registry", root)
    assert code == 0 and "v1 is current" in out
    assert registry.current() == "v1"


def test_models_errors_are_clear(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = str(registry.root)
    code, _, err = run_cli(capsys, "models", "show", "nope", "--registry", root)
    assert code == 2 and "no version 'nope'" in err
    code, _, err = run_cli(capsys, "models", "promote", "../v1", "--registry", root)
    assert code == 2 and registry.current() == "v1"
    code, _, err = run_cli(capsys, "models", "rollback", "--registry", root)
    assert code == 2 and "nothing to roll back" in err
    code, out, _ = run_cli(capsys, "models", "list", "--registry", str(tmp_path / "empty"))
    assert code == 0 and "no models" in out
    # as `models list` says: train into that registry, not into the default one
    code, _, err = run_cli(capsys, "models", "show", "--registry", str(tmp_path / "empty"))
    assert code == 2 and f"run `newstagger train --registry {tmp_path / 'empty'}`" in err


def test_promote_refuses_a_tampered_version(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_version(registry, model_dir, "v2", "2999-01-01T00:00:00Z")
    with (registry.path("v2") / MODEL_FILE).open("ab") as fh:
        fh.write(b"tampered")
    code, _, err = run_cli(capsys, "models", "promote", "v2", "--registry", str(registry.root))
    assert code == 2 and "checksum mismatch" in err
    assert registry.current() == "v1"


class SimulatedCrash(Exception):
    pass


def test_crash_between_writing_a_version_and_promoting_it(
    registry: ModelRegistry,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fast_config: Path,
) -> None:
    root = str(registry.root)
    # debris of an earlier run that died while writing: a hidden staging directory
    stale = registry.versions_dir / ".pending"
    stale.mkdir()
    (stale / MODEL_FILE).write_bytes(b"half a model")

    def crash(
        self: ModelRegistry, version: str, verify: bool = True, allow_head_changes: bool = False
    ) -> None:
        raise SimulatedCrash(version)

    monkeypatch.setattr(ModelRegistry, "promote", crash)
    with pytest.raises(SimulatedCrash) as info:
        main(
            ["train", "--data", str(STARTER / "dev.jsonl"), "--config", str(fast_config), "--registry", root]
        )
    new = str(info.value)
    monkeypatch.undo()
    capsys.readouterr()

    # consistent: the old version is still served, the new one is complete but not current
    assert registry.current() == "v1"
    assert sorted(registry.versions()) == sorted(["v1", new])
    code, out, _ = run_cli(capsys, "models", "list", "--registry", root)
    assert code == 0 and ".pending" not in out
    rows = listed(out)
    assert rows["v1"].startswith("*") and not rows[new].startswith("*")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(TAG_ARTICLES[0]) + "\n"))
    code, out, _ = run_cli(capsys, "tag", "--model", root)
    assert code == 0 and tag_lines(out)[0]["model"]["version"] == "v1"

    # and the interrupted promotion can simply be done again
    code, out, _ = run_cli(capsys, "models", "promote", new, "--registry", root)
    assert code == 0 and registry.current() == new
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(TAG_ARTICLES[0]) + "\n"))
    code, out, _ = run_cli(capsys, "tag", "--model", root)
    assert tag_lines(out)[0]["model"]["version"] == new


@pytest.mark.parametrize(
    "action", [["list"], ["show"], ["history"], ["promote", "v1"], ["rollback"]], ids=lambda a: a[0]
)
def test_every_models_action_on_a_file_says_it_is_no_registry(
    action: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`history` said "F/history: Not a directory" and `promote v1` "no version 'v1' in F"."""
    file = tmp_path / "models"
    file.write_text("not a registry\n")
    code, out, err = run_cli(capsys, "models", *action, "--registry", str(file))
    assert (code, out) == (2, "")
    said = f"newstagger models: {file}: is a file, not a model registry (a directory)"
    assert err.strip().splitlines() == [said]
