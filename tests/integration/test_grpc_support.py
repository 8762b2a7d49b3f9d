"""Helpers for the gRPC integration tests: an in-process server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from service.core.tagger import Tagger
from service.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.grpc_api.server import TaggerServer, build_server
from service.runtime import Runtime, build_runtime
from service.settings import Settings


@dataclass
class Served:
    runtime: Runtime
    server: TaggerServer
    port: int
    channel: grpc.Channel
    stub: pb_grpc.TaggerServiceStub
    admin: pb_grpc.AdminServiceStub
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextmanager
def serve_in_process(model_dir: Path, tagger: Tagger | None = None, **overrides: Any) -> Iterator[Served]:
    """A real server (real sockets, real stubs) in this process. ``tagger`` replaces the runtime's
    tagger (and the batcher's) before the server starts, e.g. to inject a slow or failing one."""
    settings = Settings(
        model_dir=model_dir,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        reload_interval_seconds=0,
        **overrides,
    )
    registry = CollectorRegistry()
    runtime = build_runtime(settings, registry=registry)
    if tagger is not None:
        if runtime.tagger.model is not None:
            tagger.swap(runtime.tagger.model)
        runtime.tagger = tagger
        runtime.batcher.tagger = tagger
        runtime.reloader.tagger = tagger
    server, port = build_server(runtime, settings)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(
            runtime,
            server,
            port,
            channel,
            pb_grpc.TaggerServiceStub(channel),
            pb_grpc.AdminServiceStub(channel),
            registry,
        )
    finally:
        channel.close()
        server.drain(1.0)
        runtime.close(timeout=5)
