"""The container image, built from the Dockerfile and run the way the Helm chart runs it.

Selected with ``-m image`` (``make image-test``; ``make test`` leaves it out, ``.ci/run`` runs it).
The image is built by ``scripts/image.sh`` with buildah (a Docker daemon is not needed; where there
is one, ``make image`` uses it, but these tests run containers with ``buildah run --isolation chroot``,
which works on machines where ``podman run`` and ``docker run`` do not). The chroot shares the
host's network, so the service is reached on a loopback port. Every container runs as the uid/gid
of the chart's securityContext, with the model registry mounted read-only at the chart's
``models.mountPath`` and a writable directory at /tmp (the chart's emptyDir).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.model.registry import ModelRegistry
from service.settings import GRPC_SERVICE_NAME
from tests.helpers import REPO, STARTER, free_port, stop_process, wait_for
from tests.image.conftest import REPORT

IMAGE = os.environ.get("NEWSTAGGER_IMAGE", "localhost/newstagger:dev")
VALUES = yaml.safe_load((REPO / "helm" / "newstagger" / "values.yaml").read_text())
UID = VALUES["securityContext"]["runAsUser"]
GID = VALUES["securityContext"]["runAsGroup"]
MODELS = VALUES["models"]["mountPath"]
ARTICLE = {"id": "a1", "text": "North Korean troops were sent to Kursk to fight alongside Russian forces."}


def why_not_here() -> str | None:
    if shutil.which("buildah") is None:
        return "the image tests build and run the image with buildah: apt-get install buildah debootstrap"
    if os.geteuid() != 0:
        return "buildah runs a container as another uid (--isolation chroot) only as root"
    return None


pytestmark = [
    pytest.mark.image,
    pytest.mark.timeout(900),
    pytest.mark.skipif(why_not_here() is not None, reason=why_not_here() or ""),
]


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    """The image built from this checkout (base and layers cached by scripts/image.sh); its config."""
    started = time.monotonic()
    env = {
        **os.environ,
        "IMAGE": IMAGE,
        "BUILDER": "buildah",
        "PIP": str(Path(sys.executable).parent / "pip"),
    }
    done = subprocess.run(
        [str(REPO / "scripts" / "image.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    REPORT.extend(line for line in done.stderr.splitlines() if line.startswith("image: "))
    REPORT.append(f"image: scripts/image.sh took {time.monotonic() - started:.0f} s")
    return dict(json.loads(buildah("inspect", "--type", "image", IMAGE))["OCIv1"])


@pytest.fixture()
def container(image: dict[str, Any]) -> Iterator[str]:
    name = f"newstagger-test-{uuid.uuid4().hex[:8]}"
    buildah("from", "--quiet", "--name", name, IMAGE)
    try:
        yield name
    finally:
        buildah("rm", name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """Registries written by the real `newstagger train --registry` under a given umask (a small
    model: the first 400 training and 100 dev articles of the starter set), one per umask."""
    data = tmp_path_factory.mktemp("data")
    for name, rows in (("train.jsonl", 400), ("dev.jsonl", 100)):
        lines = (STARTER / name).read_text(encoding="utf-8").splitlines(keepends=True)[:rows]
        (data / name).write_text("".join(lines), encoding="utf-8")
    newstagger = Path(sys.executable).parent / "newstagger"
    registries: dict[int, Path] = {}

    def train(umask: int) -> Path:
        if umask not in registries:
            root = tmp_path_factory.mktemp("registry") / "models"
            train = f'"{newstagger}" train --data train.jsonl --dev dev.jsonl --registry "{root}"'
            done = subprocess.run(
                ["sh", "-c", f"umask {umask:03o} && exec {train}"],
                cwd=data,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-4000:]
            registries[umask] = root
        return registries[umask]

    return train


@pytest.fixture()
def registry(trained: Callable[[int], Path]) -> Path:
    """A registry trained under umask 022."""
    return trained(0o022)


def run_command(container: str, args: list[str], registry: Path, tmp: Path | None = None) -> list[str]:
    """`buildah run` of ``args`` in ``container`` as the chart runs the service: its uid/gid, the
    registry read-only at models.mountPath, /tmp writable, listening on loopback only."""
    command = [
        "buildah",
        "run",
        "--isolation",
        "chroot",
        "--user",
        f"{UID}:{GID}",
        "-v",
        f"{registry}:{MODELS}:ro",
    ]
    if tmp is not None:
        command += ["-v", f"{tmp}:/tmp"]
    for name in ("NEWSTAGGER_HOST", "NEWSTAGGER_METRICS_HOST"):
        command += ["-e", f"{name}=127.0.0.1"]
    return [*command, container, "--", *args]


def test_the_image_runs_what_the_chart_expects(image: dict[str, Any]) -> None:
    config = image["config"]
    assert config["User"] == f"{UID}:{GID}"
    assert config["Entrypoint"] == ["newstagger"] and config["Cmd"] == ["serve"]
    assert f"NEWSTAGGER_MODEL_DIR={MODELS}" in config["Env"]
    assert "TMPDIR=/tmp" in config["Env"] and "HOME=/tmp" in config["Env"]


def test_help(container: str, tmp_path: Path) -> None:
    done = subprocess.run(
        run_command(container, ["newstagger", "--help"], tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "tag" in done.stdout and "train" in done.stdout


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=oct)
def test_tag_as_the_image_user_from_a_read_only_registry(
    container: str, trained: Callable[[int], Path], umask: int
) -> None:
    registry = trained(umask)
    tag = run_command(container, ["newstagger", "tag"], registry)
    done = subprocess.run(
        tag, input=json.dumps(ARTICLE) + "\n", capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["id"] == "a1"
    assert result["model"]["version"] == ModelRegistry(registry).current()
    assert {head["head"] for head in result["heads"]} == {"topics", "stance"}
    assert all(head["scores"] for head in result["heads"])

    whoami = run_command(container, ["sh", "-c", f"id -u; id -g; touch {MODELS}/written"], registry)
    done = subprocess.run(whoami, capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.split() == [str(UID), str(GID)]
    assert done.returncode != 0 and "Read-only file system" in done.stderr
    assert not (registry / "written").exists()


def health_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=GRPC_SERVICE_NAME)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status)


def service_pid(ancestor: int) -> int | None:
    """The `newstagger` process among the descendants of ``ancestor`` (the buildah run we started)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid_text, rest = stat.read_text().split(" (", 1)
        except OSError:
            continue
        name, fields = rest.rsplit(") ", 1)
        names[int(pid_text)] = name
        children.setdefault(int(fields.split()[1]), []).append(int(pid_text))
    todo = list(children.get(ancestor, []))
    while todo:
        pid = todo.pop()
        if names[pid] == "newstagger":
            return pid
        todo += children.get(pid, [])
    return None


