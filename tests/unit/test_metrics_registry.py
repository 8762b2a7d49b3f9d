"""The exposed registry: under ``--workers N`` (PROMETHEUS_MULTIPROC_DIR) built while a sibling
worker is creating its metrics file; and how many series a scrape carries."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.core.types import HeadResult, LabelScore, TagResult
from service.metrics import MAX_LABEL_SERIES, OTHER_LABEL, Metrics
from service.metrics_registry import build_registry


def test_a_sibling_file_still_empty_does_not_stop_a_worker_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_4242.db").write_bytes(b"")  # just created by another worker, not yet sized
    registry = build_registry()  # raised struct.error when it read every file to describe them
    (tmp_path / "counter_4242.db").unlink()  # once the sibling's file is whole, scrapes read it
    assert list(registry.collect()) == []


def _exposed(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]


def _tagged(head: str, labels: Iterable[str]) -> TagResult:
    scores = tuple(LabelScore(label, 0.9) for label in labels)
    return TagResult("a", (HeadResult(head, "multi", scores, scores),), "m", "v1")


def test_a_head_of_500_labels_adds_at_most_max_label_series_series() -> None:
    """A model may have 500 labels per head (more if its config says so): each used to be a series of
    its own, twice over with `_created`, so 1,000 lines per head on every scrape."""
    registry = build_registry()
    metrics = Metrics(registry)
    labels = [f"label-{i:03d}" for i in range(500)]
    metrics.set_model("m", "v1", heads={"topics": labels, "stance": ["for", "against"]})
    metrics.observe_results([_tagged("topics", reversed(labels)), _tagged("stance", ["against"])])

    lines = [line for line in _exposed(registry) if line.startswith("newstagger_predictions")]
    assert len(lines) == MAX_LABEL_SERIES + 2  # topics' first labels and (other), stance's one
    counts = {
        (s.labels["head"], s.labels["label"]): s.value
        for family in text_string_to_metric_families("\n".join(lines))
        for s in family.samples
    }
    # the first labels in the model's order have their own series, whichever came first
    assert {label for head, label in counts if head == "topics"} == {*labels[:MAX_LABEL_SERIES], OTHER_LABEL}
    assert counts[("topics", OTHER_LABEL)] == 500 - MAX_LABEL_SERIES
    assert counts[("topics", "label-000")] == 1 and counts[("stance", "against")] == 1


def test_counters_and_histograms_export_no_created_series() -> None:
    registry = build_registry()
    metrics = Metrics(registry)
    metrics.grpc_requests.labels("Tag", "OK").inc()
    metrics.batch_size.observe(3)
    exposed = _exposed(registry)
    assert any(line.startswith("newstagger_grpc_requests_total") for line in exposed)
    assert [line for line in exposed if "_created" in line.split("{")[0].split(" ")[0]] == []
