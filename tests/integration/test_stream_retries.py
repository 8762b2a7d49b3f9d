"""Transient tagging failures are retried, never dead-lettered; a poison record still is; every
size limit of an event is enforced before the model sees it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from service.core.errors import ModelNotReady
from service.runtime import Runtime
from tests.helpers import wait_for
from tests.integration.test_stream_support import (
    Reader,
    article,
    committed_total,
    highwaters,
    output_ids,
    produce,
    produce_articles,
    stream_settings,
    worker_in_thread,
)


def failing_for(seconds: float, error: type[Exception]) -> Any:
    """A prepare hook: the model raises ``error`` on every call for ``seconds`` after its first call."""

    def prepare(runtime: Runtime) -> None:
        real_tag = runtime.tagger.tag
        state: dict[str, float] = {}

        def tag(articles: Any, options: Any = None) -> Any:
            first = state.setdefault("first", time.monotonic())
            if time.monotonic() - first < seconds:
                raise error("the model backend is briefly unavailable")
            return real_tag(articles, options) if options is not None else real_tag(articles)

        runtime.tagger.tag = tag  # type: ignore[method-assign]

    return prepare


@pytest.mark.parametrize("error", [RuntimeError, ModelNotReady])
def test_a_model_failing_for_a_while_is_retried_not_dead_lettered(
    kafka_bootstrap: str, model_dir: Path, caplog: pytest.LogCaptureFixture, error: type[Exception]
) -> None:
    settings = stream_settings(kafka_bootstrap, model_dir)
    produce_articles(kafka_bootstrap, settings.input_topic, range(30))
    with caplog.at_level(logging.WARNING), worker_in_thread(settings, prepare=failing_for(2.0, error)):
        reader = Reader(kafka_bootstrap, settings.output_topic)
        tagged = reader.read_until(lambda r: len(set(output_ids(r))) == 30, timeout=45)
        reader.close()
        wait_for(lambda: committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == 30, 20)
    assert sorted(set(output_ids(tagged))) == sorted(f"a-{i}" for i in range(30))
    dlq = Reader(kafka_bootstrap, settings.dlq_topic)  # the worker has stopped: read all it wrote
    try:
        assert dlq.read_to(highwaters(kafka_bootstrap, settings.dlq_topic)) == []
    finally:
        dlq.close()
    assert any("will retry" in r.getMessage() for r in caplog.records)
    if error is RuntimeError:  # an unexpected error: logged with its traceback
        failed = [r for r in caplog.records if r.getMessage().startswith("the model failed on a record")]
        assert failed and all(r.exc_info and r.exc_info[0] is RuntimeError for r in failed)


def test_every_field_of_an_event_is_bounded(kafka_bootstrap: str, model_dir: Path) -> None:
    """A huge title (or target, id, url...) with a tiny text is refused like a huge text."""
    settings = stream_settings(kafka_bootstrap, model_dir, max_text_bytes=5000)
    bad = {
        "title": article(1, title="x" * 6000, text="short"),
        "target": article(2, target="y" * 4000, title="z" * 1500),
        "url": article(3, url="https://example.test/" + "u" * 9000),
        "id": article(4, id="i" * 9000),
    }
    records = [(name.encode(), json.dumps(value).encode(), []) for name, value in bad.items()]
    records.append((b"good", json.dumps(article(5)).encode(), []))
    produce(kafka_bootstrap, settings.input_topic, records)
    with worker_in_thread(settings):
        reader = Reader(kafka_bootstrap, settings.output_topic, settings.dlq_topic)
        got = reader.read_count(len(records), timeout=30)
        reader.close()
    dead = [r for r in got if r.topic == settings.dlq_topic]
    reasons = {r.key: dict(r.headers)["newstagger-error-reason"] for r in dead}
    assert reasons == {
        b"title": b"text_too_long",
        b"target": b"text_too_long",
        b"url": b"field_too_long",
        b"id": b"field_too_long",
    }
    assert output_ids([r for r in got if r.topic == settings.output_topic]) == ["a-5"]
