"""The container image the chart deploys: the Dockerfile agrees with the chart and the code."""

from __future__ import annotations

import re

import pytest

from service.settings import DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT
from tests.integration.test_helm_support import IMAGE_UID, ROOT, SETTING_ENV_VARS

pytestmark = pytest.mark.timeout(60)


def dockerfile_stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined, comments dropped), split into stages."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    lines = [
        line.strip() for line in logical.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_matches_the_chart_and_the_code() -> None:
    builder, runtime = dockerfile_stages()
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert runtime[0] == "FROM ${PYTHON_IMAGE} AS runtime"
    assert any("pip install ." in line for line in builder)  # the same install the tests use
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    # No build tools, package manager installs or source code in the final stage.
    assert not any(re.search(r"apt-get|apk |gcc|build-essential|pip install", line) for line in runtime)
    assert not any(line.startswith("COPY ") and "--from=builder" not in line for line in runtime)
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in runtime
    assert f"EXPOSE {DEFAULT_GRPC_PORT} {DEFAULT_METRICS_PORT}" in runtime
    assert 'ENTRYPOINT ["newstagger"]' in runtime
    assert 'CMD ["serve"]' in runtime
    env_names = set(re.findall(r"\b(NEWSTAGGER_[A-Z_]+)=", " ".join(runtime)))
    assert env_names and env_names <= SETTING_ENV_VARS
    assert re.search(r'^newstagger = "newstagger:main"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[i for i, line in enumerate(ignore) if not line.startswith("#")][0]] == "*"
    assert {"!pyproject.toml", "!README.md", "!newstagger/", "!service/", "!training/"} <= set(ignore)
    assert {f"COPY {p} ./{p}" for p in ("newstagger", "service", "training")} <= set(builder)
