"""The whole lifecycle under load: v1 served over gRPC (`newstagger serve`) and Kafka
(`newstagger stream`), steady traffic on both, v2 with a new label trained from new data and
promoted through the quality gate, then a corrupted v3 promoted behind the gate's back.

No gRPC call may fail, no Kafka record may be lost or dead-lettered, the outputs must switch from
v1 to v2 (every response and event names its model version), the new label must appear, and the
corrupted v3 must be refused while v2 keeps serving."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from service.cli import main
from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.model.artifact import MODEL_FILE
from service.model.registry import ModelRegistry
from tests.helpers import REPO, STARTER, free_port, stop_process, wait_for, write_jsonl

NEW_LABEL = "cyber_attack"
PLACES = [
    "the port",
    "the central bank",
    "a power grid",
    "the railway",
    "a hospital",
    "the ministry",
    "an airline",
    "the stock exchange",
    "a water utility",
    "the postal service",
    "a telecom operator",
    "the tax office",
    "a refinery",
    "the customs service",
    "a university",
    "the weather agency",
    "a shipyard",
    "the border police",
    "a broadcaster",
    "the metro",
]
CYBER = (
    "Hackers launched a cyber attack on {place}, encrypting its servers with ransomware and "
    "knocking its network offline; officials blamed a state-backed hacking group for the intrusion."
)
RELOAD = "0.5"


def cyber_rows(places: list[str], prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}-{i}",
            "title": f"Cyber attack hits {p}",
            "text": CYBER.format(place=p),
            "topics": [NEW_LABEL],
            "stance": "neutral",
        }
        for i, p in enumerate(places)
    ]


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSTAGGER_", "PROMETHEUS_"))}
    env |= {"PYTHONPATH": str(REPO), "NEWSTAGGER_RELOAD_INTERVAL_SECONDS": RELOAD}
    with log.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "service.cli", *args, "--log-format", "text", "--metrics-port", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
        try:
            yield proc
        finally:
            stop_process(proc, signal.SIGTERM, timeout=30)


class GrpcTraffic(threading.Thread):
    """Steady Tag calls; records every outcome."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.TaggerServiceStub(self.channel)
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def tag(self, text: str, aid: str = "g") -> pb.TagResult:
        return self.stub.Tag(pb.TagRequest(article=pb.Article(id=aid, text=text)), timeout=10).result

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.versions.append(
                    self.tag(f"Officials met in the capital to discuss sanctions, day {i}.").model_version
                )
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")
            i += 1
            time.sleep(0.02)


