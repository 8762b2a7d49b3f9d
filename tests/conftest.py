"""Session fixtures: a small model trained from the shipped starter data (and one trained by the CLI),
a real broker; and the helpers the CLI and data tests share (run_cli, data_error)."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.core.errors import DataError
from service.model.artifact import LoadedModel, load_artifact
from service.model.registry import ModelRegistry
from tests.helpers import STARTER, tansu_broker
from training.config import TrainConfig, load_config
from training.data import load_dataset
from training.train import STARTER_CONFIG, train

FAST_CONFIG = load_config(STARTER_CONFIG)  # the default model's config: what `newstagger train` builds


def data_error(paths: list[Path], config: TrainConfig | None = None, **kwargs: Any) -> str:
    """The message of the DataError ``load_dataset`` raises (the test fails if it raises none)."""
    with pytest.raises(DataError) as info:
        load_dataset(paths, TrainConfig() if config is None else config, **kwargs)
    return str(info.value)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``newstagger *argv`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training config without cross-validation (one fit), for the CLI tests' trainings."""
    path = tmp_path_factory.mktemp("config") / "fast.toml"
    path.write_text("[thresholds]\ncv_folds = 0\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def cli_model(tmp_path_factory: pytest.TempPathFactory, fast_config: Path) -> tuple[Path, str, str]:
    """`newstagger train --out` on the starter data; returns (dir, stdout, stderr). Read-only: the
    CLI tests of train, evaluate and tag share it."""
    out = tmp_path_factory.mktemp("cli") / "model"
    with pytest.MonkeyPatch.context() as mp:
        stdout, stderr = io.StringIO(), io.StringIO()
        mp.setattr("sys.stdout", stdout)
        mp.setattr("sys.stderr", stderr)
        data = ["--data", str(STARTER / "train.jsonl"), "--dev", str(STARTER / "dev.jsonl")]
        code = main(["train", *data, "--config", str(fast_config), "--out", str(out), "--version", "cli-1"])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


#: what the session's model may take to train (4m45s measured on a 2-core machine at load 8)
TRAINING_TIMEOUT_S = 1800


@contextmanager
def session_setup_time(bound: float) -> Iterator[None]:
    """Session set-up runs inside the first test that asks for it, so it would count against that
    test's 300 s of pytest-timeout: its timer (the SIGALRM one: ITIMER_REAL) is given ``bound``
    meanwhile, and what was left of the test's own time afterwards."""
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    if left:
        signal.setitimer(signal.ITIMER_REAL, bound)
    try:
        yield
    finally:
        if left:
            signal.setitimer(signal.ITIMER_REAL, left)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model, trained once per session on the shipped starter set; not in the time of
    the test that happens to ask for it first (on a loaded machine that test failed at 300 s)."""
    out = tmp_path_factory.mktemp("model") / "v1"
    with session_setup_time(TRAINING_TIMEOUT_S):
        train([STARTER / "train.jsonl"], out, FAST_CONFIG, [STARTER / "dev.jsonl"], version="v1")
    return out


@pytest.fixture(scope="session")
def loaded_model(model_dir: Path) -> LoadedModel:
    return load_artifact(model_dir)


@pytest.fixture()
def registry(tmp_path: Path, model_dir: Path) -> ModelRegistry:
    """A registry holding the session model as version v1, current."""
    import shutil

    reg = ModelRegistry(tmp_path / "registry")
    shutil.copytree(model_dir, reg.new_version_dir("v1"))
    reg.promote("v1")
    return reg


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set (e.g. Apache Kafka), else a tansu broker on loopback."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with tansu_broker() as bootstrap:
        yield bootstrap
