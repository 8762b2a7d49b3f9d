"""Settings a command refuses at start, with the flag or variable that set them."""

from __future__ import annotations

import pytest

from service.cli import main


@pytest.mark.parametrize(
    "servers",
    [
        "127.0.0.1:",
        "127.0.0.1:abc",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "[::1]:",
        "[not-v6]:9092",
        "a b:9092",
        ",",
    ],
)
def test_a_malformed_bootstrap_server_is_refused_at_start(
    servers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, kafka-python raised at the first connection (a traceback, exit 1) or retried an
    impossible port for --stream-retry-seconds."""
    assert main(["stream", "--metrics-port", "0", "--bootstrap-servers", servers]) == 2
    err = capsys.readouterr().err
    assert err.startswith("newstagger stream: invalid settings: --bootstrap-servers: "), err
    assert "no bootstrap server given" in err or f"{servers!r} is not host, host:port" in err


@pytest.mark.parametrize(
    "servers", ["127.0.0.1", "127.0.0.1:9092", "localhost:1,127.0.0.1:65535", "::1", "[::1]", "[::1]:9093"]
)
def test_well_formed_bootstrap_servers_pass(servers: str) -> None:
    from service.settings import Settings

    assert Settings(bootstrap_servers=servers).bootstrap_servers == servers


def test_the_error_names_the_variable_that_was_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """KAFKA_BOOTSTRAP_SERVERS is read too: the error names it when it is the one set."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:")
    assert main(["stream", "--metrics-port", "0"]) == 2
    assert "invalid settings: KAFKA_BOOTSTRAP_SERVERS: 'broker:' is not" in capsys.readouterr().err
    monkeypatch.setenv("NEWSTAGGER_BOOTSTRAP_SERVERS", "other:")  # this one wins when both are set
    assert main(["stream", "--metrics-port", "0"]) == 2
    assert "invalid settings: NEWSTAGGER_BOOTSTRAP_SERVERS: 'other:' is not" in capsys.readouterr().err
