"""ResultBridge: batcher futures reach coroutines on an event loop, one loop wake-up per batch;
a deadline or a cancelled caller cancels the future so the batcher never computes it."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

import pytest

from service.core.batcher import MicroBatcher
from service.core.errors import DeadlineExceeded
from service.core.tagger import Tagger
from service.core.types import Article
from service.grpc_api.bridge import ResultBridge
from service.model.artifact import LoadedModel


class CountingBridge(ResultBridge):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.settles = 0
        self.events: list[str] = []

    def _settle(self) -> None:
        self.settles += 1
        super()._settle()

    def hold(self) -> None:
        self.events.append("hold")
        super().hold()

    def flush(self) -> None:
        self.events.append("flush")
        super().flush()


def test_a_batch_of_results_wakes_the_loop_once(loaded_model: LoadedModel) -> None:
    async def main() -> tuple[list[str], int, list[str]]:
        bridge = CountingBridge(asyncio.get_running_loop())
        batcher = MicroBatcher(Tagger(loaded_model), max_batch_size=64)
        batcher.add_listener(bridge)
        try:
            futures = [batcher.submit(Article(f"a{i}", f"text number {i} about markets")) for i in range(20)]
            results = await asyncio.gather(*(bridge.wait(f) for f in futures))
        finally:
            batcher.close(10)
        return [r.article_id for r in results], bridge.settles, bridge.events

    ids, settles, events = asyncio.run(main())
    assert ids == [f"a{i}" for i in range(20)]
    assert events[:2] == ["hold", "flush"] and len(events) % 2 == 0
    assert settles <= len(events) // 2  # at most one wake-up per batch, not one per result


def test_deadline_raises_and_cancels_the_future() -> None:
    async def main() -> Future[str]:
        bridge = ResultBridge(asyncio.get_running_loop())
        future: Future[str] = Future()
        with pytest.raises(DeadlineExceeded):
            await bridge.wait(future, deadline=time.monotonic() + 0.05)
        return future

    assert asyncio.run(main()).cancelled()


def test_a_cancelled_caller_cancels_the_future_and_results_still_arrive() -> None:
    async def main() -> tuple[Future[str], str]:
        bridge = ResultBridge(asyncio.get_running_loop())
        abandoned: Future[str] = Future()
        task = asyncio.create_task(bridge.wait(abandoned))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        answered: Future[str] = Future()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, lambda: loop.run_in_executor(None, answered.set_result, "done"))
        return abandoned, await bridge.wait(answered, deadline=time.monotonic() + 10)

    abandoned, result = asyncio.run(main())
    assert abandoned.cancelled()
    assert result == "done"
