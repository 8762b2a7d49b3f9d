"""A broker that stalls (SIGSTOP 20 s, then SIGCONT): the worker retries, reports it, loses nothing.
Uses its own tansu broker, not the session one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from service.runtime import Runtime
from service.stream.retrying import IDLE_PROBE_S
from tests.helpers import tansu_broker, wait_for
from tests.integration.test_stream_support import (
    Reader,
    committed_total,
    output_ids,
    produce_articles,
    stream_settings,
    worker_in_thread,
)

STALL_SECONDS = 20


def broker_pid(bootstrap: str) -> int:
    """The tansu process this test process started for ``bootstrap`` (our own child, by PID)."""
    port = bootstrap.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and "tansu" in cmdline and f":{port}" in cmdline:
            return int(entry.name)
    raise LookupError(f"no tansu child process on port {port}")


def slow_model(runtime: Runtime) -> None:
    real_tag = runtime.tagger.tag

    def tag(articles: Any, options: Any = None) -> Any:
        time.sleep(0.01 * len(articles))
        return real_tag(articles, options) if options is not None else real_tag(articles)

    runtime.tagger.tag = tag  # type: ignore[method-assign]


def test_broker_stall_is_retried_and_nothing_is_lost(model_dir: Path) -> None:
    count = 600
    with tansu_broker() as bootstrap:
        pid = broker_pid(bootstrap)
        settings = stream_settings(bootstrap, model_dir, max_batch_size=16)
        produce_articles(bootstrap, settings.input_topic, range(count))
        with worker_in_thread(settings, prepare=slow_model) as running:
            reader = Reader(bootstrap, settings.output_topic)
            reader.read_count(50, timeout=30)
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(STALL_SECONDS)
            finally:
                os.kill(pid, signal.SIGCONT)
            reader.read_until(lambda r: len(set(output_ids(r))) == count, timeout=90)
            wait_for(lambda: committed_total(bootstrap, settings.group_id, settings.input_topic) == count, 30)
            reader.close()
            errors = sum(
                running.sample("newstagger_kafka_broker_errors_total", operation=op)
                for op in ("produce", "commit", "poll")
            )
            # Ready again once the broker answers: at once if the last poll had records, else at the
            # idle worker's next broker check (within IDLE_PROBE_S of a failed one).
            wait_for(lambda: running.worker.ready()[0], timeout=IDLE_PROBE_S + 10, what="ready again")
    assert set(output_ids(reader.records)) == {f"a-{i}" for i in range(count)}
    assert errors > 0, "the stall was not reported in the metrics"
