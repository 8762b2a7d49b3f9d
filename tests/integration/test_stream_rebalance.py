"""A rebalance while the model is slow and much is in flight: the revoke callback returns well
within the session timeout (it no longer drains everything on the consumer's IO thread), and
nothing is lost or stalled: the abandoned records are tagged by their next owner. A stop while a
batch hangs publishes and commits the batches tagged before it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from service.runtime import Runtime
from tests.helpers import wait_for
from tests.integration.test_stream_support import (
    Reader,
    assert_per_key_order,
    committed_total,
    output_ids,
    produce_articles,
    stream_settings,
    worker_in_thread,
)


def slow_model(runtime: Runtime) -> None:
    real_tag = runtime.tagger.tag

    def tag(articles: Any, options: Any = None) -> Any:
        time.sleep(0.02 * len(articles))  # 400 records take 8 s: far over the 2 s session timeout
        return real_tag(articles, options) if options is not None else real_tag(articles)

    runtime.tagger.tag = tag  # type: ignore[method-assign]


def test_a_slow_drain_during_a_rebalance_neither_blocks_the_callback_nor_loses_records(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    count = 400
    settings = stream_settings(kafka_bootstrap, model_dir, max_batch_size=8)
    session_s = settings.session_timeout_ms / 1000
    produce_articles(kafka_bootstrap, settings.input_topic, range(count))
    revokes: list[float] = []
    reader = Reader(kafka_bootstrap, settings.output_topic)
    with worker_in_thread(settings, prepare=slow_model) as first:
        real_on_revoked = first.worker.on_revoked

        def timed_on_revoked(revoked: Any) -> None:
            started = time.monotonic()
            real_on_revoked(revoked)
            revokes.append(time.monotonic() - started)

        first.worker.on_revoked = timed_on_revoked  # type: ignore[method-assign]
        reader.read_count(20, timeout=30)
        with worker_in_thread(settings, prepare=slow_model) as second:  # joins: a rebalance
            reader.read_until(lambda r: len(set(output_ids(r))) == count, timeout=60)
            wait_for(
                lambda: committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == count,
                20,
                what="all committed",
            )
            assert second.worker.ready()[0]
    reader.close()
    assert revokes, "the first worker's partitions were never revoked"
    assert max(revokes) < session_s / 2, revokes
    assert set(output_ids(reader.records)) == {f"a-{i}" for i in range(count)}
    assert_per_key_order(reader.records)  # the abandoned records were re-read in order


def test_a_stop_while_a_batch_hangs_commits_the_batches_tagged_before_it(
    kafka_bootstrap: str, model_dir: Path
) -> None:
    """One poll (a chunk) takes several batches. Before, a chunk was published only once all of it
    was tagged, so a stop while its fourth batch hung threw away the three already tagged (nothing
    committed; they were tagged again after the restart). One partition: the records tagged are the
    first ones of it, and exactly they must be committed."""
    settings = stream_settings(
        kafka_bootstrap, model_dir, topic_partitions=1, max_batch_size=10, grace_seconds=4
    )
    produce_articles(kafka_bootstrap, settings.input_topic, range(100))
    gate, hung = threading.Event(), threading.Event()
    tagged: list[int] = []

    def hanging_model(runtime: Runtime) -> None:
        real_tag = runtime.tagger.tag

        def tag(articles: Any, options: Any = None) -> Any:
            if len(tagged) == 3:  # the micro-batcher calls the model from one thread
                hung.set()
                gate.wait(60)
            result = real_tag(articles, options) if options is not None else real_tag(articles)
            tagged.append(len(articles))
            return result

        runtime.tagger.tag = tag  # type: ignore[method-assign]

    try:
        with worker_in_thread(settings, prepare=hanging_model) as running:
            wait_for(hung.is_set, 30, what="the fourth batch")
            done = sum(tagged[:3])
            running.worker.stop()
            running.thread.join(settings.grace_seconds + 10)
            assert not running.thread.is_alive()
            gate.set()  # only now: the worker stopped while the batch hung
    finally:
        gate.set()
    assert 3 <= done < 100
    assert committed_total(kafka_bootstrap, settings.group_id, settings.input_topic) == done
    reader = Reader(kafka_bootstrap, settings.output_topic)
    records = reader.read_count(done, timeout=30)
    reader.close()
    assert output_ids(records) == [f"a-{i}" for i in range(done)]
