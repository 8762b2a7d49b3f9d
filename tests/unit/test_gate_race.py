"""`train --promote-if-better` promotes the new version only over the version it was compared with:
a promote or rollback by someone else between the gate's scoring and its switch of the pointer
(which the switch's lock alone did not see) makes it compare again with the new current."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import training.gate
from service.cli import main
from service.model.manifest import write_manifest
from service.model.registry import ModelRegistry
from tests.helpers import REPO
from tests.unit.test_gate import FAST_TOML, train_args
from tests.unit.test_registry import add_version

WAIT_S = 300  # generous: training 200 rows and scoring 945 twice takes seconds


def add_blunted(registry: ModelRegistry, version: str) -> None:
    """v1 with topic thresholds so high it almost never predicts a topic: worse than v1 at the gate,
    and worse than a model trained on the 200 shift rows (0.46 against 0.87 and 0.74 macro-F1)."""
    path = add_version(registry, version)
    raw = json.loads((path / "manifest.json").read_text())
    for head in raw["heads"]:
        if head["kind"] == "multi":
            head["thresholds"] = [0.999] * len(head["thresholds"])
    raw.pop("manifest_sha256", None)
    write_manifest(path, raw)


@pytest.fixture()
def bad_current(registry: ModelRegistry) -> ModelRegistry:
    """The registry with a bad version (vbad) promoted over the good v1, which a rollback restores."""
    add_blunted(registry, "vbad")
    registry.promote("vbad")
    return registry


def _gate_argv(registry: ModelRegistry, tmp_path: Path) -> list[str]:
    fast = tmp_path / "fast.toml"
    fast.write_text(FAST_TOML)
    return train_args(registry.root, "v3", fast, "--promote-if-better", "--quiet", data="shift")


def _after_each_comparison(monkeypatch: pytest.MonkeyPatch, act: Callable[[int], None]) -> list[str]:
    """Run ``act(n)`` after the gate's n-th comparison (n from 1), between its scoring and its switch;
    returns the current version of each comparison."""
    real = training.gate.compare_models
    compared: list[str] = []

    def compare(current: Any, new: Any, *args: Any, **kwargs: Any) -> Any:
        decision = real(current, new, *args, **kwargs)
        compared.append(current.manifest.version)
        act(len(compared))
        return decision

    monkeypatch.setattr(training.gate, "compare_models", compare)
    return compared


def test_promote_if_current_switches_only_over_that_version(registry: ModelRegistry) -> None:
    from service.model.errors import CurrentChanged  # here: the other tests run on code before it

    add_version(registry, "v2")
    with pytest.raises(CurrentChanged, match="not promoting v2: v1 is current, not v0") as info:
        registry.promote("v2", if_current="v0")
    assert info.value.current == "v1"
    with pytest.raises(CurrentChanged, match="v1 is current, not no version"):
        registry.promote("v2", if_current=None)
    assert registry.current() == "v1" and [e.version for e in registry.entries()] == ["v1"]
    assert registry.promote("v2", if_current="v1") == "v1"
    assert registry.current() == "v2"


def test_a_rollback_while_the_gate_scores_makes_it_compare_with_the_restored_version(
    bad_current: ModelRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """v3 beats vbad, current when the gate started, but not v1, which an operator restored while
    it scored: v3 replaced v1 without ever being compared with it (exit 0, v1 gone)."""
    registry = bad_current

    def operator_rolls_back(n: int) -> None:
        if n == 1:
            assert main(["models", "rollback", "--registry", str(registry.root)]) == 0

    compared = _after_each_comparison(monkeypatch, operator_rolls_back)
    code = main(_gate_argv(registry, tmp_path))
    out, err = capsys.readouterr()
    assert compared == ["vbad", "v1"]
    assert "v1 became current (was vbad: another promote or rollback ran while the quality gate" in err
    assert "comparing v3 with v1 again" in err
    assert code == 3, out + err
    assert out.count("=> PROMOTE") == 1 and out.count("=> REFUSE") == 1  # vbad's table, then v1's
    assert "refused to promote v3: new macro_f1" in err and "v1 is still current" in err
    assert registry.current() == "v1"
    assert [(e.action, e.version) for e in registry.entries()][-1] == ("rollback", "v1")


def test_a_current_that_keeps_changing_is_refused_naming_both_versions(
    bad_current: ModelRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = bad_current
    add_blunted(registry, "vbad2")

    def operator_flips(n: int) -> None:  # each comparison's current is replaced before its switch
        registry.promote(("vbad2", "vbad", "vbad2")[n - 1], allow_head_changes=True)

    compared = _after_each_comparison(monkeypatch, operator_flips)
    code = main(_gate_argv(registry, tmp_path))
    err = capsys.readouterr().err
    assert compared == ["vbad", "vbad2", "vbad"]
    assert code == 3
    assert (
        "refused to promote v3: what is current changed 3 times while the quality gate scored "
        "(last to vbad2), so v3 was never compared with vbad2" in err
    )
    assert registry.current() == "vbad2" and "v3" in registry.versions()


def test_a_version_promoted_by_hand_while_the_gate_scores_is_left_current(
    bad_current: ModelRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = bad_current
    _after_each_comparison(monkeypatch, lambda n: registry.promote("v3") and None)
    assert main(_gate_argv(registry, tmp_path)) == 0
    assert "v3 is already current" in capsys.readouterr().out
    assert [e.version for e in registry.entries()] == ["v1", "vbad", "v3"]  # one line, not two


# --- two real processes: `train` held between scoring and switching by a filesystem barrier ---

_BARRIER = """
import sys, time
from pathlib import Path
import training.gate
from service.cli import main

scored, go = Path(sys.argv[1]), Path(sys.argv[2])
real = training.gate.compare_models

def compare(*args, **kwargs):
    decision = real(*args, **kwargs)
    if not scored.exists():  # the first comparison only: announce it, wait for the test's go
        scored.write_text(args[0].manifest.version)
        deadline = time.monotonic() + 300
        while not go.exists():
            if time.monotonic() > deadline:
                sys.exit("barrier: no go within 300 s")
            time.sleep(0.05)
    return decision

training.gate.compare_models = compare
sys.exit(main(sys.argv[3:]))
"""


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSTAGGER_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_a_real_rollback_between_the_gates_scoring_and_switch_is_seen(
    bad_current: ModelRegistry, tmp_path: Path
) -> None:
    registry = bad_current
    scored, go = tmp_path / "scored", tmp_path / "go"
    argv = _gate_argv(registry, tmp_path)
    train = subprocess.Popen(
        [sys.executable, "-c", _BARRIER, str(scored), str(go), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_cli_env(),
    )
    with train:
        try:
            deadline = time.monotonic() + WAIT_S
            while not scored.exists():  # the train process has compared v3 with vbad, not switched
                assert train.poll() is None, train.communicate()
                assert time.monotonic() < deadline, "train never reached the gate"
                time.sleep(0.1)
            assert scored.read_text() == "vbad"
            rollback = subprocess.run(
                [sys.executable, "-m", "service.cli", "models", "rollback", "--registry", str(registry.root)],
                capture_output=True,
                text=True,
                cwd=REPO,
                env=_cli_env(),
                timeout=WAIT_S,
            )
            assert rollback.returncode == 0, rollback.stderr
            assert registry.current() == "v1"
            go.touch()
            out, err = train.communicate(timeout=WAIT_S)
        except BaseException:
            train.kill()
            raise
    assert "comparing v3 with v1 again" in err
    assert train.returncode == 3, out + err
    assert "current v1" in out and "=> REFUSE" in out
    assert registry.current() == "v1" and "v3" in registry.versions()
