"""The stream worker's one start-up path, for ``newstagger stream`` and ``serve --with-stream``.

``StreamService`` runs the worker in a thread of a serving process: it first waits for a model
(not ready meanwhile, and nothing is read, so nothing can be dropped), then runs the worker. A
worker that cannot go on calls ``on_failure`` so that the process stops with a non-zero status
(the orchestrator restarts it; the group gives its partitions to the other members).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from service.core.errors import NewstaggerError
from service.logs import configure_logging
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from service.stream.worker import StreamWorker

logger = logging.getLogger(__name__)

MODEL_WAIT_LOG_S = 30.0
#: what a stopping worker may take beyond ``grace_seconds`` (closing its clients) before the
#: process exits without it
STOP_MARGIN_S = 3.0


def build_stream_worker(runtime: Runtime) -> StreamWorker:
    """A worker tagging through the runtime's shared micro-batcher, recording into its metrics."""

    def model_version() -> str:
        model = runtime.tagger.model
        return model.manifest.version if model is not None else ""

    return StreamWorker(runtime.settings, runtime.batcher.submit, runtime.metrics, model_version)


class StreamService:
    """The stream worker beside whatever else the process serves (see the module docstring)."""

    def __init__(self, runtime: Runtime, on_failure: Callable[[], None]) -> None:
        self.runtime = runtime
        self.worker = build_stream_worker(runtime)
        self.exit_code = 0
        self.error: NewstaggerError | None = None  # why it stopped on its own, if it did
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._waiting = True
        self._thread = threading.Thread(target=self._run, name="stream-worker", daemon=True)

    def start(self) -> None:
        self.runtime.readiness.append(self.ready)
        self._thread.start()

    def ready(self) -> tuple[bool, str]:
        if self._waiting:
            return False, "stream worker: waiting for a model"
        return self.worker.ready()

    def stop(self) -> None:
        self._stop.set()
        self.worker.stop()

    def join(self) -> int:
        """Wait for the worker to stop; its exit code. Past the grace period plus a margin the
        process exits at once with status 1."""
        self._thread.join(self.runtime.settings.grace_seconds + STOP_MARGIN_S)
        if self._thread.is_alive():  # stuck in a client call: end the process now (its clients'
            # exit hooks would wait on the same broker); what it did not commit is read again
            logger.error("the stream worker did not stop in time; exiting without it")
            logging.shutdown()
            os._exit(1)
        return self.exit_code

    def _run(self) -> None:
        try:
            if self._wait_for_model():
                self._waiting = False
                self.worker.run()
        except NewstaggerError as exc:  # StreamFailed, KafkaSetupError: a sentence, no traceback
            self.exit_code = 1
            self.error = exc
            logger.error("stream worker stopped: %s", exc)
            self._on_failure()
        except Exception:
            self.exit_code = 1
            logger.exception("stream worker failed")
            self._on_failure()

    def _wait_for_model(self) -> bool:
        """Block until a model is loaded (the reloader picks one up) or ``stop``."""
        started = logged = time.monotonic()
        while self.runtime.tagger.model is None:
            if self._stop.wait(0.2):
                return False
            if time.monotonic() - logged >= MODEL_WAIT_LOG_S:
                logged = time.monotonic()
                logger.warning(
                    "stream worker waiting %.0fs for a model in %s",
                    logged - started,
                    self.runtime.settings.model_dir,
                )
        return True


def run_stream(settings: Settings) -> int:
    """Run the worker until SIGTERM/SIGINT (finish the batch, flush, commit, exit 0). If it cannot
    go on (no broker, a fatal Kafka error, retries past the limit) its NewstaggerError is raised
    for the CLI to print in one line (exit 2); an unexpected error exits 1. After a signal the
    whole stop (worker, batcher, HTTP endpoint) fits in ``grace_seconds`` plus about a second,
    broker or no broker."""
    configure_logging(settings.log_level, settings.log_format)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    deadline = float("inf")
    runtime = build_runtime(settings)
    try:
        runtime.start_http()
        service = StreamService(runtime, on_failure=stop.set)
        service.start()
        while not stop.wait(0.5):
            pass
        deadline = time.monotonic() + settings.grace_seconds + 1.0
        service.stop()
        code = service.join()
    finally:
        # the worker cancelled the tagging it no longer waits for: the batcher stops at once
        runtime.close(timeout=max(0.5, min(5.0, settings.grace_seconds, deadline - time.monotonic())))
    logger.info("stream worker exited after %.1fs", time.monotonic() - started)
    # the process is ending: spare it the final garbage collection of every object (the model
    # included), which takes a second or more; nothing left needs finalizing
    gc.freeze()
    if service.error is not None:
        raise service.error
    return code
