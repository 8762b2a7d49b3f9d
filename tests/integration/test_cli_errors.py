"""Every bad input a newcomer meets in the first hour, through the real `newstagger` program: a
non-zero exit, one human-readable line naming what is at fault, and no traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from service.model.registry import ModelRegistry
from tests.helpers import STARTER, free_port, stop_process, wait_for


def _cases(
    registry: Path, model_file: Path, latin1: Path, busy_port: int, no_broker: int
) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, text the error line must contain)."""
    runtime = ["--model-dir", str(registry), "--metrics-port", str(busy_port)]
    return {
        "serve, metrics port in use": (["serve", "--port", "0", *runtime], f"127.0.0.1:{busy_port}"),
        "stream, metrics port in use": (["stream", *runtime], f"127.0.0.1:{busy_port}"),
        "stream, no broker": (
            ["stream", "--model-dir", str(registry), "--metrics-port", "0"]
            + ["--bootstrap-servers", f"127.0.0.1:{no_broker}", "--stream-retry-seconds", "2"],
            f"cannot reach Kafka (servers=127.0.0.1:{no_broker}",
        ),
        "tag, no such file": (["tag", "nofile.jsonl", "--model", str(registry)], "nofile.jsonl"),
        "tag, --model is a file": (["tag", "--model", str(model_file)], f"{model_file}: is a file"),
        "evaluate, --model is a file": (
            ["evaluate", "--model", str(model_file), "--data", str(STARTER / "dev.jsonl")],
            f"{model_file}: is a file",
        ),
        "models list, --registry is a file": (
            ["models", "list", "--registry", str(model_file)],
            f"{model_file}: is a file",
        ),
        "tag, a file that is not UTF-8": (
            ["tag", str(latin1), "--model", str(registry)],
            f"{latin1}:1: not valid UTF-8",
        ),
        "tag, --batch-size 0": (["tag", "--batch-size", "0", "--model", str(registry)], "--batch-size: 0"),
        "tag, a JSON array on stdin": (["tag", "--model", str(registry)], "<stdin>:1: need a JSON object"),
    }


def test_bad_input_gives_one_clear_line_and_a_non_zero_exit(registry: ModelRegistry, tmp_path: Path) -> None:
    version_dir = registry.current_path()
    assert version_dir is not None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        latin1 = tmp_path / "latin1.jsonl"
        latin1.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
        cases = _cases(registry.root, version_dir / "model.skops", latin1, busy.getsockname()[1], free_port())
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", "service.cli", *argv],
                cwd=tmp_path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, (argv, _) in cases.items()
        }
        outputs = {
            name: proc.communicate('[{"text": "in a list"}]\n', timeout=120) for name, proc in procs.items()
        }
    for name, (_, fault) in cases.items():
        stdout, stderr = outputs[name]
        lines = stderr.strip().splitlines()
        assert procs[name].returncode != 0, name
        assert "Traceback" not in stdout + stderr and "ECONNREFUSED" not in stderr, f"{name}:\n{stderr}"
        assert lines and lines[-1].startswith("newstagger ") and fault in lines[-1], f"{name}:\n{stderr}"
        assert [line for line in lines if line.startswith("newstagger ")] == [lines[-1]], name


HELP_COMMANDS = ["train", "evaluate", "tag", "models", "serve", "stream", "demo", "labels"]


@pytest.fixture(scope="module")
def help_outputs() -> dict[str, tuple[int, str, str]]:
    """``newstagger COMMAND --help`` for every command, run at once (each is a ~3 s import of
    the CLI; one after another they took 8 times that): command -> (exit code, stdout, stderr)."""
    procs = {
        command: subprocess.Popen(
            [sys.executable, "-m", "service.cli", command, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in HELP_COMMANDS
    }
    try:
        outputs = {command: proc.communicate(timeout=120) for command, proc in procs.items()}
    finally:
        for proc in procs.values():  # only those that outlived the timeout
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    return {command: (procs[command].returncode, *outputs[command]) for command in HELP_COMMANDS}


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_shows_each_default_once_without_markup(
    command: str, help_outputs: dict[str, tuple[int, str, str]]
) -> None:
    code, stdout, stderr = help_outputs[command]
    assert code == 0, stderr
    usage, _, rest = stdout.partition("\n\n")
    assert rest.strip() and not rest.startswith("options:"), f"{command} --help has no description"
    assert "(default: None)" not in stdout and "``" not in stdout
    for paragraph in stdout.split("\n  -"):
        assert paragraph.lower().count("default") <= 1, paragraph
    if command in ("serve", "stream"):
        assert "--log-format {json,text}" in stdout


def _children(pid: int) -> list[int]:
    """The PIDs of ``pid``'s child processes (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(child) for child in children]
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_sigterm_stops_training_and_its_workers(tmp_path: Path) -> None:
    """SIGTERM (``kill``, ``timeout``, a deleted Job pod) killed train at once, and its two
    cross-validation workers went on fitting, orphaned, for minutes. Now it ends as Ctrl-C does:
    exit 130, the workers stopped with it, no staging directory left in the registry."""
    registry = tmp_path / "reg"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "train", "--registry", str(registry), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        workers = wait_for(
            lambda: [
                c for c in _children(proc.pid) if b"LokyProcess" in Path(f"/proc/{c}/cmdline").read_bytes()
            ],
            timeout=240,
            what="cross-validation workers",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
    finally:
        stop_process(proc, signal.SIGKILL)
    try:
        wait_for(lambda: not any(_alive(w) for w in workers), timeout=10, what="the workers to stop")
    finally:
        for worker in filter(_alive, workers):  # only if the test failed: they are ours
            os.kill(worker, signal.SIGKILL)
    assert not list(registry.glob("versions/.pending-*"))
