"""Entry point of ``newstagger stream``, and ``build_stream_worker`` for ``serve --with-stream``."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from types import FrameType

from service.core.errors import NewstaggerError
from service.core.types import Article, TagResult
from service.logs import configure_logging
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from service.stream.worker import StreamWorker

logger = logging.getLogger(__name__)

MODEL_WAIT_LOG_S = 30.0


def build_stream_worker(runtime: Runtime) -> StreamWorker:
    """A worker tagging through the runtime's shared micro-batcher (blocking submit =
    backpressure) and recording into its metrics."""

    def submit(articles: Sequence[Article]) -> list[Future[TagResult]]:
        return runtime.batcher.submit_many(articles, block=True)

    def model_version() -> str:
        model = runtime.tagger.model
        return model.manifest.version if model is not None else ""

    return StreamWorker(runtime.settings, submit, runtime.metrics, model_version)


def wait_for_model(runtime: Runtime, stop: threading.Event) -> bool:
    """Block until a model is loaded (the reloader picks one up) or ``stop`` is set."""
    waited = 0.0
    while runtime.tagger.model is None:
        if stop.wait(0.5):
            return False
        waited += 0.5
        if waited % MODEL_WAIT_LOG_S == 0:
            logger.warning("stream worker waiting for a model in %s", runtime.settings.model_dir)
    return True


def run_stream(settings: Settings) -> int:
    """Run the worker until SIGTERM/SIGINT; then finish the batch, flush, commit and exit 0.
    A NewstaggerError (no broker, metrics port taken) is raised for the CLI to print in one line."""
    configure_logging(settings.log_level, settings.log_format)
    runtime = build_runtime(settings)
    stop = threading.Event()
    started = time.monotonic()
    code = 0
    try:
        runtime.start_http()
        worker = build_stream_worker(runtime)
        runtime.readiness.append(worker.ready)

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s: stopping", signal.Signals(signum).name)
            stop.set()
            worker.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if wait_for_model(runtime, stop):
            worker.run()
    except NewstaggerError:
        raise
    except Exception:
        logger.exception("stream worker failed")
        code = 1
    finally:
        runtime.close(timeout=max(1.0, settings.grace_seconds))
    logger.info("stream worker exited after %.1fs", time.monotonic() - started)
    return code
