"""MicroBatcher: coalescing, no added latency for a lone caller, backpressure, deadlines,
error isolation and draining on close."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import pytest

from service.core.batcher import BatchStats, MicroBatcher
from service.core.errors import DeadlineExceeded, InvalidArticle, InvalidRequest, ModelNotReady, Overloaded
from service.core.tagger import Tagger
from service.core.types import DEFAULT_OPTIONS, Article, TagOptions, TagResult
from service.model.artifact import LoadedModel
from tests.helpers import wait_for

WAIT = 10.0  # upper bound for anything the tests wait on


class GatedTagger(Tagger):
    """A real Tagger that records each batch and, while ``gate`` is clear, holds it in the model."""

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model)
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.busy = threading.Event()

    def tag(
        self, articles: Sequence[Article], options: TagOptions | Sequence[TagOptions] = DEFAULT_OPTIONS
    ) -> list[TagResult]:
        self.batches.append([a.id for a in articles])
        self.busy.set()
        assert self.gate.wait(WAIT), "test gate never opened"
        return super().tag(articles, options)


def article(i: int | str, text: str = "Troops were deployed near the border as talks stalled.") -> Article:
    return Article(str(i), text)


@pytest.fixture()
def tagger(loaded_model: LoadedModel) -> GatedTagger:
    return GatedTagger(loaded_model)


@pytest.fixture()
def batcher(tagger: GatedTagger) -> Iterator[MicroBatcher]:
    b = MicroBatcher(tagger, max_batch_size=64, max_wait_ms=0, queue_size=100)
    yield b
    tagger.gate.set()
    b.close(WAIT)


def hold_worker(tagger: GatedTagger, batcher: MicroBatcher) -> Future[TagResult]:
    """Make the worker busy with one article, held inside the model until the gate opens."""
    tagger.gate.clear()
    first = batcher.submit(article("first"))
    assert tagger.busy.wait(WAIT)
    return first


def test_concurrent_submits_are_coalesced(tagger: GatedTagger, batcher: MicroBatcher) -> None:
    first = hold_worker(tagger, batcher)
    futures: list[Future[TagResult]] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        f = batcher.submit(article(i))
        with lock:
            futures.append(f)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    wait_for(lambda: batcher.depth() == 20, WAIT, what="20 queued")
    tagger.gate.set()
    results = [f.result(WAIT) for f in futures]
    assert first.result(WAIT).article_id == "first"
    assert sorted(r.article_id for r in results) == sorted(str(i) for i in range(20))
    assert [len(b) for b in tagger.batches] == [1, 20]  # 21 articles, 2 model calls


def test_results_match_direct_tagging(loaded_model: LoadedModel, batcher: MicroBatcher) -> None:
    arts = [article(i, t) for i, t in enumerate(["Sanctions were tightened.", "The cup final was won."])]
    direct = Tagger(loaded_model).tag(arts)
    via = [f.result(WAIT) for f in batcher.submit_many(arts)]
    assert via == direct


def test_batches_respect_max_batch_size(tagger: GatedTagger, loaded_model: LoadedModel) -> None:
    b = MicroBatcher(tagger, max_batch_size=4, queue_size=100)
    try:
        hold_worker(tagger, b)
        futures = b.submit_many([article(i) for i in range(10)])
        tagger.gate.set()
        assert len([f.result(WAIT) for f in futures]) == 10
        assert [len(x) for x in tagger.batches] == [1, 4, 4, 2]
    finally:
        tagger.gate.set()
        b.close(WAIT)


def test_lone_caller_is_not_delayed_when_max_wait_is_zero(tagger: GatedTagger) -> None:
    waiting = MicroBatcher(tagger, max_wait_ms=400)
    eager = MicroBatcher(tagger, max_wait_ms=0)
    try:
        eager.tag(article("warm"), timeout=WAIT)
        started = time.perf_counter()
        eager.tag(article("alone"), timeout=WAIT)
        eager_seconds = time.perf_counter() - started
        started = time.perf_counter()
        waiting.tag(article("alone"), timeout=WAIT)
        waiting_seconds = time.perf_counter() - started
    finally:
        eager.close(WAIT)
        waiting.close(WAIT)
    assert waiting_seconds >= 0.39  # max_wait_ms holds a non-full batch that long...
    assert eager_seconds < 0.2  # ...and 0 holds it not at all


def test_full_queue_raises_overloaded(tagger: GatedTagger) -> None:
    b = MicroBatcher(tagger, queue_size=2)
    try:
        hold_worker(tagger, b)
        queued = [b.submit(article(1)), b.submit(article(2))]
        with pytest.raises(Overloaded, match="queue full"):
            b.submit(article(3))
        with pytest.raises(Overloaded):
            b.submit_many([article(4)], block=False)
        tagger.gate.set()
        assert [f.result(WAIT).article_id for f in queued] == ["1", "2"]
        assert b.submit(article(5)).result(WAIT).article_id == "5"  # room again
    finally:
        tagger.gate.set()
        b.close(WAIT)


def test_expired_deadline_fails_without_computing(tagger: GatedTagger, batcher: MicroBatcher) -> None:
    late = batcher.submit(article("late"), deadline=time.monotonic() - 0.001)
    with pytest.raises(DeadlineExceeded):
        late.result(WAIT)
    assert batcher.tag(article("on-time"), timeout=WAIT).article_id == "on-time"
    assert all("late" not in b for b in tagger.batches)


def test_deadline_passing_while_queued(tagger: GatedTagger, batcher: MicroBatcher) -> None:
    hold_worker(tagger, batcher)
    with pytest.raises(DeadlineExceeded):
        batcher.tag(article("impatient"), timeout=0.05)
    queued = batcher.submit(article("slow"), deadline=time.monotonic() + 0.05)
    time.sleep(0.1)
    tagger.gate.set()
    with pytest.raises(DeadlineExceeded):
        queued.result(WAIT)
    assert batcher.tag(article("after"), timeout=WAIT).article_id == "after"
    assert all("impatient" not in b and "slow" not in b for b in tagger.batches)


def test_a_failing_article_fails_only_itself(tagger: GatedTagger, batcher: MicroBatcher) -> None:
    hold_worker(tagger, batcher)
    good = [batcher.submit(article(i)) for i in range(3)]
    empty = batcher.submit(Article("empty", "   "))
    bad_head = batcher.submit(article("bad-head"), TagOptions(heads=("region",)))
    good.append(batcher.submit(article(3)))
    tagger.gate.set()
    assert [f.result(WAIT).article_id for f in good] == ["0", "1", "2", "3"]
    with pytest.raises(InvalidArticle, match="empty"):
        empty.result(WAIT)
    with pytest.raises(InvalidRequest, match="unknown head"):
        bad_head.result(WAIT)


def test_close_drains_what_is_queued(tagger: GatedTagger, loaded_model: LoadedModel) -> None:
    b = MicroBatcher(tagger, max_batch_size=4, queue_size=100)
    first = hold_worker(tagger, b)
    futures = b.submit_many([article(i) for i in range(10)])
    closer = threading.Thread(target=b.close, args=(WAIT,))
    closer.start()
    wait_for(lambda: b._closed, WAIT, what="closing")
    with pytest.raises(ModelNotReady, match="shutting down"):
        b.submit(article("too-late"))
    tagger.gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert first.result(0).article_id == "first"
    assert [f.result(0).article_id for f in futures] == [str(i) for i in range(10)]


def test_submit_without_a_model_is_not_ready() -> None:
    b = MicroBatcher(Tagger())
    try:
        with pytest.raises(ModelNotReady):
            b.submit(article(1))
    finally:
        b.close(WAIT)


def test_observers_see_each_batch(tagger: GatedTagger) -> None:
    stats: list[BatchStats] = []
    seen: list[str] = []
    b = MicroBatcher(
        tagger, on_batch=stats.append, on_results=lambda rs: seen.extend(r.article_id for r in rs)
    )
    try:
        hold_worker(tagger, b)
        futures = b.submit_many([article(i) for i in range(3)])
        tagger.gate.set()
        [f.result(WAIT) for f in futures]
        wait_for(lambda: len(seen) == 4, WAIT, what="observers")
    finally:
        b.close(WAIT)
    assert [s.size for s in stats] == [1, 3]
    assert all(len(s.queue_wait_seconds) == s.size and s.inference_seconds > 0 for s in stats)
    assert seen == ["first", "0", "1", "2"]
