"""``newstagger stream`` / ``serve --with-stream`` processes when things go wrong: a broker outage
past the retry limit ends the worker with status 1 (and a restart loses nothing), SIGTERM stops it
within the grace period even while the broker is stalled or gone, and ``serve --with-stream`` started on
an empty registry tags everything once a model is promoted. Uses its own tansu brokers where the
test stops one."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service.model.registry import ModelRegistry
from service.settings import Settings
from tests.helpers import free_port, port_open, stop_process, tansu_broker, wait_for
from tests.integration.test_stream_stall import broker_pid
from tests.integration.test_stream_support import (
    Reader,
    committed_total,
    highwaters,
    output_ids,
    produce_articles,
    start_stream_process,
    stream_settings,
)


@contextmanager
def broker_stopped(pid: int) -> Iterator[None]:
    """SIGSTOP our own broker child; SIGCONT on the way out, whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        return proc.wait(timeout), time.monotonic() - started
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started


def test_an_outage_past_the_retry_limit_exits_non_zero_and_a_restart_loses_nothing(
    model_dir: Path, tmp_path: Path
) -> None:
    count = 2500
    log = tmp_path / "worker.log"
    with tansu_broker() as bootstrap:
        settings = stream_settings(bootstrap, model_dir)
        produce_articles(bootstrap, settings.input_topic, range(count))
        reader = Reader(bootstrap, settings.output_topic)
        first = start_stream_process(settings, log, NEWSTAGGER_STREAM_RETRY_SECONDS="3")
        second = None
        try:
            reader.read_count(100, timeout=60)
            with broker_stopped(broker_pid(bootstrap)):  # longer than the session timeout (2 s)
                code, took = wait_exit(first, 40)
            said = [line for line in log.read_text().splitlines() if line.startswith("newstagger stream: ")]
            assert code == 2 and len(said) == 1, log.read_text()[-3000:]
            assert "has failed for" in said[0] and "--stream-retry-seconds" in said[0], said
            assert "Exception ignored" not in log.read_text(), log.read_text()[
                -3000:
            ]  # nothing after the line
            second = start_stream_process(settings, log)
            reader.read_until(lambda r: len(set(output_ids(r))) == count, timeout=120)
            wait_for(lambda: committed_total(bootstrap, settings.group_id, settings.input_topic) == count, 30)
            assert stop_process(second, signal.SIGTERM) == 0, log.read_text()[-3000:]
        finally:
            stop_process(first, signal.SIGKILL)
            if second is not None:
                stop_process(second, signal.SIGKILL)
            reader.close()
    assert set(output_ids(reader.records)) == {f"a-{i}" for i in range(count)}
    assert took < 3 + 20, took


def test_sigterm_during_a_broker_stall_stops_within_the_grace_period(model_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with tansu_broker() as bootstrap:
        settings = stream_settings(bootstrap, model_dir, grace_seconds=3)
        produce_articles(bootstrap, settings.input_topic, range(4000))
        reader = Reader(bootstrap, settings.output_topic)
        proc = start_stream_process(settings, log)
        try:
            reader.read_count(100, timeout=60)
            with broker_stopped(broker_pid(bootstrap)):
                time.sleep(1.0)  # sends are in flight and cannot be acknowledged
                proc.send_signal(signal.SIGTERM)
                code, took = wait_exit(proc, 30)
        finally:
            stop_process(proc, signal.SIGKILL)
            reader.close()
    assert code == 0, log.read_text()[-3000:]
    assert took < settings.grace_seconds + 3, (took, log.read_text()[-3000:])


def test_sigterm_with_the_broker_gone_exits_0_within_the_grace(model_dir: Path, tmp_path: Path) -> None:
    """The broker stopped (its port closed) while records are in flight: SIGTERM must still end
    the process with status 0 within --grace-seconds (the sends that cannot be acknowledged are
    dropped, uncommitted), well before the grace plus 3 s after which a stuck worker is cut off
    with status 1. Its own broker, stopped with SIGINT."""
    log = tmp_path / "worker.log"
    with tansu_broker() as bootstrap:
        settings = stream_settings(bootstrap, model_dir, grace_seconds=2)
        produce_articles(bootstrap, settings.input_topic, range(3000))
        reader = Reader(bootstrap, settings.output_topic)
        proc = start_stream_process(settings, log)
        try:
            reader.read_count(100, timeout=60)
            reader.close()
            os.kill(broker_pid(bootstrap), signal.SIGINT)
            wait_for(lambda: not port_open(int(bootstrap.rsplit(":", 1)[1])), 15, what="broker stopped")
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            code, took = wait_exit(proc, 30)
        finally:
            stop_process(proc, signal.SIGKILL)
    text = log.read_text()
    assert code == 0, text[-3000:]
    # + the interpreter's exit. The bar is the point and has to sit between the two: 1.6-1.7 s
    # quiet, 1.74-1.90 s at load 8 on 2 cores; the code before the fix 2.87 s quiet, 3.4-4.3 s loaded
    assert took < settings.grace_seconds + 0.5, (took, text[-3000:])
    assert "Traceback" not in text, text[-3000:]


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def broker_errors(port: int, metric: str = "newstagger_kafka_broker_errors_total") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:  # noqa: S310
        lines = response.read().decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(metric))


