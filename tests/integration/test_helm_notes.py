"""What the operator is told to run: the NOTES' commands and the `helm test` hook."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2

from service.settings import DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT, GRPC_SERVICE_NAME
from tests.integration.test_helm_support import (
    DNS_LABEL,
    FULLNAME,
    LONG_RELEASE,
    NAMESPACE,
    PRODUCTION_VALUES,
    RELEASE,
    Render,
    Rendered,
)

pytestmark = pytest.mark.timeout(60)


def test_notes_tell_how_to_call_the_service(default: Rendered) -> None:
    assert f"{FULLNAME}.{NAMESPACE}.svc:{DEFAULT_GRPC_PORT}" in default.notes
    assert f"grpcurl -plaintext localhost:{DEFAULT_GRPC_PORT} describe {GRPC_SERVICE_NAME}" in default.notes
    assert f"curl -s localhost:{DEFAULT_METRICS_PORT}/metrics" in default.notes
    assert f"helm test {RELEASE}" in default.notes


@pytest.mark.parametrize("release_name", [RELEASE, LONG_RELEASE])
def test_notes_train_now_command_runs_as_printed(render: Render, release_name: str) -> None:
    values = {"retrain": {"enabled": True, "dataVolume": {"emptyDir": {}}}}
    rendered = render(values, release_name)
    lines = [line for line in rendered.notes.splitlines() if "kubectl" in line and "create job" in line]
    assert len(lines) == 1
    words = shlex.split(lines[0])
    assert words[:5] == ["kubectl", "-n", NAMESPACE, "create", "job"]
    source, job = words[5:]
    rendered.one("CronJob", source.removeprefix("--from=cronjob/"))
    assert DNS_LABEL.match(job), job  # a Job's name is also its pods' job-name label: 63 characters at most
    assert rendered.notes.count(job) == 1


@pytest.mark.parametrize(
    "values",
    [
        {},
        PRODUCTION_VALUES,
        {"server": {"enabled": False}},
        {"server": {"enabled": False}, "worker": {"enabled": False}, "retrain": PRODUCTION_VALUES["retrain"]},
    ],
    ids=["default", "production", "worker only", "retrain only"],
)
def test_notes_name_only_objects_the_release_has(render: Render, values: dict[str, Any]) -> None:
    rendered = render(values)
    kinds = {"deploy": "Deployment", "svc": "Service", "cronjob": "CronJob"}
    named = re.findall(r"\b(deploy|svc|cronjob)/([a-z0-9-]+)", rendered.notes)
    for short, name in named:
        rendered.one(kinds[short], name)


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    from grpc_health.v1 import health_pb2_grpc

    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None).wait(timeout=5)


def test_helm_test_hook_checks_grpc_health(
    default: Rendered, health_server: tuple[int, health.HealthServicer]
) -> None:
    """Run the hook Pod's own command against a real grpc.health.v1 server on localhost."""
    pod = default.one("Pod", f"{FULLNAME}-test-grpc-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    python, flag, script, target, timeout, *services = pod["spec"]["containers"][0]["command"]
    assert (python, flag) == ("python", "-c")
    assert target == f"{FULLNAME}.{NAMESPACE}.svc:{DEFAULT_GRPC_PORT}"
    assert services == ["", GRPC_SERVICE_NAME]

    port, servicer = health_server
    serving = health_pb2.HealthCheckResponse.SERVING
    servicer.set("", serving)
    servicer.set(GRPC_SERVICE_NAME, serving)
    command = [sys.executable, "-c", script, f"127.0.0.1:{port}", timeout, *services]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    assert f"{GRPC_SERVICE_NAME}: SERVING" in ok.stdout

    servicer.set(GRPC_SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    not_ready = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert not_ready.returncode == 1
    assert f"{GRPC_SERVICE_NAME}: NOT_SERVING" in not_ready.stdout
