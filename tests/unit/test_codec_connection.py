"""Kafka connection settings are passed through to the client; secrets never reach the log line."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from service.settings import Settings
from service.stream.clients import connection_config, describe_connection


def test_sasl_ssl_settings_reach_the_client_and_the_password_is_never_described() -> None:
    settings = Settings(
        bootstrap_servers="b1:9093, b2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="tagger",
        kafka_sasl_password=SecretStr("hunter2-very-secret"),
        kafka_ssl_cafile=Path("/etc/ca.pem"),
    )
    config = connection_config(settings)
    assert config["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "tagger"
    assert config["sasl_plain_password"] == settings.kafka_sasl_password.get_secret_value()
    assert config["ssl_cafile"] == "/etc/ca.pem"
    described = describe_connection(settings)
    assert "hunter2" not in described and "tagger" in described and "SCRAM-SHA-512" in described
    assert "hunter2" not in repr(settings)


def test_plaintext_has_no_security_options() -> None:
    config = connection_config(Settings(bootstrap_servers="k:9092"))
    assert config["security_protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl_", "ssl_")) for k in config)
