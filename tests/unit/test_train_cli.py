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
from service.model.registry import ModelRegistry
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


def test_dev_or_eval_rows_that_are_training_rows_are_refused_before_training(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same file as --data and --dev (or --eval) was trained on for minutes, then scored as if
    held out, and the quality gate judged on rows the new model was fitted on."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    err = _refused(["--dev", str(DATA), "--out", str(tmp_path / "m")], capsys)
    assert f"{len(rows)} of the {len(rows)} --dev rows are also training rows" in err
    assert f"ids {rows[0]['id']!r}, {rows[1]['id']!r}" in err and "--allow-dev-overlap" in err
    assert "--dev rows" in _refused(["--tune", "--dev", str(DATA), "--out", str(tmp_path / "m")], capsys)
    # a copy under another id, re-cased and re-spaced, is still a training row; a fresh one is not
    copy = rows[7] | {
        "id": "copy-of-7",
        "title": rows[7].get("title", "").upper(),
        "text": "  " + rows[7]["text"].replace(" ", "\n  "),
    }
    fresh = rows[8] | {"id": "fresh", "text": rows[8]["text"] + " And a new sentence."}
    held = tmp_path / "eval.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in [fresh, copy]), encoding="utf-8")
    gate = ["--registry", str(tmp_path / "models"), "--promote-if-better", "--eval", str(held)]
    err = _refused(gate, capsys)
    assert "1 of the 2 --eval rows are also training rows" in err and "ids 'copy-of-7'" in err
    assert "--dev rows" not in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "models").exists()


def small_rows(prefix: str, n: int) -> list[dict[str, Any]]:
    """Rows a model learns in a second: economy or art, critical or neutral."""
    economy = "Inflation and interest rates rose, the central bank said ({})."
    other = "The museum opened an art exhibition at the festival ({})."
    return [
        {
            "id": f"{prefix}{i}",
            "text": (economy if i % 2 else other).format(f"{prefix}{i}"),
            "topics": ["economy"] if i % 2 else ["art"],
            "stance": "critical" if i % 4 < 2 else "neutral",
        }
        for i in range(n)
    ]


def small_data(tmp_path: Path) -> list[str]:
    """``train`` arguments for a model trained in a second or two, into the registry ``models``."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in small_rows("t", 16)), encoding="utf-8")
    config = tmp_path / "c.toml"
    config.write_text("[thresholds]\ncv_folds = 2\n")
    return ["train", "--data", str(data), "--config", str(config), "--registry", str(tmp_path / "models")]


def test_eval_files_are_read_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The --eval files were read twice: checked before training, then read again to be scored,
    so a file changed in between was scored unchecked."""
    held = tmp_path / "eval.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in small_rows("e", 8)), encoding="utf-8")
    reads: list[Path] = []
    open_path = Path.open

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        reads.append(path)
        return open_path(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counted)
    assert main([*small_data(tmp_path), "--promote-if-better", "--eval", str(held)]) == 0
    out = capsys.readouterr().out
    assert "quality gate" in out and f"--eval {held}" in out and "promoted" in out
    assert [p for p in reads if p.resolve() == held.resolve()] == [held]


def test_progress_names_the_registry_not_a_staging_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Progress said `writing <registry>/versions/.pending-<pid>-<hex>`: a hidden staging name
    the user never sees again."""
    argv = small_data(tmp_path)
    root = tmp_path / "models"
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"writing a new version in {root}" in err and ".pending" not in err
    version = ModelRegistry(root).current()
    assert version is not None and f"done: model newstagger {version}" in err
    # with --version, the version's own directory is named
    assert main([*argv, "--no-promote", "--version", "v9"]) == 0
    assert f"writing {root / 'versions' / 'v9'}" in capsys.readouterr().err


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
