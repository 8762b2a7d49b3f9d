"""How the stream worker classifies broker failures: retry with a growing backoff, stop for good
(StreamFailed) on an error retrying cannot fix or once the failures outlast the limit."""

from __future__ import annotations

import time

import pytest
from kafka.errors import InvalidReceiveError, KafkaConnectionError, KafkaTimeoutError, UnsupportedCodecError
from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.stream.retrying import BrokerStatus, Retrying, StreamFailed


def status(limit: float) -> tuple[BrokerStatus, CollectorRegistry]:
    registry = CollectorRegistry()
    return BrokerStatus(Metrics(registry), limit), registry


def test_an_error_retrying_cannot_fix_stops_at_once() -> None:
    broker, registry = status(60)
    with pytest.raises(StreamFailed, match="UnsupportedCodecError"):
        broker.trouble("poll", UnsupportedCodecError("Libraries for zstd compression codec not found"))
    assert registry.get_sample_value("newstagger_kafka_broker_errors_total", {"operation": "poll"}) == 1


def test_a_request_failed_by_a_response_too_large_to_read_is_retried() -> None:
    """kafka-python aborts the connection on a fetch response over its receive limit, failing
    every request in flight on it (a commit, an offset query) with InvalidReceiveError, which is
    not marked retriable; the worker dead-letters the record and the requests succeed again."""
    broker, registry = status(60)
    assert broker.trouble("commit", InvalidReceiveError("Invalid frame length: 100000157")) > 0
    assert registry.get_sample_value("newstagger_kafka_retries_total", {"operation": "commit"}) == 1


def test_retriable_errors_back_off_until_the_limit_then_stop() -> None:
    broker, _ = status(0.3)
    backoffs = [broker.trouble("produce", KafkaTimeoutError("flush timed out")) for _ in range(3)]
    assert backoffs == sorted(backoffs) and backoffs[0] > 0
    assert not broker.ok
    time.sleep(0.35)
    with pytest.raises(StreamFailed, match="over the limit"):
        broker.trouble("produce", KafkaConnectionError("broker down"))


def test_a_success_resets_the_clock_of_its_operation_only() -> None:
    broker, _ = status(0.2)
    broker.trouble("commit", KafkaTimeoutError("slow"))
    broker.trouble("produce", KafkaTimeoutError("slow"))
    broker.fine("produce")
    assert not broker.ok  # commit still failing
    time.sleep(0.25)
    broker.trouble("produce", KafkaTimeoutError("slow again"))  # a fresh failure: no StreamFailed
    with pytest.raises(StreamFailed):
        broker.trouble("commit", KafkaTimeoutError("still slow"))


def test_retrying_backoff_is_capped() -> None:
    retrying = Retrying("tagging", 60)
    assert max(retrying.failed(RuntimeError("x")) for _ in range(20)) <= 5.0
    retrying.succeeded()
    assert retrying.ok


def test_every_retriable_failure_is_counted_as_a_retry_of_its_operation() -> None:
    broker, registry = status(60)
    for operation in ("poll", "commit", "produce"):
        broker.trouble(operation, KafkaTimeoutError("slow"))
        assert registry.get_sample_value("newstagger_kafka_retries_total", {"operation": operation}) == 1
