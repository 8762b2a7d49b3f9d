"""`newstagger serve --http-port` as a real process: the README's curl example, the same result
as gRPC Tag, HTTP metrics on a real /metrics scrape, graceful SIGTERM, --workers 2."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from service.model.registry import ModelRegistry
from tests.helpers import REPO, free_port, stop_process, wait_for
from tests.integration.test_grpc_process import ready, scrape, serve, tag_once, total
from tests.integration.test_http_api import proto_result_json


def readme_curl(port: int) -> list[str]:
    """The README's first curl command, pointed at ``port``."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "curl " in b)
    command = block.replace("\\\n", " ").split("curl ", 1)[1].splitlines()[0]
    return ["curl", "--max-time", "20", *shlex.split(command.replace(":8080", f":{port}"))]


def test_readme_curl_example_returns_what_grpc_tag_returns(registry: ModelRegistry, tmp_path: Path) -> None:
    http_port = free_port()
    with serve(registry.root, tmp_path, "--http-port", str(http_port)) as (proc, port, mport):
        wait_for(lambda: ready(mport), timeout=60, what="/readyz")
        before = scrape(mport)
        command = readme_curl(http_port)
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        result = json.loads(done.stdout)["result"]
        article = json.loads(command[command.index("-d") + 1])
        expected = tag_once(port, article["article"]["text"]).result
        assert result == proto_result_json(expected) | {"id": article["article"]["id"]}
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as client:
            assert client.post("/v1/tag", json={"article": {"text": ""}}).status_code == 400
        after = scrape(mport)

        def moved(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert moved("newstagger_http_requests_total", route="/v1/tag", status="200") == 1
        assert moved("newstagger_http_requests_total", route="/v1/tag", status="400") == 1
        assert moved("newstagger_http_request_duration_seconds_count", route="/v1/tag") == 2
        assert stop_process(proc, signal.SIGTERM, timeout=30) == 0


def test_workers_share_the_http_port(registry: ModelRegistry, tmp_path: Path) -> None:
    http_port = free_port()
    with serve(registry.root, tmp_path, "--workers", "2", "--http-port", str(http_port)) as (proc, _, mport):
        wait_for(lambda: ready(mport), timeout=120, what="/readyz with 2 workers")
        for _ in range(10):
            with httpx.Client(timeout=10) as client:  # a new connection each time
                reply = client.post(
                    f"http://127.0.0.1:{http_port}/v1/tag", json={"article": {"text": "Troops."}}
                )
            assert reply.status_code == 200 and reply.json()["result"]["model"]["version"] == "v1"
        assert total(scrape(mport), "newstagger_http_requests_total", route="/v1/tag", status="200") == 10
        assert stop_process(proc, signal.SIGTERM, timeout=60) == 0


def test_health_answers_while_a_body_of_millions_of_tiny_values_is_refused(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """16 MiB of tiny JSON values (the body limit's worth) held the whole process while parsed,
    health checks included: 0.2-6 s measured (parsing holds the GIL, in a worker thread too). The
    values are now counted, not parsed: refused with 400 while /healthz and /v2/health/ready keep
    answering (each within ~40 ms measured; the bound here is 25 times that)."""
    http_port = free_port()
    limit = 16 << 20
    bodies = {
        "empty lists": '{"inputs": [], "parameters": {"x": [' + ",".join(["[]"] * (limit // 3 - 100)) + "]}}",
        "tiny strings": '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ['
        + ",".join(['"a"'] * (limit // 4 - 100))
        + "]}]}",
    }
    with serve(registry.root, tmp_path, "--http-port", str(http_port)) as (_, _, mport):
        wait_for(lambda: ready(mport), timeout=60, what="/readyz")
        done = threading.Event()
        answers: list[tuple[str, int, float]] = []

        def probe(url: str) -> None:
            with httpx.Client(timeout=30) as client:
                while not done.is_set():
                    started = time.monotonic()
                    status = client.get(url).status_code
                    answers.append((url, status, time.monotonic() - started))

        probes = [
            threading.Thread(target=probe, args=(url,), daemon=True)
            for url in (f"http://127.0.0.1:{mport}/healthz", f"http://127.0.0.1:{http_port}/v2/health/ready")
        ]
        for thread in probes:
            thread.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as client:
                for name, body in bodies.items():
                    assert len(body) <= limit, name
                    reply = client.post("/v2/models/newstagger/infer", content=body)
                    assert reply.status_code == 400, (name, reply.text[:200])
                    assert (
                        "JSON holds more than 14096 array elements and object members"
                        in reply.json()["error"]
                    )
        finally:
            done.set()
            for thread in probes:
                thread.join(30)
        assert {url for url, _, _ in answers} == {
            f"http://127.0.0.1:{mport}/healthz",
            f"http://127.0.0.1:{http_port}/v2/health/ready",
        }
        assert all(status == 200 for _, status, _ in answers), answers
        assert max(took for _, _, took in answers) < 1.0, sorted(answers, key=lambda a: -a[2])[:3]
