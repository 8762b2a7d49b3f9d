"""The HTTP API over TLS and mutual TLS, with the gRPC server's certificates (httpx as the client)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from service.model.registry import ModelRegistry
from tests.integration.test_grpc_tls import pki  # noqa: F401 - the certificates fixture, shared
from tests.integration.test_http_support import serve_http


@pytest.fixture()
def tls_files(request: pytest.FixtureRequest) -> dict[str, Path]:
    """A CA, a server and a client certificate (test_grpc_tls's ``pki``)."""
    files: dict[str, Path] = request.getfixturevalue("pki")
    return files


BODY = {"article": {"id": "t", "text": "Ministers agreed on a new trade deal on Monday."}}


def context(files: dict[str, Path], with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files["ca"]))
    if with_cert:
        ctx.load_cert_chain(str(files["client_crt"]), str(files["client_key"]))
    return ctx


def test_tls_serves_trusting_clients_only(registry: ModelRegistry, tls_files: dict[str, Path]) -> None:
    with serve_http(registry.root, tls_cert=tls_files["server_crt"], tls_key=tls_files["server_key"]) as s:
        url = f"https://localhost:{s.port}/v1/tag"
        reply = httpx.post(url, json=BODY, verify=context(tls_files, False), timeout=10)
        assert reply.status_code == 200 and reply.json()["result"]["id"] == "t"
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, json=BODY, timeout=10)  # the system trust store does not know our CA
        # plaintext: the server answers with a TLS alert or resets the connection, whichever comes first
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            httpx.post(f"http://127.0.0.1:{s.port}/v1/tag", json=BODY, timeout=10)


def test_mutual_tls_refuses_a_client_without_a_certificate(
    registry: ModelRegistry, tls_files: dict[str, Path]
) -> None:
    tls = {
        "tls_cert": tls_files["server_crt"],
        "tls_key": tls_files["server_key"],
        "tls_client_ca": tls_files["ca"],
    }
    with serve_http(registry.root, **tls) as s:
        url = f"https://localhost:{s.port}/v1/tag"
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.post(url, json=BODY, verify=context(tls_files, False), timeout=10)
        reply = httpx.post(url, json=BODY, verify=context(tls_files, True), timeout=10)
        assert reply.status_code == 200
