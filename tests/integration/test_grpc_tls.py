"""TLS and mutual TLS with certificates generated here: a CA, a server and a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.gen.newstagger.v1 import tagger_pb2_grpc as pb_grpc
from service.model.registry import ModelRegistry
from tests.integration.test_grpc_support import serve_in_process

REQUEST = pb.TagRequest(article=pb.Article(id="t", text="Ministers agreed on a new trade deal on Monday."))


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(
    subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool, server: bool = False
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("newstagger test CA", ca_key, "newstagger test CA", ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_crt, _ = _write(root / "ca", ca, ca_key)
    server_crt, server_key_path = _write(
        root / "server",
        _cert("localhost", server_key, "newstagger test CA", ca_key, ca=False, server=True),
        server_key,
    )
    client_crt, client_key_path = _write(
        root / "client", _cert("caller", client_key, "newstagger test CA", ca_key, ca=False), client_key
    )
    return {
        "ca": ca_crt,
        "server_crt": server_crt,
        "server_key": server_key_path,
        "client_crt": client_crt,
        "client_key": client_key_path,
    }


def _tag(port: int, credentials: grpc.ChannelCredentials | None) -> pb.TagResponse:
    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        return pb_grpc.TaggerServiceStub(channel).Tag(REQUEST, timeout=5)


def test_tls_serves_trusting_clients_only(registry: ModelRegistry, pki: dict[str, Path]) -> None:
    with serve_in_process(registry.root, tls_cert=pki["server_crt"], tls_key=pki["server_key"]) as s:
        trusted = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        assert _tag(s.port, trusted).result.article_id == "t"
        with pytest.raises(grpc.RpcError) as info:
            _tag(s.port, None)  # plaintext against a TLS port
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_client_without_a_certificate(
    registry: ModelRegistry, pki: dict[str, Path]
) -> None:
    tls = {"tls_cert": pki["server_crt"], "tls_key": pki["server_key"], "tls_client_ca": pki["ca"]}
    with serve_in_process(registry.root, **tls) as s:
        ca = pki["ca"].read_bytes()
        with pytest.raises(grpc.RpcError) as info:
            _tag(s.port, grpc.ssl_channel_credentials(root_certificates=ca))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pki["client_key"].read_bytes(),
            certificate_chain=pki["client_crt"].read_bytes(),
        )
        assert _tag(s.port, with_cert).result.article_id == "t"


def test_incomplete_tls_settings_are_refused(registry: ModelRegistry, pki: dict[str, Path]) -> None:
    from service.grpc_api.server import ServerConfigError

    with pytest.raises(ServerConfigError, match="both --tls-cert and --tls-key"):  # noqa: SIM117
        with serve_in_process(registry.root, tls_cert=pki["server_crt"]):
            pass


def test_a_key_that_does_not_match_its_certificate_is_named(
    registry: ModelRegistry, pki: dict[str, Path]
) -> None:
    from service.grpc_api.server import ServerConfigError

    with pytest.raises(ServerConfigError, match="does not match the certificate"):  # noqa: SIM117
        with serve_in_process(registry.root, tls_cert=pki["server_crt"], tls_key=pki["client_key"]):
            pass
