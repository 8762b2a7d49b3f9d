"""Helpers for the HTTP integration tests: the HTTP API (and the gRPC server) in this process on
free loopback ports, real sockets, real clients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.core.tagger import Tagger
from service.http_api.server import HttpApiServer, build_http_api
from tests.helpers import free_port
from tests.integration.test_grpc_support import Served, serve_in_process


@dataclass
class HttpServed:
    grpc: Served
    api: HttpApiServer
    port: int
    client: httpx.Client

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def serve_http(model_dir: Path, tagger: Tagger | None = None, **overrides: Any) -> Iterator[HttpServed]:
    """gRPC and HTTP servers sharing one runtime, as ``newstagger serve --http-port`` wires them."""
    overrides.setdefault("http_port", free_port())
    with serve_in_process(model_dir, tagger, **overrides) as served:
        api = build_http_api(served.runtime, served.runtime.settings)
        assert api is not None
        port = api.start()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            yield HttpServed(served, api, port, client)
        finally:
            client.close()
            api.stop(1.0)
