"""The dependency direction holds: service.core depends on service.model, never the reverse, and
the multi-process supervisor does not import the module that starts it (no import cycles)."""

from __future__ import annotations

import ast
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
