"""Progress of long work: a bar on a terminal, plain lines otherwise, nothing with --quiet."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.cli import main
from tests.helpers import STARTER, starter_rows
from training.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_mode_gives_steps_with_elapsed_time_and_eta() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(4, out, "lines", clock)
    progress.advance(0, "folds")
    clock.now = 10.0
    progress.advance(1)
    progress.note("fold 1 done")
    clock.now = 20.0
    progress.advance(1)
    progress.finish("done")
    assert out.getvalue().splitlines() == [
        "[0/4] folds (0.0s)",
        "[1/4] folds (10.0s, ETA 30.0s)",
        "      fold 1 done",
        "[2/4] folds (20.0s, ETA 20.0s)",
        "[4/4] done (20.0s)",
    ]


def test_bar_mode_redraws_one_line_and_prints_notes_above_it() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(2, out, "bar", clock)
    progress.advance(0, "tuning")
    clock.now = 90.0
    progress.advance(1)
    progress.note("candidate 1: 0.81")
    progress.finish("done")
    text = out.getvalue()
    assert "\r\x1b[2K[....................] 0/2 tuning  0.0s" in text
    assert "\r\x1b[2K[##########..........] 1/2 tuning  1m30s, ETA 1m30s" in text
    assert "\r\x1b[2Kcandidate 1: 0.81\n" in text  # the bar is cleared, the note stays
    assert text.endswith("[####################] 2/2 done  1m30s\n")


def test_quiet_mode_and_bad_mode() -> None:
    out = io.StringIO()
    progress = Progress(3, out, "quiet")
    progress.advance(1, "x")
    progress.note("y")
    progress.finish("z")
    assert out.getvalue() == ""
    with pytest.raises(ValueError, match="progress mode"):
        Progress(1, out, "fancy")


def test_evaluate_progress_in_lines_and_quiet_mode(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--model", str(model_dir), "--data", str(STARTER / "dev.jsonl")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    n_dev, n_train = starter_rows("dev"), starter_rows("train")
    assert f"model newstagger v1 on {n_dev} rows" in out
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines[0].startswith("[0/1] loading ")
    assert lines[-1].startswith(f"[{n_dev}/{n_dev}] scored {n_dev} rows (")
    assert main([*args, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and f"model newstagger v1 on {n_dev} rows" in out
    # the figures recorded at training, each with what it was measured on
    assert f"cross-validated estimate: 5-fold out-of-fold scores on {n_train} training rows" in out
    assert f"dev score: {n_dev} dev rows (scored only: never fitted or tuned on)" in out


def test_train_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    """stderr a pseudo-terminal: the bar is redrawn in place (carriage returns), with an ETA."""
    rows = "".join(
        f'{{"id": "r{i}", "text": "report number {i % 7} on {"war" if i % 2 else "trade"}", '
        f'"stance": "{"pro" if i % 2 else "con"}"}}\n'
        for i in range(40)
    )
    (tmp_path / "t.jsonl").write_text(rows, encoding="utf-8")
    master, slave = os.openpty()
    argv = [sys.executable, "-m", "service.cli", "train", "--data", str(tmp_path / "t.jsonl")]
    with subprocess.Popen(
        [*argv, "--out", str(tmp_path / "m")], stdout=subprocess.PIPE, stderr=slave, cwd=tmp_path
    ) as proc:
        os.close(slave)
        chunks = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
        os.close(master)
        assert proc.wait(timeout=60) == 0
        stdout = proc.stdout.read().decode() if proc.stdout else ""
    err = b"".join(chunks).decode()
    assert "\r\x1b[2K[" in err and "] 6/6 done: model newstagger" in err
    assert "ETA" in err
    assert "cross-validated estimate: 5-fold out-of-fold scores on 40 training rows" in stdout
