"""The published Open Inference Protocol clients, unmodified (``tritonclient.grpc``,
``tritonclient.http``, and KServe's ``InferenceGRPCClient`` / ``InferenceRESTClient``), against a
running ``newstagger serve --http-port``: readiness, metadata, infer, an unknown model.

Each client runs in a process of its own (tests/integration/v2_client.py): the packages and
service.gen.inference each register the protocol's ``inference.*`` messages in protobuf's default
descriptor pool, so no two of them import into one process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.model.artifact import LoadedModel
from tests.helpers import REPO, free_port, wait_for
from tests.integration.test_grpc_process import ready, serve, tag_once

TEXTS = [
    "Officials met in the capital on Monday to discuss the ceasefire agreement and next steps.",
    "North Korean troops were sent to Kursk to fight alongside Russian forces.",
]
CLIENT = Path(__file__).with_name("v2_client.py")


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """One ``newstagger serve`` process for the module: (gRPC port, HTTP port)."""
    http_port = free_port()
    with serve(model_dir, tmp_path_factory.mktemp("serve"), "--http-port", str(http_port)) as (
        _,
        port,
        mport,
    ):
        wait_for(lambda: ready(mport), timeout=60, what="/readyz")
        yield port, http_port


@pytest.fixture(scope="module")
def expected(server: tuple[int, int]) -> list[pb.TagResult]:
    """What the gRPC ``Tag`` call returns for each text."""
    return [tag_once(server[0], text).result for text in TEXTS]


def run_client(name: str, server: tuple[int, int], model: str) -> dict[str, Any]:
    command = [sys.executable, str(CLIENT), name, "--grpc", f"127.0.0.1:{server[0]}"]
    command += ["--http", f"127.0.0.1:{server[1]}", "--model", model, *TEXTS]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout))


def expected_metadata(model: LoadedModel) -> dict[str, Any]:
    manifest = model.manifest
    return {
        "name": manifest.name,
        "versions": [manifest.version],
        "inputs": [["text", "BYTES", [-1]], ["title", "BYTES", [-1]], ["target", "BYTES", [-1]]],
        "outputs": [
            [f"{h.name}_{kind}", dtype, [-1, len(h.labels)]]
            for h in manifest.heads
            for kind, dtype in (("labels", "BYTES"), ("scores", "FP32"), ("assigned", "BOOL"))
        ],
    }


def assert_outputs_match_tag(outputs: dict[str, Any], expected: list[pb.TagResult]) -> None:
    """Per head and article: labels by score, their scores and which are assigned, as ``Tag``."""
    heads = {head.head for result in expected for head in result.heads}
    assert set(outputs) == {f"{h}_{kind}" for h in heads for kind in ("labels", "scores", "assigned")}
    for row, result in enumerate(expected):
        for head in result.heads:
            labels = outputs[f"{head.head}_labels"][row]
            assert labels == [s.label for s in head.scores]
            assert outputs[f"{head.head}_scores"][row] == pytest.approx(
                [s.score for s in head.scores], rel=1e-6
            )
            assigned = outputs[f"{head.head}_assigned"][row]
            assert [lbl for lbl, a in zip(labels, assigned, strict=True) if a] == [
                s.label for s in head.labels
            ]


@pytest.mark.parametrize(
    ("client", "unknown_error"),
    [
        ("triton-grpc", "StatusCode.NOT_FOUND: no model 'no-such-model'"),
        ("triton-http", "404: no model 'no-such-model'"),
        ("kserve-grpc", "NOT_FOUND: no model 'no-such-model'"),
        ("kserve-rest", "404: no model 'no-such-model'"),
    ],
)
def test_published_client_checks_readiness_reads_metadata_and_tags(
    client: str,
    unknown_error: str,
    server: tuple[int, int],
    expected: list[pb.TagResult],
    loaded_model: LoadedModel,
) -> None:
    seen = run_client(client, server, loaded_model.manifest.name)
    assert (seen["live"], seen["ready"], seen["model_ready"], seen["unknown_model_ready"]) == (
        True,
        True,
        True,
        False,
    )
    if seen["metadata"] is not None:  # kserve's REST client has no metadata call
        assert seen["metadata"] == expected_metadata(loaded_model)
    assert seen["id"] == client.split("-")[0]
    assert_outputs_match_tag(seen["outputs"], expected)
    assert seen["unknown_model_infer"].startswith(unknown_error), seen["unknown_model_infer"]
