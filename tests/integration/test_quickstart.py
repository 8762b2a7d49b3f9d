"""The README's quick-start job, end to end: `newstagger demo` trains the default model, starts a
broker, the gRPC server, the stream worker and /metrics, feeds starter articles and prints them
tagged; Ctrl-C (SIGINT) stops everything and leaves no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.client import TaggerClient
from service.model.registry import ModelRegistry
from tests.helpers import REPO, free_port, stop_process, wait_for
from training.config import load_config
from training.train import STARTER_CONFIG

README = (REPO / "README.md").read_text(encoding="utf-8")


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def readme_consumer_snippet(kafka_port: int) -> str:
    """The README's "consume tagged events" Python block, pointed at the demo's broker port."""
    [snippet] = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "KafkaConsumer(" in b]
    assert "127.0.0.1:9092" in snippet
    return snippet.replace("127.0.0.1:9092", f"127.0.0.1:{kafka_port}")


@pytest.mark.timeout(480)  # training the default model from the starter corpus comes first
def test_demo_runs_the_whole_product_and_stops_cleanly(tmp_path: Path) -> None:
    port, metrics_port, kafka_port = free_port(), free_port(), free_port()
    # the venv's bin directory is not on PATH, as after a plain `make demo`
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "demo",
            "--model-dir",
            str(tmp_path / "models"),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--kafka-port",
            str(kafka_port),
            "--articles",
            "6",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    output: list[str] = []
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 300  # a fresh demo trains the default model first (5-fold CV)
        while not any("Press Ctrl-C" in line for line in output):
            assert time.monotonic() < deadline, "demo did not finish its feed in time:\n" + "".join(output)
            assert proc.poll() is None, "demo exited early:\n" + "".join(output)
            children |= _descendants(proc.pid)
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=1))
        children |= _descendants(proc.pid)
        text = "".join(output)
        tagged = [line for line in output if line.startswith("  starter-dev-")]
        assert len(tagged) == 6, text
        assert all("topics=" in line and "stance=" in line and "[model " in line for line in tagged)
        expected = [line for line in output if line.startswith("      expected  topics=")]
        assert len(expected) == 6 and all(" stance=" in line for line in expected), text
        assert "6 articles tagged" in text
        assert f"bootstrap servers 127.0.0.1:{kafka_port}" in text
        program = Path(sys.executable).parent / "newstagger"
        assert f"{program} --help, or first `source {program.parent / 'activate'}`" in text

        # the README's consumer snippet, as written but for the port, prints the tagged events
        with subprocess.Popen(
            [sys.executable, "-c", readme_consumer_snippet(kafka_port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as reader:
            try:
                ready, _, _ = select.select([reader.stdout], [], [], 60)
                assert ready, "the README's consumer snippet printed nothing in 60 s"
                first = reader.stdout.readline() if reader.stdout else ""
                assert re.match(r"starter-dev-\S+ \{'topics': \[.*\], 'stance': \['\w+'\]\} \S+", first), (
                    first
                )
            finally:
                stop_process(reader, signal.SIGKILL)

        with TaggerClient(f"127.0.0.1:{port}") as client:
            result = client.tag("North Korean troops were deployed to the Kursk front.", article_id="q1")
        assert result.article_id == "q1" and {h.head for h in result.heads} == {"topics", "stance"}

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:  # noqa: S310
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        consumed = sum(
            s.value
            for s in families["newstagger_kafka_consumed_records"].samples
            if s.name.endswith("_total")
        )
        assert consumed >= 6

        assert children, "demo started no child processes"
        # it trained the default model with the default model's own config (training/starter/config.toml)
        current = ModelRegistry(tmp_path / "models").current_path()
        assert current is not None
        manifest = json.loads((current / "manifest.json").read_text())
        starter_scale = load_config(STARTER_CONFIG).thresholds.scale
        assert manifest["config"]["thresholds"]["scale"] == starter_scale != 1.0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) in (0, 130)
        wait_for(lambda: not any(_alive(pid) for pid in children), 30, what="demo's children to exit")
    finally:
        stop_process(proc, signal.SIGKILL)
        for pid in children:  # whatever the demo left behind (they hold its output pipe open)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
