"""Every Prometheus metric newstagger exports, built on an injected CollectorRegistry.

Names carry their unit; labels are bounded sets (method, code, route, status, head, label, topic,
partition, reason, kind, operation, result, model name and version), never article ids or free
text: an unknown gRPC method is counted as ``(unknown)``, an unknown HTTP path as ``unmatched``,
and a head's labels past its first ``MAX_LABEL_SERIES`` (in the model's order) as ``(other)``, so
a model with hundreds of labels per head adds at most that many series per head. Counters and
histograms export no ``_created`` series (a second series per child that nobody graphs).
Adapters record through a ``Metrics`` object handed to them; tests build their own registry and
need no cleanup.

With several server processes, set PROMETHEUS_MULTIPROC_DIR: every process writes its samples
there and ``service.metrics_registry.build_registry`` aggregates them (gauges by the mode given
below).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import service
from service.core.batch_runner import BatchStats
from service.core.types import TagResult
from service.metrics_registry import multiprocess_dir

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
MAX_LABEL_SERIES = 100  # labels of one head with a series of their own in newstagger_predictions_total
OTHER_LABEL = "(other)"  # the label value the rest of a head's labels are counted under
UNKNOWN_METHOD = "(unknown)"  # the method label of a gRPC call to a method the server does not have


class Metrics:
    """All of newstagger's metrics. In multiprocess mode pass ``registry=None`` for the metric
    objects (they write to files) and expose ``build_registry()`` instead."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self._serving: tuple[str, str] | None = None
        # label children looked up once per series (labels() takes a lock and builds a key each time)
        self._top: dict[str, Any] = {}
        self._none: dict[str, Any] = {}
        self._assigned: dict[tuple[str, str], Any] = {}
        # head -> the labels counted under their own name (at most MAX_LABEL_SERIES per head)
        self._named: dict[str, set[str]] = {}
        # gRPC
        self.grpc_requests = Counter(
            "newstagger_grpc_requests",
            "gRPC calls finished, by method (`(unknown)`: a method the server does not have) and "
            "status code.",
            ["method", "code"],
            registry=r,
        )
        self.grpc_latency = Histogram(
            "newstagger_grpc_request_duration_seconds",
            "gRPC call latency, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_in_flight = Gauge(
            "newstagger_grpc_in_flight_requests",
            "gRPC calls being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.overload_rejections = Counter(
            "newstagger_overload_rejections",
            "Articles refused by the batcher: too much work queued, or none of it could meet the deadline.",
            registry=r,
        )
        # HTTP API
        self.http_requests = Counter(
            "newstagger_http_requests",
            "HTTP API requests finished, by route (path template; `unmatched` if none) and status "
            "(499: the client disconnected before its answer).",
            ["route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "newstagger_http_request_duration_seconds",
            "HTTP API request latency, by route (path template; `unmatched` if none).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "newstagger_http_in_flight_requests",
            "HTTP API requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # batching
        self.queue_depth = Gauge(
            "newstagger_batcher_queue_depth",
            "Articles waiting in the micro-batcher.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "newstagger_batch_size_articles",
            "Articles per vectorized model call.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_wait = Histogram(
            "newstagger_batch_queue_wait_seconds",
            "Time an article waited in the batcher.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_inference = Histogram(
            "newstagger_batch_inference_seconds", "Model time per batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        # predictions
        self.predictions = Counter(
            "newstagger_predictions",
            f"Labels assigned, by head and label; a head's labels past its first {MAX_LABEL_SERIES} "
            f"(in the model's order) are counted as `{OTHER_LABEL}`.",
            ["head", "label"],
            registry=r,
        )
        self.top_score = Histogram(
            "newstagger_prediction_top_score",
            "Highest label score per article and head (a drift signal).",
            ["head"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.no_label = Counter(
            "newstagger_articles_without_label",
            "Articles with no label over threshold, by head.",
            ["head"],
            registry=r,
        )
        # Kafka
        self.kafka_consumed = Counter(
            "newstagger_kafka_consumed_records", "Records read from the input topic.", ["topic"], registry=r
        )
        self.kafka_produced = Counter(
            "newstagger_kafka_produced_records",
            "Records acknowledged by the broker, by topic: tagged records and dead letters.",
            ["topic"],
            registry=r,
        )
        self.kafka_dlq = Counter(
            "newstagger_kafka_dlq_records",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.kafka_commits = Counter("newstagger_kafka_commits", "Offset commits that succeeded.", registry=r)
        self.kafka_commit_failures = Counter(
            "newstagger_kafka_commit_failures", "Offset commits that failed.", registry=r
        )
        self.kafka_lag = Gauge(
            "newstagger_kafka_consumer_lag_records",
            "High watermark minus committed offset, per partition.",
            ["topic", "partition"],
            registry=r,
            multiprocess_mode="max",
        )
        self.kafka_event_age = Histogram(
            "newstagger_kafka_event_age_seconds",
            "Now minus the input record's timestamp, when tagged.",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.kafka_rebalances = Counter(
            "newstagger_kafka_rebalances", "Partition assignments received or revoked.", ["kind"], registry=r
        )
        self.kafka_errors = Counter(
            "newstagger_kafka_broker_errors", "Broker errors, by operation.", ["operation"], registry=r
        )
        self.kafka_retries = Counter(
            "newstagger_kafka_retries",
            "Retries after broker errors, by operation.",
            ["operation"],
            registry=r,
        )
        self.kafka_assigned = Gauge(
            "newstagger_kafka_assigned_partitions",
            "Input partitions this worker owns (0: idle, e.g. more workers than partitions).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.kafka_paused = Gauge(
            "newstagger_kafka_paused_partitions",
            "Partitions paused for backpressure.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.build_info = Gauge(
            "newstagger_build_info",
            "The running program (value 1): its version and those of Python, scikit-learn and numpy.",
            ["version", "python_version", "sklearn_version", "numpy_version"],
            registry=r,
            multiprocess_mode="max",  # the same in every worker: one series
        )
        # model
        self.model_info = Gauge(
            "newstagger_model_info",
            "The model being served (value 1); a replaced model's series is removed.",
            ["name", "version"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.model_load = Histogram(
            "newstagger_model_load_seconds",
            "Time to load and verify a model.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.model_reloads = Counter(
            "newstagger_model_reloads", "Model reload attempts, by result.", ["result"], registry=r
        )
        self.model_loaded_at = Gauge(
            "newstagger_model_loaded_timestamp_seconds",
            "Unix time the served model was loaded (time since load = time() - this).",
            registry=r,
            multiprocess_mode="liveall",
        )

    # --- recording helpers used by the adapters ---
    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.batch_inference.observe(stats.inference_seconds)
        for wait in stats.queue_wait_seconds:
            self.batch_wait.observe(wait)

    def observe_results(self, results: Sequence[TagResult]) -> None:
        for result in results:
            for head in result.heads:
                name = head.head
                if head.scores:
                    top = self._top.get(name)
                    if top is None:
                        top = self._top[name] = self.top_score.labels(name)
                    top.observe(head.scores[0].score)
                if not head.labels:
                    none = self._none.get(name)
                    if none is None:
                        none = self._none[name] = self.no_label.labels(name)
                    none.inc()
                for label in head.labels:
                    key = (name, label.label)
                    counter = self._assigned.get(key)
                    if counter is None:
                        counter = self._assigned[key] = self.predictions.labels(name, self._shown(*key))
                    counter.inc()

    def _shown(self, head: str, label: str) -> str:
        """The label value ``label`` of ``head`` is counted under: its own name for the head's first
        MAX_LABEL_SERIES labels (the model's order; without a model, the first met), else OTHER_LABEL."""
        named = self._named.setdefault(head, set())
        if label not in named and len(named) < MAX_LABEL_SERIES:
            named.add(label)
        return label if label in named else OTHER_LABEL

    def set_build_info(self) -> None:
        """Set once at start-up by every process that exposes /metrics."""
        import sklearn  # not at import time: scripts that only list the metrics need no sklearn

        versions = (service.__version__, platform.python_version(), sklearn.__version__, np.__version__)
        self.build_info.labels(*versions).set(1)

    def set_model(
        self,
        name: str,
        version: str,
        loaded_at: float | None = None,
        heads: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """The served model: ``heads`` maps each head to its labels, in the model's order."""
        if heads is not None:  # each head's first labels are the ones counted by name
            self._named = {head: set(labels[:MAX_LABEL_SERIES]) for head, labels in heads.items()}
            self._assigned = {}
        # only the served model has a series (an info metric): the replaced one's is removed, so
        # weeks of hot reloads leave one series, not one per version ever served
        replaced, self._serving = self._serving, (name, version)
        self.model_info.labels(name, version).set(1)
        if replaced is not None and replaced != self._serving:
            if multiprocess_dir():  # a worker's file cannot drop a series: build_registry hides its 0
                self.model_info.labels(*replaced).set(0)
            else:
                self.model_info.remove(*replaced)
        self.model_loaded_at.set(loaded_at if loaded_at is not None else time.time())
