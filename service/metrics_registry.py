"""The registry /metrics exposes: this process's metrics (``service.metrics``) with the default
process collectors, or, with several server processes (PROMETHEUS_MULTIPROC_DIR set), every
process's samples aggregated from the files they write there."""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.core import Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

MODEL_INFO = "newstagger_model_info"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def build_registry() -> CollectorRegistry:
    """The registry to expose: this process's metrics plus the default process collectors, or,
    in multiprocess mode, every process's samples aggregated from PROMETHEUS_MULTIPROC_DIR."""
    # process-wide: no `_created` series beside every counter and histogram child
    disable_created_metrics()  # type: ignore[no-untyped-call]
    if multiprocess_dir():
        # no auto_describe: describing would read every process's file now, at start-up, when a
        # sibling worker may have just created its own, still empty (a worker died of that)
        registry = CollectorRegistry()
        registry.register(_ServedModelOnly(prom_multiprocess.MultiProcessCollector(None)))  # type: ignore[no-untyped-call]
        return registry
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class _ServedModelOnly(Collector):
    """The workers' aggregated samples less newstagger_model_info's 0s: the models a worker
    served before (in multiprocess mode it cannot remove their series, only zero them)."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Iterable[Metric]:
        for family in self._collector.collect():
            if family.name == MODEL_INFO:
                family.samples = [s for s in family.samples if s.value != 0]
            yield family