class KafkaTraffic(threading.Thread):
    """Steady article events, keyed by id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap)
        self.topic = topic
        self.sent: list[str] = []
        self.stop = threading.Event()

    def send(self, aid: str, text: str) -> None:
        self.producer.send(self.topic, key=aid.encode(), value=json.dumps({"id": aid, "text": text}).encode())
        self.producer.flush(10)
        self.sent.append(aid)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            self.send(f"k-{i}", f"Troops were deployed near the border as talks stalled, report {i}.")
            i += 1
            time.sleep(0.05)


class Reader:
    """Everything on the output and dead-letter topics, from the beginning."""

    def __init__(self, bootstrap: str, output: str, dlq: str) -> None:
        self.consumer = KafkaConsumer(
            output,
            dlq,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=f"reader-{uuid.uuid4().hex[:8]}",
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
        )
        self.output, self.dlq = output, dlq
        self.tagged: dict[str, list[dict[str, Any]]] = {}
        self.dead: list[bytes] = []

    def poll(self) -> None:
        for tp, records in self.consumer.poll(timeout_ms=200).items():
            for r in records:
                if tp.topic == self.dlq:
                    self.dead.append(r.value)
                else:
                    event = json.loads(r.value)
                    self.tagged.setdefault(event["id"], []).append(event)

    def wait(self, check: Any, timeout: float, what: str) -> None:
        def step() -> bool:
            self.poll()
            return bool(check())

        wait_for(step, timeout, interval=0.01, what=what)


def version_of(event: dict[str, Any]) -> str:
    return str(event["model"]["version"])


def labels_of(event: dict[str, Any], head: str) -> list[str]:
    return [s["label"] for h in event["heads"] if h["head"] == head for s in h["labels"]]


@pytest.mark.slow
def test_retrain_promote_and_refuse_under_load(
    kafka_bootstrap: str,
    registry: ModelRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"articles-{tag}", "output": f"tagged-{tag}", "dlq": f"dlq-{tag}"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics.values()])
    admin.close()
    port = free_port()
    reg = str(registry.root)
    serve_args = ["serve", "--model-dir", reg, "--port", str(port)]
    stream_args = [
        "stream",
        "--model-dir",
        reg,
        "--bootstrap-servers",
        kafka_bootstrap,
        "--input-topic",
        topics["input"],
        "--output-topic",
        topics["output"],
        "--dlq-topic",
        topics["dlq"],
        "--group-id",
        f"group-{tag}",
        "--session-timeout-ms",
        "2000",
        "--heartbeat-interval-ms",
        "500",
    ]
    reader = Reader(kafka_bootstrap, topics["output"], topics["dlq"])
    request.addfinalizer(reader.consumer.close)
    with process(serve_args, tmp_path / "serve.log"), process(stream_args, tmp_path / "stream.log"):
        grpc_load = GrpcTraffic(port)
        request.addfinalizer(grpc_load.channel.close)
        wait_for(lambda: grpc_load.tag("warm up").model_version == "v1", 60, what="gRPC serving v1")
        kafka_load = KafkaTraffic(kafka_bootstrap, topics["input"])
        request.addfinalizer(kafka_load.producer.close)
        grpc_load.start()
        kafka_load.start()
        try:
            reader.wait(lambda: any(version_of(e[0]) == "v1" for e in reader.tagged.values()), 90, "Kafka v1")

            # --- v2: new labelled data with a new topic label, through the quality gate ---
            extra = write_jsonl(tmp_path / "extra.jsonl", cyber_rows(PLACES[:14], "cyber"))
            evals = [json.loads(line) for line in (STARTER / "dev.jsonl").read_text().splitlines()]
            eval_file = write_jsonl(tmp_path / "eval.jsonl", evals + cyber_rows(PLACES[14:], "cyber-eval"))
            fast = tmp_path / "fast.toml"
            fast.write_text("[thresholds]\ncv_folds = 0\n")
            code = main(
                [
                    "train",
                    "--data",
                    str(STARTER / "train.jsonl"),
                    str(extra),
                    "--dev",
                    str(STARTER / "dev.jsonl"),
                    "--eval",
                    str(eval_file),
                    "--config",
                    str(fast),
                    "--registry",
                    reg,
                    "--version",
                    "v2",
                    "--promote-if-better",
                ]
            )
            gate = capsys.readouterr().out
            assert code == 0, gate
            assert f"labels +{NEW_LABEL}" in gate and "PROMOTE" in gate
            assert registry.current() == "v2"

            wait_for(lambda: grpc_load.versions and grpc_load.versions[-1] == "v2", 60, what="gRPC on v2")
            reader.wait(
                lambda: (
                    version_of(reader.tagged[kafka_load.sent[-1]][0]) == "v2"
                    if kafka_load.sent[-1] in reader.tagged
                    else False
                ),
                90,
                "Kafka on v2",
            )
            cyber_text = CYBER.format(place="the national library")
            assert NEW_LABEL in [
                s.label for h in grpc_load.tag(cyber_text, "c").heads if h.head == "topics" for s in h.labels
            ]
            kafka_load.send("cyber-k", cyber_text)
            reader.wait(lambda: "cyber-k" in reader.tagged, 60, "the cyber event tagged")
            assert NEW_LABEL in labels_of(reader.tagged["cyber-k"][0], "topics")
            assert version_of(reader.tagged["cyber-k"][0]) == "v2"

            # --- v3: a corrupted artifact promoted behind the gate's back ---
            v3 = registry.new_version_dir("v3")
            shutil.copytree(registry.path("v2"), v3)
            manifest = json.loads((v3 / "manifest.json").read_text())
            manifest["version"] = "v3"
            (v3 / "manifest.json").write_text(json.dumps(manifest))
            with (v3 / MODEL_FILE).open("r+b") as fh:
                fh.seek(100)
                fh.write(b"corrupted")
            registry.promote("v3", verify=False)
            logs = [tmp_path / "serve.log", tmp_path / "stream.log"]
            wait_for(
                lambda: all("refused model" in p.read_text(errors="replace") for p in logs),
                30,
                what="both services refuse v3",
            )
            before = len(grpc_load.versions)
            wait_for(lambda: len(grpc_load.versions) > before + 20, 30, what="more gRPC traffic")
        finally:
            grpc_load.stop.set()
            kafka_load.stop.set()
            grpc_load.join(15)
            kafka_load.join(15)
        last = "last"
        kafka_load.send(last, "A final report on the talks.")
        reader.wait(lambda: set(kafka_load.sent) <= set(reader.tagged), 90, "every record tagged")
        assert version_of(reader.tagged[last][0]) == "v2"  # v3 refused: v2 keeps serving
        assert grpc_load.tag("after v3").model_version == "v2"

    assert grpc_load.failures == []
    assert reader.dead == []
    assert set(kafka_load.sent) <= set(reader.tagged)  # nothing lost
    g = grpc_load.versions
    assert g[0] == "v1" and g[-1] == "v2" and set(g) == {"v1", "v2"}
    assert g == sorted(g)  # one switch, never back
    kafka_versions = {version_of(events[0]) for events in reader.tagged.values()}
    assert kafka_versions == {"v1", "v2"}
    assert registry.current() == "v3"  # the pointer says v3, but no process serves it
