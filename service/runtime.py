"""The objects every serving process shares, wired once from Settings: tagger, batcher,
metrics, model reloader and the HTTP health/metrics endpoint. ``serve`` and ``stream`` both
start from ``build_runtime``; the gRPC API and the Kafka worker are adapters on top of it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

from prometheus_client import CollectorRegistry

from service.core.batch_runner import BatchStats
from service.core.batcher import MicroBatcher
from service.core.tagger import Tagger
from service.http import HealthServer
from service.metrics import Metrics
from service.metrics_registry import build_registry, multiprocess_dir
from service.reloader import ModelReloader
from service.settings import Settings

logger = logging.getLogger(__name__)


class Sidecar(Protocol):
    """Work a serving process runs beside its gRPC server (the stream worker, for
    ``serve --with-stream``), built by the composition root with a ``SidecarFactory``."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self) -> int:
        """Wait for it to stop (bounded by the grace period); its exit code."""
        ...


#: (runtime, on_failure) -> Sidecar; ``on_failure`` stops the process (exit status 1)
SidecarFactory = Callable[["Runtime", Callable[[], None]], Sidecar]


@dataclass
class Runtime:
    settings: Settings
    tagger: Tagger
    batcher: MicroBatcher
    metrics: Metrics
    registry: CollectorRegistry  # what /metrics exposes
    reloader: ModelReloader
    readiness: list[Callable[[], tuple[bool, str]]] = field(default_factory=list)
    http: HealthServer | None = None

    def serving(self) -> bool:
        """A model is loaded and the micro-batcher is running (what gRPC health reports)."""
        return self.tagger.model is not None and self.batcher.alive()

    def alive(self) -> tuple[bool, str]:
        """Alive unless the micro-batcher's thread died: then only a restart makes the process
        serve again (/healthz fails, so Kubernetes restarts it rather than leave it unready)."""
        if self.batcher.died():
            return False, "micro-batcher died: restart needed"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Ready when a model is loaded, the batcher runs and every adapter's own check passes."""
        model = self.tagger.model
        if model is None:
            return False, "model not loaded"
        if not self.batcher.alive():
            return False, "micro-batcher not running"
        for check in self.readiness:
            ok, reason = check()
            if not ok:
                return False, reason
        return True, f"ready: model {model.manifest.name} {model.manifest.version}"

    def start_http(self) -> int | None:
        """Start /metrics, /healthz, /readyz (unless metrics_port is 0); returns the port."""
        if self.settings.metrics_port == 0 and self.http is None:
            return None
        settings = self.settings
        self.http = HealthServer(
            self.registry, self.ready, settings.metrics_host, settings.metrics_port, alive=self.alive
        )
        return self.http.start()

    def close(self, timeout: float | None = None) -> None:
        self.reloader.stop()
        self.batcher.close(timeout)
        if self.http is not None:
            self.http.stop()


def build_runtime(settings: Settings, registry: CollectorRegistry | None = None) -> Runtime:
    """Wire the shared objects. The model is loaded now if there is one; otherwise the process
    starts unready and the reloader picks the model up when it appears."""
    if registry is None:
        registry = build_registry()
    metrics = Metrics(None if multiprocess_dir() else registry)
    metrics.set_build_info()
    tagger = Tagger(max_text_bytes=settings.max_text_bytes)
    reloader = ModelReloader(tagger, settings.model_dir, metrics, settings.reload_interval_seconds)
    outcome = reloader.check()
    if outcome.result != "loaded":
        logger.warning("no model served yet: %s", outcome.message)
    reloader.start()

    def on_batch(stats: BatchStats) -> None:
        metrics.observe_batch(stats)
        metrics.queue_depth.set(batcher.depth())

    batcher = MicroBatcher(
        tagger,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        queue_size=settings.queue_size,
        max_queue_seconds=settings.max_queue_seconds,
        on_batch=on_batch,
        on_results=metrics.observe_results,
    )
    return Runtime(settings, tagger, batcher, metrics, registry, reloader)


def install_stop_handlers(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (a serving process then drains and exits)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            logger.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
