"""``serve --workers``: a metrics directory given from outside starts each run empty."""

from __future__ import annotations

from pathlib import Path

from service.grpc_api.workers import _clear_metric_files


def test_a_previous_runs_metric_files_are_removed(tmp_path: Path) -> None:
    for name in ("counter_123.db", "gauge_livesum_123.db", "notes.txt"):
        (tmp_path / name).write_text("x")
    _clear_metric_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
