"""Every runtime setting, in one place, loaded once by the composition root (``service.cli``).

Each field is settable three ways, highest priority first: a command-line flag
(``--max-batch-size``), an environment variable (``NEWSTAGGER_MAX_BATCH_SIZE``), the default below.
The CLI builds its flags and ``--help`` text from these fields, and the README's configuration
reference is checked against them, so the three cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "NEWSTAGGER_"

DEFAULT_GRPC_PORT = 50051
DEFAULT_METRICS_PORT = 9102
GRPC_SERVICE_NAME = "newstagger.v1.TaggerService"
ADMIN_SERVICE_NAME = "newstagger.v1.AdminService"

#: one bootstrap server: host or host:port (a name or IPv4), [IPv6] or [IPv6]:port
_BROKER = re.compile(r"(?:(?P<host>[A-Za-z0-9._-]+)|\[(?P<v6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[0-9]{1,5}))?")


class Settings(BaseSettings):
    """Runtime settings for ``serve``, ``stream`` and ``demo``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    # --- model ---
    model_dir: Path = Field(
        Path("models"),
        description="Model registry (a directory with a `current` pointer) or one model artifact directory.",
    )
    reload_interval_seconds: float = Field(
        10.0, ge=0, description="How often to check the registry for a new `current` model (0 = never)."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token that enables the admin gRPC service (ReloadModel); unset = disabled."
    )

    # --- gRPC ---
    host: str = Field("127.0.0.1", description="Address the gRPC server binds to (0.0.0.0 in containers).")
    port: int = Field(DEFAULT_GRPC_PORT, ge=0, le=65535, description="gRPC port (0 = pick a free port).")
    workers: int = Field(1, ge=1, le=64, description="gRPC server processes sharing the port (SO_REUSEPORT).")
    grace_seconds: float = Field(
        20.0, ge=0, description="On SIGTERM/SIGINT, how long in-flight work may take to finish."
    )
    max_text_bytes: int = Field(1_000_000, ge=1, description="Largest article text accepted (UTF-8 bytes).")
    max_request_articles: int = Field(
        512,
        ge=1,
        description="Most articles in one TagBatch request (also how many JSON values, or protobuf "
        "fields, one Kafka record may hold: as many as such a request).",
    )
    max_streams: int = Field(
        100, ge=1, description="TagStream calls open at once (per process); more are refused at once."
    )
    stream_idle_seconds: float = Field(
        60.0,
        gt=0,
        description="A TagStream that sends nothing, or reads no response, for this long is ended.",
    )
    tls_cert: Path | None = Field(None, description="Server certificate (PEM); with --tls-key enables TLS.")
    tls_key: Path | None = Field(None, description="Server private key (PEM).")
    tls_client_ca: Path | None = Field(
        None, description="CA bundle (PEM) for client certificates; set = mutual TLS required."
    )

    # --- HTTP API (REST/JSON and the Open Inference Protocol; same host and TLS as gRPC) ---
    http_port: int = Field(
        0, ge=0, le=65535, description="Port of the REST/JSON and V2 HTTP API (0 = off); binds --host."
    )
    http_max_body_bytes: int = Field(
        16 << 20, ge=1024, description="Largest HTTP request body accepted (bigger ones get 413)."
    )

    # --- batching (shared by gRPC, HTTP and Kafka) ---
    max_batch_size: int = Field(64, ge=1, description="Most articles the micro-batcher tags in one call.")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="Extra wait to fill a batch; 0 = flush as soon as the model is idle.",
    )
    queue_size: int = Field(
        2048, ge=1, description="Articles allowed to wait in the batcher; beyond that calls are rejected."
    )
    max_queue_seconds: float = Field(
        1.0,
        gt=0,
        description="Expected seconds of model work allowed to wait in the batcher; beyond that calls are "
        "rejected (and calls whose deadline the queued work would miss).",
    )

    # --- metrics / HTTP ---
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the HTTP endpoint (/metrics, /healthz, /readyz)."
    )
    metrics_port: int = Field(
        DEFAULT_METRICS_PORT,
        ge=0,
        le=65535,
        description="Port of the HTTP metrics/health endpoint (0 = off).",
    )

    # --- Kafka ---
    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices(f"{ENV_PREFIX}BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, comma-separated host:port, [IPv6]:port or host (port 9092); "
        "a malformed one is refused at start (also read from KAFKA_BOOTSTRAP_SERVERS; "
        "NEWSTAGGER_BOOTSTRAP_SERVERS wins when both are set).",
    )
    input_topic: str = Field("articles", description="Topic the stream worker consumes article events from.")
    output_topic: str = Field("articles.tagged", description="Topic tagged events are published to.")
    dlq_topic: str = Field("articles.dlq", description="Dead-letter topic for events that cannot be tagged.")
    group_id: str = Field("newstagger", description="Kafka consumer group of the stream workers.")
    create_topics: bool = Field(True, description="Create missing topics at start (else they must exist).")
    topic_partitions: int = Field(6, ge=1, description="Partitions for topics the worker creates.")
    topic_replication: int = Field(1, ge=1, description="Replication factor for topics the worker creates.")
    poll_max_records: int = Field(256, ge=1, description="Most records taken from one poll.")
    max_in_flight_records: int = Field(
        2048, ge=1, description="Records read but not yet committed before partitions are paused."
    )
    passthrough_fields: str = Field(
        "title,source,url,published_at",
        description="Comma-separated input fields copied into tagged events.",
    )
    output_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "gzip",
        description="Compression of the tagged and dead-letter records (gzip: every Kafka client reads it).",
    )
    stream_retry_seconds: float = Field(
        120.0,
        gt=0,
        description="How long the stream worker retries a failing broker or model before it exits with "
        "a non-zero status (so it is restarted and its partitions are reassigned).",
    )
    session_timeout_ms: int = Field(10_000, ge=1, description="Kafka consumer group session timeout.")
    heartbeat_interval_ms: int = Field(3_000, ge=1, description="Kafka consumer group heartbeat interval.")
    metadata_max_age_ms: int = Field(
        30_000,
        ge=1_000,
        description="How often the stream worker refreshes topic metadata: partitions added to the input "
        "topic are consumed at most this long (plus a rebalance) after they appear.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_* (PLAIN when unset)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL username.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for SSL client auth.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client key for SSL client auth.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _brokers(cls, value: str) -> str:
        """Refused at start, not by the Kafka client later (a traceback, or minutes of retries)."""
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("no bootstrap server given (host:port, comma-separated)")
        for server in servers:
            if not _broker_ok(server):
                raise ValueError(
                    f"{server[:100]!r} is not host, host:port, [IPv6] or [IPv6]:port with a port "
                    "from 1 to 65535 (no port: 9092)"
                )
        return value

    # --- logging ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Log line format.")


def _broker_ok(server: str) -> bool:
    if server.count(":") > 1 and not server.startswith("["):  # a bare IPv6 literal: port 9092
        try:
            return ipaddress.ip_address(server).version == 6
        except ValueError:
            return False
    match = _BROKER.fullmatch(server)
    if match is None or match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
        return False
    v6 = match["v6"]
    try:
        return v6 is None or ipaddress.ip_address(v6).version == 6
    except ValueError:
        return False


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def default_model_dir() -> Path:
    """The model directory every command defaults to: NEWSTAGGER_MODEL_DIR, else ./models."""
    return Path(os.environ.get(env_name("model_dir"), "models"))


MODEL_DIR_HELP = f"[env {ENV_PREFIX}MODEL_DIR]"
