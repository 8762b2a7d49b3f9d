"""`newstagger train` refuses what it can know is wrong before it trains (a used --out, a registry
it cannot write, a --eval file it cannot read), and a write that fails at the end (a full disk)
names where."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from tests.helpers import REPO, STARTER

DATA = STARTER / "dev.jsonl"


@pytest.fixture()
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training would take minutes (the default model) or the whole --tune budget: fail loudly if
    it starts."""

    def train(*_: Any, **__: Any) -> Any:
        raise AssertionError("trained before refusing")

    monkeypatch.setattr("training.train.train", train)
    monkeypatch.setattr("training.tune.tune", train)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["train", "--quiet", "--data", str(DATA), *argv]) == 2
    return capsys.readouterr().err


def test_a_used_out_directory_is_refused_before_training(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    used = tmp_path / "model"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    for argv in (["--out", str(used)], ["--tune", "--out", str(used)]):
        assert f"{used} exists and is not empty" in _refused(argv, capsys)
    assert (used / "notes.txt").read_text() == "mine"


def test_a_registry_that_cannot_be_written_is_refused_before_training(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    err = _refused(["--registry", str(blocker / "models")], capsys)
    assert f"cannot write a model under {blocker}: Not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # the probe is gone


def test_eval_files_are_read_before_training(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ["--registry", str(tmp_path / "models"), "--promote-if-better"]
    missing = tmp_path / "missing.jsonl"
    assert f"{missing}: cannot read" in _refused([*registry, "--eval", str(missing)], capsys)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert f"{empty}: no rows" in _refused([*registry, "--eval", str(empty)], capsys)
    assert not (tmp_path / "models").exists()


def test_eval_without_the_gate_is_refused_not_ignored(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    for where in (["--registry", str(tmp_path / "models")], ["--out", str(tmp_path / "m")]):
        err = _refused([*where, "--eval", str(DATA)], capsys)
        assert "--eval is the quality gate's evaluation set: it needs --promote-if-better" in err


def test_the_gate_without_held_out_rows_is_refused_before_training(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --eval or --dev the gate judged the new model's cross-validated estimate against the
    current model's in-sample score on the same training rows: retrained on the very same data
    (the same model, bit for bit) it was refused, 0.8912 against 1.0000 macro-F1 on 120 rows, and
    with 60 new rows added, refused 0.9104 against 0.9861 although on 80 held-out rows it was the
    better model (0.9152 against 0.8762)."""
    err = _refused(["--registry", str(tmp_path / "models"), "--promote-if-better"], capsys)
    assert "--promote-if-better needs rows neither model trained on to compare them" in err
    assert "pass --eval FILE (or --dev FILE)" in err and "--no-promote" in err
    assert not (tmp_path / "models").exists()


def test_eval_rows_the_gate_cannot_use_are_refused_before_training(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only an unreadable or empty --eval file was refused before training; a row the gate could
    not read (a list for the single-label stance) failed after training, with exit 2 and no word
    that the version had been added, unpromoted."""
    bad = tmp_path / "eval.jsonl"
    rows = DATA.read_text(encoding="utf-8").splitlines()[:3]
    row = json.loads(rows[0]) | {"id": "bad-1", "stance": ["critical", "neutral"]}
    bad.write_text("\n".join([*rows, json.dumps(row)]) + "\n", encoding="utf-8")
    err = _refused(
        ["--registry", str(tmp_path / "models"), "--promote-if-better", "--eval", str(bad)], capsys
    )
    assert f"{bad}:4: field 'stance': must be one non-empty label" in err
    assert not (tmp_path / "models").exists()


def test_a_full_disk_names_where_and_leaves_nothing(model_dir: Path, tmp_path: Path) -> None:
    """A real failed write: the file size limit (RLIMIT_FSIZE) fails it as a full disk would, with
    an OSError that names no file."""
    out = tmp_path / "models" / "v2"
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from service.model.artifact import load_artifact, save_artifact
        from service.core.errors import ArtifactError
        from tests.unit.test_artifact import manifest_fields
        loaded = load_artifact({str(model_dir)!r})
        fields = manifest_fields(loaded, "v2")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            save_artifact(loaded.model, fields, {str(out)!r})
        except ArtifactError as exc:
            print(exc)
        """
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip() == f"cannot write a model under {out.parent}: File too large", done.stderr
    assert list(out.parent.iterdir()) == []  # no staging left behind
    assert json.loads((model_dir / "manifest.json").read_text())["version"] == "v1"
