"""The dependency direction holds: service.core depends on service.model, never the reverse, and
the multi-process supervisor does not import the module that starts it (no import cycles); the
CLI answers --help and refuses bad arguments without importing the model, training or transports."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted((REPO / "service" / "model").glob("*.py")), ids=lambda p: p.name)
def test_the_model_layer_imports_nothing_from_the_core(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.startswith("service.core")}


def test_the_worker_supervisor_does_not_import_its_starter() -> None:
    assert "service.grpc_api.main" not in imported_modules(REPO / "service" / "grpc_api" / "workers.py")


# What `newstagger --help`, each command's --help and a refused argument or setting must not
# import: together they took ~2.3 of the 2.7 s every such command took (skops alone ~1.9 s).
HEAVY = ("sklearn", "scipy", "skops", "numpy", "pandas", "joblib", "grpc", "kafka", "uvicorn", "starlette")
HEAVY += ("prometheus_client", "training")
# argv -> the exit code: each answered from the parser and the settings alone
LIGHT_COMMANDS = {
    "--help": 0,
    "--version": 0,
    **{f"{c} --help": 0 for c in ("train", "evaluate", "tag", "models", "labels", "demo", "serve", "stream")},
    **{f"models {a} --help": 0 for a in ("list", "show", "history", "promote", "rollback")},
    "labels collect --help": 0,
    "bogus": 2,
    "serve --bogus": 2,
    "serve --port abc": 2,
    "stream --max-batch-size 0": 2,
    "train --tune-budget-seconds 5": 2,
    "train --out somewhere --no-promote": 2,
    "tag --batch-size 0": 2,
    "evaluate --data x.jsonl --json no-such-dir/metrics.json": 2,
    "labels collect --out x.jsonl --bootstrap-servers=": 2,
}
_RUN_EACH = """
import contextlib, io, json, sys
from service.cli import main
found = {}
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv.split())
        except SystemExit as exc:
            code = exc.code
    found[argv] = [code, sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))]
print(json.dumps(found))
"""


def test_help_and_refused_arguments_import_nothing_heavy(tmp_path: Path) -> None:
    """Import-based, not timed: the commands run one after another in one fresh interpreter, and
    the heavy packages loaded after each are listed (the first command to import one is named)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSTAGGER_", "KAFKA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _RUN_EACH, json.dumps(list(LIGHT_COMMANDS)), json.dumps(HEAVY)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = json.loads(out)
    assert {argv: code for argv, (code, _) in found.items()} == LIGHT_COMMANDS
    first = next(((argv, heavy) for argv, (_, heavy) in found.items() if heavy), None)
    assert first is None, "`newstagger {}` imported {}".format(*first)
    assert not list(tmp_path.iterdir())  # nothing was written: each stopped at its arguments
