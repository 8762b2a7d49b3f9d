"""Hands articles to the shared micro-batcher and awaits their results on the running event loop.

One ``Dispatcher`` per event loop (the HTTP server's loop, or the gRPC server's for the V2 gRPC
service): results come back through ``ResultBridge``, which wakes the loop once per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future

from service.core.batcher import MicroBatcher
from service.core.errors import Overloaded
from service.core.tagger import Tagger
from service.core.types import Article, TagOptions, TagResult
from service.grpc_api.bridge import ResultBridge  # transport-free: only asyncio and the core
from service.metrics import Metrics


class Dispatcher:
    def __init__(self, tagger: Tagger, batcher: MicroBatcher, metrics: Metrics) -> None:
        self.tagger = tagger
        self._batcher = batcher
        self._metrics = metrics
        self._bridge: ResultBridge | None = None

    def live(self) -> bool:
        """False once the micro-batcher's thread has died: only a restart makes the process tag again."""
        return not self._batcher.died()

    def serving(self) -> bool:
        """A model is loaded and the micro-batcher is running (as gRPC health reports it)."""
        return self.tagger.model is not None and self._batcher.alive()

    def _submit(self, article: Article, options: TagOptions, deadline: float | None) -> Future[TagResult]:
        try:
            return self._batcher.submit(article, options, deadline)
        except Overloaded:
            self._metrics.overload_rejections.inc()
            raise
        finally:
            self._metrics.queue_depth.set(self._batcher.depth())

    async def _wait(self, future: Future[TagResult], deadline: float | None) -> TagResult:
        if self._bridge is None:
            self._bridge = ResultBridge(asyncio.get_running_loop())
            self._batcher.add_listener(self._bridge)
        return await self._bridge.wait(future, deadline)

    async def tag(self, article: Article, options: TagOptions, deadline: float | None) -> TagResult:
        """Queue (the batcher validates) and await one article; domain errors propagate."""
        return await self._wait(self._submit(article, options, deadline), deadline)

    async def tag_each(
        self, articles: Sequence[Article], options: TagOptions, deadline: float | None
    ) -> list[TagResult | Exception]:
        """Every article's result or its own error, in order: a bad article fails alone.
        Request-wide problems (no model, bad options) raise before anything is queued."""
        self.tagger.require_model()
        self.tagger.check_options(options)
        pending: list[Future[TagResult] | Exception] = []
        for article in articles:
            try:  # the batcher validates the article
                pending.append(self._submit(article, options, deadline))
            except Exception as exc:  # noqa: BLE001 - reported per item
                pending.append(exc)
        outcomes: list[TagResult | Exception] = []
        try:
            for item in pending:
                if isinstance(item, Exception):
                    outcomes.append(item)
                    continue
                try:
                    outcomes.append(await self._wait(item, deadline))
                except Exception as exc:  # noqa: BLE001 - reported per item
                    outcomes.append(exc)
        except BaseException:  # cancelled (the caller left): what is still queued is not computed
            for item in pending:
                if isinstance(item, Future):
                    item.cancel()
            raise
        return outcomes
