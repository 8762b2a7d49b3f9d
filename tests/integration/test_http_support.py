"""Helpers for the HTTP integration tests: the HTTP API (and the gRPC server) in this process on
free loopback ports, real sockets, real clients; a REST article, the checked-in OpenAPI document
and the check of a REST error body against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from service.core.tagger import Tagger
from service.http_api.server import HttpApiServer, build_http_api
from tests.helpers import REPO, free_port
from tests.integration.test_grpc_support import Served, serve_in_process

TEXT = "Officials met in the capital on Monday to discuss the ceasefire agreement and next steps."
OPENAPI = json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))


def schema(name: str) -> dict[str, Any]:
    """A component of the checked-in OpenAPI document, resolvable on its own."""
    return {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}


def article(i: int | str, text: str = TEXT) -> dict[str, str]:
    return {"id": f"a-{i}", "title": "Talks resume", "text": text}


def assert_error(reply: Any, status: int, grpc_status: str, text: str = "") -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    body = reply.json()
    jsonschema.validate(body, schema("Error"))
    assert body["error"]["code"] == status and body["error"]["status"] == grpc_status
    assert text in body["error"]["message"]
    return dict(body["error"])


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
