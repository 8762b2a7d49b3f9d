"""MicroBatcher: coalescing, no added latency for a lone caller, backpressure, deadlines,
error isolation and draining on close."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import pytest

from service.core.batch_runner import BatchStats, CostModel
from service.core.batcher import MicroBatcher
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
    via = [batcher.submit(a).result(WAIT) for a in arts]
    assert via == direct


def test_batches_respect_max_batch_size(tagger: GatedTagger, loaded_model: LoadedModel) -> None:
    b = MicroBatcher(tagger, max_batch_size=4, queue_size=100)
    try:
        hold_worker(tagger, b)
        futures = [b.submit(article(i)) for i in range(10)]
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
        tagger.gate.set()
        assert [f.result(WAIT).article_id for f in queued] == ["1", "2"]
        assert b.submit(article(5)).result(WAIT).article_id == "5"  # room again
    finally:
        tagger.gate.set()
        b.close(WAIT)


def test_expired_deadline_is_refused_without_computing(tagger: GatedTagger, batcher: MicroBatcher) -> None:
    with pytest.raises(DeadlineExceeded):
        batcher.submit(article("late"), deadline=time.monotonic() - 0.001)
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


def test_a_bad_article_is_refused_at_the_door_alone(tagger: GatedTagger, batcher: MicroBatcher) -> None:
    hold_worker(tagger, batcher)
    good = [batcher.submit(article(i)) for i in range(3)]
    with pytest.raises(InvalidArticle, match="empty"):
        batcher.submit(Article("empty", "   "))
    with pytest.raises(InvalidRequest, match="unknown head"):
        batcher.submit(article("bad-head"), TagOptions(heads=("region",)))
    good.append(batcher.submit(article(3)))
    tagger.gate.set()
    assert [f.result(WAIT).article_id for f in good] == ["0", "1", "2", "3"]


def test_close_drains_what_is_queued(tagger: GatedTagger, loaded_model: LoadedModel) -> None:
    b = MicroBatcher(tagger, max_batch_size=4, queue_size=100)
    first = hold_worker(tagger, b)
    futures = [b.submit(article(i)) for i in range(10)]
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
        futures = [b.submit(article(i)) for i in range(3)]
        tagger.gate.set()
        [f.result(WAIT) for f in futures]
        wait_for(lambda: len(seen) == 4, WAIT, what="observers")
    finally:
        b.close(WAIT)
    assert [s.size for s in stats] == [1, 3]
    assert all(len(s.queue_wait_seconds) == s.size and s.inference_seconds > 0 for s in stats)
    assert seen == ["first", "0", "1", "2"]


class CancelledInTheRace(Future[TagResult]):
    """A future whose caller cancels it the instant the batcher looks at it: between its check
    and its answer (the race that used to kill the batcher thread)."""

    def cancelled(self) -> bool:
        was = super().cancelled()
        self.cancel()
        return was

    def set_running_or_notify_cancel(self) -> bool:
        self.cancel()
        return super().set_running_or_notify_cancel()


def test_a_cancel_racing_the_deadline_does_not_kill_the_batcher(
    tagger: GatedTagger, batcher: MicroBatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_worker(tagger, batcher)
    with monkeypatch.context() as patch:
        patch.setattr("service.core.batcher.Future", CancelledInTheRace)
        racy = batcher.submit(article("racy"), deadline=time.monotonic() + 0.05)
    time.sleep(0.1)  # its deadline passes while it is queued
    tagger.gate.set()
    assert batcher.tag(article("after"), timeout=5).article_id == "after"
    assert racy.cancelled()
    assert all("racy" not in b for b in tagger.batches)


class FailingListener:
    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in

    def hold(self) -> None:
        if self.fail_in == "hold":
            raise RuntimeError("listener failed in hold")

    def flush(self) -> None:
        if self.fail_in == "flush":
            raise RuntimeError("listener failed in flush")


@pytest.mark.parametrize("fail_in", ["hold", "flush"])
def test_an_exception_in_a_batch_fails_that_batch_only(
    batcher: MicroBatcher, fail_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    listener = FailingListener(fail_in)
    batcher.add_listener(listener)
    first = batcher.submit(article("first"))
    if fail_in == "hold":  # before any result was set: the batch's futures fail (once)
        with pytest.raises(RuntimeError, match="listener failed"):
            first.result(WAIT)
    else:  # after: the results stand
        assert first.result(WAIT).article_id == "first"
    listener.fail_in = ""
    assert batcher.tag(article("next"), timeout=5).article_id == "next"
    assert batcher.alive()
    assert any("batch failed" in r.message for r in caplog.records)


def test_liveness_and_close_never_hang(tagger: GatedTagger) -> None:
    b = MicroBatcher(tagger)
    assert b.alive()
    b.close(WAIT)
    assert not b.alive()
    with pytest.raises(ModelNotReady):
        b.submit(article(1))


def slow_costs(b: MicroBatcher, seconds_per_article: float) -> None:
    """Make the batcher expect ``seconds_per_article`` of model time per test article."""
    b.costs.seconds_per_char = seconds_per_article / CostModel.size(article(0))


def test_a_deadline_the_queued_work_would_miss_is_refused_at_once(
    tagger: GatedTagger, batcher: MicroBatcher
) -> None:
    hold_worker(tagger, batcher)
    slow_costs(batcher, 0.3)
    queued = batcher.submit(article("queued"))  # about 0.3 s of work ahead of the next one
    started = time.perf_counter()
    with pytest.raises(Overloaded, match="miss the deadline"):
        batcher.submit(article("hurried"), deadline=time.monotonic() + 0.5)
    assert time.perf_counter() - started < 0.05
    with pytest.raises(DeadlineExceeded, match="too short"):
        batcher.submit(article("hopeless"), deadline=time.monotonic() + 0.2)
    patient = batcher.submit(article("patient"), deadline=time.monotonic() + 5)
    tagger.gate.set()
    assert queued.result(WAIT).article_id == "queued"
    assert patient.result(WAIT).article_id == "patient"


def test_the_queue_is_bounded_in_seconds_of_work(tagger: GatedTagger) -> None:
    b = MicroBatcher(tagger, max_queue_seconds=1.5)
    try:
        hold_worker(tagger, b)
        slow_costs(b, 1.0)
        kept = [b.submit(article(1)), b.submit(article(2))]  # 0 s, then 1 s waiting: admitted
        assert 1.9 < b.expected_wait() < 2.1
        with pytest.raises(Overloaded, match="of work waiting"):
            b.submit(article(3))
        kept[1].cancel()  # a cancelled article stops counting at once
        assert 0.9 < b.expected_wait() < 1.1
        kept.append(b.submit(article(4)))
        tagger.gate.set()
        assert [f.result(WAIT).article_id for f in (kept[0], kept[2])] == ["1", "4"]
    finally:
        tagger.gate.set()
        b.close(WAIT)


def test_the_cost_model_learns_from_batches(batcher: MicroBatcher) -> None:
    slow_costs(batcher, 100.0)
    for i in range(20):
        batcher.submit(article(i)).result(WAIT)
    assert batcher.costs.seconds_per_char * CostModel.size(article(0)) < 5.0