def test_serve_with_stream_on_an_empty_registry_tags_everything_once_a_model_is_promoted(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    settings = stream_settings(kafka_bootstrap, registry.root)
    metrics_port = free_port()
    args = [sys.executable, "-m", "service.cli", "serve", "--with-stream", "--model-dir", str(registry.root)]
    args += ["--port", "0", "--metrics-port", str(metrics_port), "--reload-interval-seconds", "0.3"]
    args += ["--bootstrap-servers", kafka_bootstrap, "--group-id", settings.group_id, "--log-format", "text"]
    args += ["--input-topic", settings.input_topic, "--output-topic", settings.output_topic]
    args += ["--dlq-topic", settings.dlq_topic]
    args += ["--session-timeout-ms", "2000", "--heartbeat-interval-ms", "500"]
    produce_articles(kafka_bootstrap, settings.input_topic, range(50))
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=sink)
    reader = Reader(kafka_bootstrap, settings.output_topic, settings.dlq_topic)
    try:
        status = wait_for(lambda: readyz(metrics_port)[0], 60, interval=0.2, what="/readyz answers")
        time.sleep(2.0)  # records are waiting; the worker must not give up on them
        status, reason = readyz(metrics_port)
        assert status == 503 and "model" in reason, (status, reason)
        shutil.copytree(model_dir, registry.new_version_dir("v1"))
        registry.promote("v1")
        wait_for(lambda: readyz(metrics_port)[0] == 200, 60, interval=0.2, what="ready with a model")
        produce_articles(kafka_bootstrap, settings.input_topic, range(50, 100))
        reader.read_until(lambda r: len(set(output_ids(r))) == 100, timeout=60)
        assert stop_process(proc, signal.SIGTERM, timeout=30) == 0, log.read_text()[-3000:]
        records = reader.read_to(highwaters(kafka_bootstrap, settings.output_topic, settings.dlq_topic))
    finally:
        stop_process(proc, signal.SIGKILL)
        reader.close()
    assert all(r.topic == settings.output_topic for r in records)  # nothing dead-lettered


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NEWSTAGGER_SOAK_TESTS"), reason="60 s soak: NEWSTAGGER_SOAK_TESTS=1")
def test_a_60s_broker_outage_within_the_retry_limit_loses_nothing(model_dir: Path, tmp_path: Path) -> None:
    """The issue's reliability scenario: the broker frozen for 60 s (far past the 2 s session
    timeout, within the default 120 s retry limit) while records are in flight."""
    count = 6000
    log = tmp_path / "worker.log"
    with tansu_broker() as bootstrap:
        settings = stream_settings(bootstrap, model_dir)
        produce_articles(bootstrap, settings.input_topic, range(count))
        reader = Reader(bootstrap, settings.output_topic)
        proc = start_stream_process(settings, log)
        try:
            reader.read_count(100, timeout=60)
            with broker_stopped(broker_pid(bootstrap)):
                time.sleep(60)
            assert proc.poll() is None, log.read_text()[-3000:]
            reader.read_until(lambda r: len(set(output_ids(r))) == count, timeout=180)
            wait_for(lambda: committed_total(bootstrap, settings.group_id, settings.input_topic) == count, 60)
            assert stop_process(proc, signal.SIGTERM) == 0, log.read_text()[-3000:]
        finally:
            stop_process(proc, signal.SIGKILL)
            reader.close()
    assert set(output_ids(reader.records)) == {f"a-{i}" for i in range(count)}