def written_outside(root: Path, since: float, allowed: set[str]) -> list[str]:
    """Paths under ``root`` (a container's mounted filesystem) changed after ``since``."""
    changed = []
    for directory, dirs, files in os.walk(root):
        rel = Path(directory).relative_to(root)
        dirs[:] = [d for d in dirs if str(rel / d) not in allowed]
        for name in files + dirs:
            path = Path(directory) / name
            if str(rel / name) not in allowed and path.lstat().st_mtime > since:
                changed.append(str(rel / name))
    return changed


def test_serve_answers_health_as_the_image_user_and_stops_on_sigterm(
    container: str, registry: Path, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"  # the chart's emptyDir
    tmp.mkdir(mode=0o1777)
    tmp.chmod(0o1777)
    port, metrics_port = free_port(), free_port()
    serve = [
        "newstagger",
        "serve",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--grace-seconds",
        "5",
    ]
    root = Path(buildah("mount", container))
    started = time.time()
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            run_command(container, serve, registry, tmp), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(
            lambda: proc.poll() is not None or health_status(port) == health_pb2.HealthCheckResponse.SERVING,
            120,
        )
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5) as reply:  # noqa: S310
            assert reply.status == 200
        pid = wait_for(lambda: service_pid(proc.pid), 10, what="the newstagger process")
        uids = next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
        )
        assert uids.split()[1:] == [str(UID)] * 4
        os.kill(pid, signal.SIGTERM)  # what the kubelet does to the container's process
        assert proc.wait(30) == 0
    finally:
        stop_process(proc, signal.SIGTERM, timeout=10)
    log_text = (tmp_path / "serve.log").read_text()
    assert "draining" in log_text and '"stopped"' in log_text, log_text[-3000:]
    # Nothing was written outside /tmp: the chart's read-only root filesystem holds.
    allowed = {"tmp", MODELS.strip("/"), "proc", "sys", "dev", "run", "etc/hosts", "etc/resolv.conf"}
    try:
        assert written_outside(root, started, allowed) == []
    finally:
        buildah("umount", container)


def test_the_image_has_no_pip_no_compiler_and_no_tests(container: str) -> None:
    root = Path(buildah("mount", container))
    try:
        names = {path.name for path in root.glob("**/*") if not path.is_relative_to(root / "proc")}
        assert not names & {"pip", "pip3", "pip3.11", "ensurepip"}
        assert not [n for n in names if n.startswith("pip-") and n.endswith((".whl", ".dist-info"))]
        compilers = {"cc", "gcc", "g++", "c++", "clang", "cpp", "ld", "as", "make"}
        assert not [n for n in os.listdir(root / "usr" / "bin") if n in compilers or n.endswith("-gcc")]
        site = next((root / "opt" / "venv" / "lib").glob("python3*/site-packages"))
        ours = [site / name for name in ("newstagger", "service", "training")]
        assert all(path.is_dir() for path in ours)
        assert not (site / "tests").exists() and not (root / "src").exists()
        assert not [p for d in ours for p in d.glob("**/test_*.py")]
        size = json.loads(buildah("images", "--json", IMAGE))[0]["size"]
    finally:
        buildah("umount", container)
    REPORT.append(f"image: {IMAGE} is {size}")
