"""Kafka client configuration from Settings: connection and security options shared by the
consumer, producer and admin client, and topic creation. Secrets go to the client only; what is
logged is ``describe_connection`` (no passwords, no key material)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from service.core.errors import NewstaggerError
from service.settings import Settings

logger = logging.getLogger(__name__)

#: the largest fetch response (so the largest input record batch) the consumer reads: kafka-python's
#: default, set explicitly; a larger one is dead-lettered unread (``unreadable``)
RECEIVE_MAX_BYTES = 100_000_000


class KafkaSetupError(NewstaggerError):
    """The brokers could not be reached or the topics could not be created/found."""


def connection_config(settings: Settings) -> dict[str, Any]:
    """bootstrap servers + security options, as kafka-python keyword arguments."""
    config: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": settings.kafka_security_protocol,
        "client_id": "newstagger",
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        config["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            config["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_security_protocol.endswith("SSL"):
        for name in ("cafile", "certfile", "keyfile"):
            path = getattr(settings, f"kafka_ssl_{name}")
            if path is not None:
                config[f"ssl_{name}"] = str(path)
    return config


def describe_connection(settings: Settings) -> str:
    """For logs: where and how we connect, never the secrets."""
    parts = [f"servers={settings.bootstrap_servers}", f"protocol={settings.kafka_security_protocol}"]
    if settings.kafka_security_protocol.startswith("SASL"):
        parts.append(f"sasl={settings.kafka_sasl_mechanism or 'PLAIN'} user={settings.kafka_sasl_username}")
    return " ".join(parts)


def build_consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    config = connection_config(settings) | {
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.poll_max_records,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        # the group leader notices partitions added to the input topic only when it refreshes
        # metadata (kafka-python's default: every 5 minutes)
        "metadata_max_age_ms": settings.metadata_max_age_ms,
        "fetch_max_wait_ms": 100,
        # bounded memory: what one fetch may buffer
        "fetch_max_bytes": 8 * 1024 * 1024,
        "max_partition_fetch_bytes": max(1024 * 1024, settings.max_text_bytes * 2),
        "receive_message_max_bytes": RECEIVE_MAX_BYTES,
        "isolation_level": "read_committed",
    }
    return KafkaConsumer(**(config | overrides))


def build_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    config = connection_config(settings) | {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": max(1024 * 1024, settings.max_text_bytes * 2 + 64 * 1024),
        "delivery_timeout_ms": 120_000,
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 200,
        "compression_type": None if settings.output_compression == "none" else settings.output_compression,
    }
    return KafkaProducer(**(config | overrides))


#: one bootstrap attempt at start; attempts repeat until the retry limit (or a stop)
BOOTSTRAP_ATTEMPT_S = 2.0


def ensure_topics(
    settings: Settings,
    topics: list[str],
    timeout_s: float = 30.0,
    patience_s: float = 30.0,
    stopping: threading.Event | None = None,
) -> bool:
    """Create missing topics (settings.create_topics) or check they exist; KafkaSetupError if not.
    A broker that does not answer is tried again for ``patience_s`` (the worker passes
    ``--stream-retry-seconds``: an outage at start is retried as long as one later); False if
    ``stopping`` is set meanwhile."""
    give_up = time.monotonic() + patience_s
    while True:
        left = give_up - time.monotonic()
        try:
            admin = KafkaAdminClient(
                **connection_config(settings),
                request_timeout_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(1000 * max(0.5, min(BOOTSTRAP_ATTEMPT_S, left))),
            )
            break
        except KafkaError as exc:
            if time.monotonic() >= give_up:
                raise KafkaSetupError(
                    f"cannot reach Kafka ({describe_connection(settings)}): {exc} (tried for {patience_s:g}s)"
                ) from exc
            logger.warning("no broker answers yet (%s); retrying for %.0fs more", exc, left)
            if stopping is not None and stopping.wait(0.5):
                return False
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing and not settings.create_topics:
            raise KafkaSetupError(f"topics do not exist: {', '.join(missing)} (and --no-create-topics)")
        if missing:
            new = [NewTopic(t, settings.topic_partitions, settings.topic_replication) for t in missing]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                admin.create_topics(new)
            logger.info(
                "created topics %s (%d partitions, replication %d)",
                ", ".join(missing),
                settings.topic_partitions,
                settings.topic_replication,
            )
    except KafkaError as exc:
        raise KafkaSetupError(f"cannot create or list topics: {exc}") from exc
    finally:
        admin.close()
    return True