def test_an_idle_worker_reports_a_lost_broker_and_exits_past_the_retry_limit(
    model_dir: Path, tmp_path: Path
) -> None:
    """Nothing to read, so nothing is produced or committed: the worker must still notice the
    broker has gone (/readyz 503, broker errors and poll retries counted) and exit 2 in one line after
    --stream-retry-seconds. Its own broker, stopped with SIGINT."""
    log = tmp_path / "worker.log"
    metrics_port = free_port()
    with tansu_broker() as bootstrap:
        settings = stream_settings(bootstrap, model_dir)
        proc = start_stream_process(settings, log, metrics_port, NEWSTAGGER_STREAM_RETRY_SECONDS="4")
        try:
            wait_for(lambda: readyz(metrics_port)[0] == 200, 60, interval=0.2, what="worker ready")
            os.kill(broker_pid(bootstrap), signal.SIGINT)
            wait_for(lambda: not port_open(int(bootstrap.rsplit(":", 1)[1])), 15, what="broker stopped")
            status, reason = wait_for(
                lambda: (answer := readyz(metrics_port))[0] == 503 and answer,
                15,
                interval=0.2,
                what="not ready",
            )
            assert "broker unreachable" in reason, reason
            assert broker_errors(metrics_port) > 0
            # each failed broker check is tried again: counted as a poll retry, as documented
            retries = 'newstagger_kafka_retries_total{operation="poll"}'
            wait_for(lambda: broker_errors(metrics_port, retries) > 0, 10, interval=0.2, what="poll retries")
            code, _took = wait_exit(proc, 30)
        finally:
            stop_process(proc, signal.SIGKILL)
    text = log.read_text()
    said = [line for line in text.splitlines() if line.startswith("newstagger stream: ")]
    assert code == 2 and len(said) == 1, text[-3000:]
    assert "Kafka poll has failed for" in said[0] and "--stream-retry-seconds" in said[0], said
    assert "Exception ignored" not in text and "Traceback" not in text, text[-3000:]


def test_at_start_an_unreachable_broker_is_retried_for_the_retry_limit(
    model_dir: Path, tmp_path: Path
) -> None:
    """No broker yet when the worker starts: it keeps trying for --stream-retry-seconds, as it
    does after an outage later on, not for kafka-python's own 30 s bootstrap timeout. With a
    limit of 4 s it gives up in one line soon after 4 s; with 90 s it is still trying at 35 s and
    connects when the broker comes up."""
    port, ready_port = free_port(), free_port()
    settings = Settings(
        model_dir=model_dir, bootstrap_servers=f"127.0.0.1:{port}", metrics_port=0, grace_seconds=5
    )
    short_log, long_log = tmp_path / "short.log", tmp_path / "long.log"
    short = start_stream_process(settings, short_log, NEWSTAGGER_STREAM_RETRY_SECONDS="4")
    long = start_stream_process(settings, long_log, ready_port, NEWSTAGGER_STREAM_RETRY_SECONDS="90")
    long_connecting: list[float] = []  # when the long one was first seen connecting

    def watch_long() -> None:
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: "stream worker connecting" in long_log.read_text(), 60)
            long_connecting.append(time.monotonic())

    threading.Thread(target=watch_long, name="watch-long", daemon=True).start()
    try:
        wait_for(lambda: "stream worker connecting" in short_log.read_text(), 60, what="short: connecting")
        code, took = wait_exit(short, 60)
        text = short_log.read_text()
        said = [line for line in text.splitlines() if line.startswith("newstagger stream: ")]
        assert code == 2 and len(said) == 1 and "cannot reach Kafka" in said[0], text[-3000:]
        assert 3 < took < 15, (took, text[-3000:])  # 4 s, not 30
        wait_for(lambda: long_connecting, 70, what="long: connecting")
        # past kafka-python's 30 s bootstrap timeout: 35 s from when the long one was first seen
        # connecting (while the short one ran), not from after the short one's checks
        time.sleep(max(0.0, long_connecting[0] + 35 - time.monotonic()))
        assert long.poll() is None, long_log.read_text()[-3000:]
        with tansu_broker(port):
            wait_for(lambda: readyz(ready_port)[0] == 200, 60, interval=0.2, what="worker ready")
            assert stop_process(long, signal.SIGTERM) == 0, long_log.read_text()[-3000:]
    finally:
        stop_process(short, signal.SIGKILL)
        stop_process(long, signal.SIGKILL)
    assert "Traceback" not in long_log.read_text()
