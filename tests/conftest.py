"""Session fixtures: a small model trained from the shipped starter data, and a real broker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service.model.artifact import LoadedModel, load_artifact
from service.model.registry import ModelRegistry
from tests.helpers import STARTER, tansu_broker
from training.config import load_config
from training.train import STARTER_CONFIG, train

FAST_CONFIG = load_config(STARTER_CONFIG)  # the default model's config: what `newstagger train` builds


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
