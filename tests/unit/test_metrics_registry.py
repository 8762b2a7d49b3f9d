"""The exposed registry under ``--workers N`` (PROMETHEUS_MULTIPROC_DIR): built while a sibling
worker is creating its metrics file."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.metrics import build_registry


def test_a_sibling_file_still_empty_does_not_stop_a_worker_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_4242.db").write_bytes(b"")  # just created by another worker, not yet sized
    registry = build_registry()  # raised struct.error when it read every file to describe them
    (tmp_path / "counter_4242.db").unlink()  # once the sibling's file is whole, scrapes read it
    assert list(registry.collect()) == []
