"""Values that would deploy something broken fail the install with a message naming them; their
neighbours that work still render."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from tests.integration.test_helm_support import FULLNAME, Render, Rendered, assert_install_fails

pytestmark = pytest.mark.timeout(60)


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "string replica count": (
        {"server": {"replicaCount": "2"}},
        "at '/server/replicaCount': got string, want integer",
    ),
    "string worker replica count": (
        {"worker": {"replicaCount": "two"}},
        "at '/worker/replicaCount': got string, want integer",
    ),
    "HPA and KEDA both on": (
        {"worker": {"autoscaling": {"enabled": True}, "keda": {"enabled": True}}},
        "worker.autoscaling.enabled (CPU HPA) and worker.keda.enabled (KEDA ScaledObject on Kafka lag) "
        "are mutually exclusive",
    ),
    "SASL without secret": (
        {"kafka": {"securityProtocol": "SASL_SSL"}},
        "kafka.securityProtocol is SASL_SSL but kafka.sasl.existingSecret is empty",
    ),
    "more workers than partitions": (
        {"worker": {"replicaCount": 7}},
        "worker.replicaCount (7) is above kafka.partitions (6)",
    ),
    "KEDA maximum above partitions": (
        {"worker": {"keda": {"enabled": True, "maxReplicaCount": 8}}},
        "the worker autoscaler maximum (8) is above kafka.partitions (6)",
    ),
    "gRPC TLS without secret": (
        {"grpc": {"tls": {"enabled": True}}},
        "grpc.tls.enabled is true but grpc.tls.secretName is empty",
    ),
    "retrain without data": (
        {"retrain": {"enabled": True}},
        "retrain.enabled is true but retrain.dataVolume is empty",
    ),
    "unknown protocol": (
        {"kafka": {"securityProtocol": "SASL"}},
        "at '/kafka/securityProtocol': value must be one of",
    ),
    "misspelt option": ({"sever": {"enabled": False}}, "additional properties 'sever' not allowed"),
    # A PodDisruptionBudget allowing no disruption blocks every node drain.
    "server PDB allowing no eviction": (
        {"server": {"pdb": {"enabled": True, "maxUnavailable": 0}}},
        "at '/server/pdb/maxUnavailable'",
    ),
    "worker PDB allowing 0%": (
        {"worker": {"pdb": {"enabled": True, "maxUnavailable": "0%"}}},
        "at '/worker/pdb/maxUnavailable'",
    ),
    "HTTP probes without the HTTP API": (
        {"http": {"probes": True}},
        "http.probes is true but http.enabled is false",
    ),
    # Measured with the default model: 4 serving processes + the supervisor need ~1.5 GiB.
    "server workers above the memory limit": (
        {"server": {"workers": 4}},
        "server.resources.limits.memory (1Gi = 1024 MiB) is below the 1480 MiB server.workers=4 needs",
    ),
    "worker memory limit below one process": (
        {"worker": {"resources": {"limits": {"memory": "256Mi"}}}},
        "worker.resources.limits.memory (256Mi = 256 MiB) is below the 320 MiB the stream worker needs",
    ),
    # Without a CPU limit training starts one fold process per node CPU (5 folds): 2364 MiB measured.
    "retrain without a CPU limit": (
        {
            "retrain": {
                "enabled": True,
                "dataVolume": {"emptyDir": {}},
                "resources": {"limits": {"cpu": None}},
            }
        },
        "retrain.resources.limits.memory (2Gi = 2048 MiB) is below the 2380 MiB training needs",
    ),
    "retrain bypassing the quality gate": (
        {"retrain": {"enabled": True, "dataVolume": {"emptyDir": {}}, "extraArgs": ["--no-promote"]}},
        'retrain.extraArgs holds "--no-promote"',
    ),
    "retrain replacing the registry": (
        {"retrain": {"enabled": True, "dataVolume": {"emptyDir": {}}, "extraArgs": ["--registry=/tmp/r"]}},
        'retrain.extraArgs holds "--registry=/tmp/r"',
    ),
    "relative training file": (
        {"retrain": {"trainFiles": ["train.jsonl"]}},
        "at '/retrain/trainFiles/0'",
    ),
    "Kafka client certificate without its key": (
        {"kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "ca", "certKey": "tls.crt"}}},
        "kafka.tls.certKey and kafka.tls.keyKey go together",
    ),
    # Prometheus refuses a scrape config whose timeout exceeds its interval (the default timeout is 10s).
    "scrape timeout above the interval": (
        {"metrics": {"serviceMonitor": {"enabled": True, "interval": "5s"}}},
        "metrics.serviceMonitor.scrapeTimeout (10s) is longer than metrics.serviceMonitor.interval (5s)",
    ),
    # config.extra wins over the chart's keys, but these the chart builds ports, probes, mounts, KEDA
    # and Secrets from: the metrics server would listen where no probe or Service looks.
    "config.extra moving the metrics port": (
        {"config": {"extra": {"NEWSTAGGER_METRICS_PORT": "9200"}}},
        "config.extra sets NEWSTAGGER_METRICS_PORT, which the chart builds other objects from",
    ),
    "config.extra holding the admin token": (
        {"config": {"extra": {"NEWSTAGGER_ADMIN_TOKEN": "s3cret"}}},
        "set adminToken.existingSecret instead",
    ),
    "heartbeat not below the session timeout": (
        {"kafka": {"heartbeatIntervalMs": 10000}},
        "kafka.heartbeatIntervalMs (10000) must be below kafka.sessionTimeoutMs (10000)",
    ),
    "server HPA without a CPU request": (
        {"server": {"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": None}}}},
        "server.autoscaling.enabled scales on CPU utilization, a percentage of server.resources.requests.cpu",
    ),
    "worker HPA without a CPU request": (
        {"worker": {"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": None}}}},
        "worker.autoscaling.enabled scales on CPU utilization, a percentage of worker.resources.requests.cpu",
    ),
    # Kafka Secrets the protocol would never use: the operator believes TLS or SASL is on.
    "Kafka TLS Secret with PLAINTEXT": (
        {"kafka": {"tls": {"existingSecret": "kafka-ca"}}},
        "kafka.tls.existingSecret (kafka-ca) is set but kafka.securityProtocol is PLAINTEXT",
    ),
    "Kafka TLS Secret with SASL_PLAINTEXT": (
        {
            "kafka": {
                "securityProtocol": "SASL_PLAINTEXT",
                "sasl": {"existingSecret": "kafka-sasl"},
                "tls": {"existingSecret": "kafka-ca"},
            }
        },
        "kafka.tls.existingSecret (kafka-ca) is set but kafka.securityProtocol is SASL_PLAINTEXT",
    ),
    "Kafka SASL Secret without SASL": (
        {"kafka": {"securityProtocol": "SSL", "sasl": {"existingSecret": "kafka-sasl"}}},
        "kafka.sasl.existingSecret (kafka-sasl) is set but kafka.securityProtocol is SSL",
    ),
    "Kafka client certificate without a Secret": (
        {"kafka": {"securityProtocol": "SSL", "tls": {"certKey": "tls.crt", "keyKey": "tls.key"}}},
        "kafka.tls.certKey and kafka.tls.keyKey are set but no Kafka TLS Secret is mounted",
    ),
    "Kafka TLS Secret with no key read from it": (
        {"kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "kafka-ca", "caKey": ""}}},
        "kafka.tls.existingSecret (kafka-ca) is mounted but kafka.tls.caKey, certKey and keyKey are all",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_fail_install_with_a_clear_message(render: Render, case: str) -> None:
    assert_install_fails(render, *BAD_VALUES[case])


@pytest.mark.parametrize(
    ("interval", "timeout"), [("1m", "1m"), ("1m30s", "90s"), ("1s", "500ms"), ("1h", "59m59s")]
)
def test_scrape_timeout_up_to_the_interval_is_accepted(render: Render, interval: str, timeout: str) -> None:
    values = {
        "metrics": {"serviceMonitor": {"enabled": True, "interval": interval, "scrapeTimeout": timeout}}
    }
    endpoint = render(values).one("ServiceMonitor", FULLNAME)["spec"]["endpoints"][0]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == (interval, timeout)


def test_the_heartbeat_rule_is_the_kafka_clients(chart: helm.Chart) -> None:
    """kafka-python refuses a heartbeat interval not below the session timeout when the consumer is built."""
    from kafka.coordinator.heartbeat import Heartbeat
    from kafka.errors import KafkaConfigurationError

    defaults = chart.values["kafka"]
    Heartbeat(
        group_id="g",
        session_timeout_ms=defaults["sessionTimeoutMs"],
        heartbeat_interval_ms=defaults["heartbeatIntervalMs"],
    )
    with pytest.raises(KafkaConfigurationError):
        Heartbeat(group_id="g", session_timeout_ms=10_000, heartbeat_interval_ms=10_000)


def test_string_replica_count_fails_schema_validation(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape("got string, want integer")):
        chart.validate_schema({"server": {"replicaCount": "3"}})
    chart.validate_schema({"server": {"replicaCount": 3}})


def test_worker_replicas_are_capped_at_partitions(render: Render, production: Rendered) -> None:
    # KEDA and HPA maxima default to the partition count.
    assert production.one("ScaledObject", f"{FULLNAME}-worker")["spec"]["maxReplicaCount"] == 12
    hpa = render({"worker": {"autoscaling": {"enabled": True}}})
    assert hpa.one("HorizontalPodAutoscaler", f"{FULLNAME}-worker")["spec"]["maxReplicas"] == 6
    assert "replicas" not in hpa.one("Deployment", f"{FULLNAME}-worker")["spec"]
    # ...and the cap is a documented opt-out, not a hard limit.
    above = render({"worker": {"replicaCount": 9, "allowReplicasAbovePartitions": True}})
    assert above.one("Deployment", f"{FULLNAME}-worker")["spec"]["replicas"] == 9
