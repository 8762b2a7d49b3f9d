"""The Helm chart and the container image, checked offline against Kubernetes and against the code.

The chart is linted and rendered with Helm's own Go SDK (``helm-python-sdk``: strict lint, then a
client-side dry-run install, as ``helm install --dry-run=client`` would), every rendered object is
validated with ``kubernetes-validate --strict`` against the newest Kubernetes it ships, and the
custom resources (KEDA ScaledObject/TriggerAuthentication, Prometheus Operator ServiceMonitor) against
the JSON schemas in ``crd_schemas/``, written from those projects' CRDs. Port numbers, health service
names and setting names are imported from ``service.settings``, so the chart cannot drift from the
code. No cluster, no container engine and no network are involved.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2

from service.cli import build_parser
from service.settings import (
    DEFAULT_GRPC_PORT,
    DEFAULT_METRICS_PORT,
    ENV_PREFIX,
    GRPC_SERVICE_NAME,
    Settings,
    env_name,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "newstagger"
CRD_SCHEMA_DIR = Path(__file__).resolve().parent / "crd_schemas"
RELEASE = "newstagger"  # the chart name: exercises the name a Service link would collide with
NAMESPACE = "news"
KUBE_VERSION = kubernetes_validate.latest_version()  # newest schemas shipped offline (1.37 today)
FULLNAME = RELEASE
IMAGE_UID = 10001  # the Dockerfile's USER

# A kubeconfig pointing nowhere: a client-side dry run must not need a cluster, and if it ever tried
# it would fail at once on localhost instead of reaching a real one.
NOWHERE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:9"}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nowhere}}]
current-context: nowhere
users: [{name: nowhere, user: {token: unused}}]
"""

DEFAULT_VALUES: dict[str, Any] = {}
PRODUCTION_VALUES: dict[str, Any] = {
    "image": {"digest": "sha256:" + "0123456789abcdef" * 4},
    "config": {"graceSeconds": 25.5, "extra": {"NEWSTAGGER_MAX_TEXT_BYTES": 500000}},
    "grpc": {"tls": {"enabled": True, "secretName": "newstagger-grpc-tls", "mutual": True}},
    "kafka": {
        "bootstrapServers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "partitions": 12,
        "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512", "existingSecret": "newstagger-kafka-sasl"},
        "tls": {"existingSecret": "newstagger-kafka-ca"},
        "createTopics": False,
        "topicReplication": 3,
    },
    "adminToken": {"existingSecret": "newstagger-admin"},
    "models": {"persistence": {"storageClassName": "efs-sc"}},
    "server": {
        "workers": 4,  # 4 x 320 MiB + 200 MiB supervisor: the default 1Gi limit would be refused
        "resources": {"requests": {"cpu": "2", "memory": "1536Mi"}, "limits": {"memory": "2Gi"}},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
        "pdb": {"enabled": True},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "server"}},
            }
        ],
    },
    "worker": {
        "keda": {"enabled": True, "minReplicaCount": 2, "lagThreshold": 500},
        "pdb": {"enabled": True, "maxUnavailable": "25%"},
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "15s"}
    },
    "networkPolicy": {
        "enabled": True,
        "grpcFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}}],
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "egress": {"enabled": True, "kafkaPorts": [9093]},
    },
    "retrain": {
        "enabled": True,
        "timeZone": "Europe/Berlin",
        "dataVolume": {"persistentVolumeClaim": {"claimName": "news-labels", "readOnly": True}},
        "trainFiles": ["/data/train-2024.jsonl", "/data/train-2025.jsonl"],
    },
}
PROFILES = {"default": DEFAULT_VALUES, "production": PRODUCTION_VALUES}

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}
SETTING_ENV_VARS = {env_name(name) for name in Settings.model_fields}


# ------------------------------------------------------------------------------------------- helpers


class Rendered:
    """One dry-run install: the release's objects (test hooks included) and its NOTES."""

    def __init__(self, objects: list[dict[str, Any]], notes: str) -> None:
        self.objects = objects
        self.notes = notes

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every pod template: Deployments, the CronJob and the test Pod."""
        for obj in self.objects:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            if obj["kind"] == "Deployment":
                yield name, obj["spec"]["template"]["spec"]
            elif obj["kind"] == "CronJob":
                yield name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            elif obj["kind"] == "Pod":
                yield name, obj["spec"]


class StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last; Kubernetes'
    strict decoding and other parsers refuse it)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(None, None, f"keys given twice: {twice}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc]  # noqa: S506 - a SafeLoader


def dry_run_install(
    config: helm.Config, chart: helm.Chart, values: dict[str, Any], release_name: str = RELEASE
) -> Rendered:
    release = config.install(
        chart, release_name, copy.deepcopy(values), dry_run="client", namespace=NAMESPACE
    )
    objects = load_yaml_documents(release["manifest"])
    # An install's manifest leaves hooks out; the `helm test` Pod is rendered from the same chart.
    templates = chart.render(copy.deepcopy(values), name=release_name, namespace=NAMESPACE, is_install=True)
    for path, text in sorted(templates.items()):
        if "/templates/tests/" in path:
            objects += load_yaml_documents(text)
    return Rendered(objects, release["notes"])


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(matches) == 1, f"expected one container {name}"
    return matches[0]


def deployment_pod(rendered: Rendered, component: str) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.one("Deployment", f"{FULLNAME}-{component}")["spec"]["template"]["spec"]
    return spec


def container_env(rendered: Rendered, pod_spec: dict[str, Any], ctr: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps, then its own env (secrets as placeholders)."""
    env: dict[str, str] = {}
    for source in ctr.get("envFrom", []):
        env.update(rendered.one("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in ctr.get("env", []):
        env[var["name"]] = var["value"] if "value" in var else f"<secret {var['valueFrom']['secretKeyRef']}>"
    return env


def mount_paths(ctr: dict[str, Any]) -> list[str]:
    return [mount["mountPath"] for mount in ctr.get("volumeMounts", [])]


def validate_object(obj: dict[str, Any]) -> None:
    """Strict Kubernetes schema for built-in kinds, our CRD schema for custom resources."""
    schema_file = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if schema_file is None:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    else:
        schema = json.loads((CRD_SCHEMA_DIR / schema_file).read_text())
        jsonschema.Draft202012Validator(schema).validate(obj)


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _quiet_helm() -> None:
    helm.disable_logging()  # `fail` is logged by the SDK too; the exception carries the message


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def helm_config() -> Iterator[helm.Config]:
    with helm.Config(
        kubeconfig_content=NOWHERE_KUBECONFIG, namespace=NAMESPACE, storage_driver="memory"
    ) as cfg:
        yield cfg


@pytest.fixture(scope="module")
def releases(chart: helm.Chart, helm_config: helm.Config) -> dict[str, Rendered]:
    return {profile: dry_run_install(helm_config, chart, values) for profile, values in PROFILES.items()}


@pytest.fixture(scope="module")
def default(releases: dict[str, Rendered]) -> Rendered:
    return releases["default"]


@pytest.fixture(scope="module")
def production(releases: dict[str, Rendered]) -> Rendered:
    return releases["production"]


# ------------------------------------------------------------------------------------------- lint and schemas


@pytest.mark.parametrize("profile", PROFILES)
def test_chart_passes_strict_lint(profile: str) -> None:
    report = helm.lint(
        CHART_DIR,
        copy.deepcopy(PROFILES[profile]),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    assert report["errors"] == []
    # Severity 2 = warning, 3 = error; strict lint fails on both. (1 = info, e.g. "icon is recommended".)
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


EXPECTED_KINDS = {
    "default": {"ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment", "Pod"},
    "production": {
        "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment", "Pod",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "ScaledObject", "TriggerAuthentication",
        "ServiceMonitor", "NetworkPolicy", "CronJob",
    },
}  # fmt: skip


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_object_is_valid_kubernetes(releases: dict[str, Rendered], profile: str) -> None:
    rendered = releases[profile]
    assert rendered.kinds() == EXPECTED_KINDS[profile]
    failures = []
    for obj in rendered.objects:
        try:
            validate_object(obj)
        except (jsonschema.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            where = "/".join(str(part) for part in getattr(exc, "path", []))
            message = getattr(exc, "message", str(exc))
            failures.append(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {message}")
    assert failures == []
    assert all(obj["metadata"].get("namespace") == NAMESPACE for obj in rendered.objects)


def test_validators_reject_broken_objects(production: Rendered) -> None:
    """The validation above can fail: strict mode and the CRD schemas catch real mistakes."""
    scaled = production.one("ScaledObject", f"{FULLNAME}-worker")
    monitor = production.one("ServiceMonitor", FULLNAME)
    deployment = production.one("Deployment", f"{FULLNAME}-server")

    no_target = copy.deepcopy(scaled)
    del no_target["spec"]["scaleTargetRef"]
    numeric_lag = copy.deepcopy(scaled)
    numeric_lag["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 500
    no_group = copy.deepcopy(scaled)
    del no_group["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["endpoints"][0]["interval"] = "15 seconds"
    no_selector = copy.deepcopy(monitor)
    del no_selector["spec"]["selector"]
    unknown_field = copy.deepcopy(deployment)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}

    for broken in (no_target, numeric_lag, no_group, bad_interval, no_selector, unknown_field):
        with pytest.raises(jsonschema.ValidationError):
            validate_object(broken)


# ------------------------------------------------------------------------------------------- bad values

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
    # The server binds each port: a clash is a crash loop (and a Service the API server refuses).
    "metrics port = gRPC port": (
        {"metrics": {"port": DEFAULT_GRPC_PORT}},
        "grpc.port, metrics.port must differ (got [50051 50051])",
    ),
    "HTTP port = metrics port": (
        {"http": {"enabled": True, "port": DEFAULT_METRICS_PORT}},
        "grpc.port, metrics.port and http.port must differ (got [50051 9102 9102])",
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
    # The default kafkaPorts is 9092: the worker would be cut off from a broker on 9093.
    "broker port closed by the egress policy": (
        {
            "kafka": {"bootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:9093"},
            "networkPolicy": {"enabled": True, "egress": {"enabled": True}},
        },
        "kafka.bootstrapServers names kafka-1.kafka:9093, but networkPolicy.egress lets the stream worker "
        "out to ports [9092] only",
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
def test_bad_values_fail_install_with_a_clear_message(
    chart: helm.Chart, helm_config: helm.Config, case: str
) -> None:
    values, message = BAD_VALUES[case]
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        dry_run_install(helm_config, chart, values)


@pytest.mark.parametrize(
    ("interval", "timeout"), [("1m", "1m"), ("1m30s", "90s"), ("1s", "500ms"), ("1h", "59m59s")]
)
def test_scrape_timeout_up_to_the_interval_is_accepted(
    chart: helm.Chart, helm_config: helm.Config, interval: str, timeout: str
) -> None:
    values = {
        "metrics": {"serviceMonitor": {"enabled": True, "interval": interval, "scrapeTimeout": timeout}}
    }
    endpoint = dry_run_install(helm_config, chart, values).one("ServiceMonitor", FULLNAME)["spec"][
        "endpoints"
    ][0]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == (interval, timeout)


@pytest.mark.parametrize(
    "egress",
    [
        {"enabled": True, "kafkaPorts": [9093]},
        {"enabled": True, "extraRules": [{"ports": [{"port": 9093, "protocol": "TCP"}]}]},
        {"enabled": True, "extraRules": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},  # every port
    ],
    ids=["kafkaPorts", "extra rule on the port", "extra rule on every port"],
)
def test_broker_ports_open_in_the_egress_policy_are_accepted(
    chart: helm.Chart, helm_config: helm.Config, egress: dict[str, Any]
) -> None:
    values = {
        "kafka": {"bootstrapServers": "kafka:9093"},
        "networkPolicy": {"enabled": True, "egress": egress},
    }
    dry_run_install(helm_config, chart, values).one("NetworkPolicy", f"{FULLNAME}-worker")


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


def test_worker_replicas_are_capped_at_partitions(
    chart: helm.Chart, helm_config: helm.Config, production: Rendered
) -> None:
    # KEDA and HPA maxima default to the partition count.
    assert production.one("ScaledObject", f"{FULLNAME}-worker")["spec"]["maxReplicaCount"] == 12
    hpa = dry_run_install(helm_config, chart, {"worker": {"autoscaling": {"enabled": True}}})
    assert hpa.one("HorizontalPodAutoscaler", f"{FULLNAME}-worker")["spec"]["maxReplicas"] == 6
    assert "replicas" not in hpa.one("Deployment", f"{FULLNAME}-worker")["spec"]
    # ...and the cap is a documented opt-out, not a hard limit.
    above = dry_run_install(
        helm_config, chart, {"worker": {"replicaCount": 9, "allowReplicasAbovePartitions": True}}
    )
    assert above.one("Deployment", f"{FULLNAME}-worker")["spec"]["replicas"] == 9


# ------------------------------------------------------------------------------------------- chart == code


def test_server_deployment_matches_the_service(default: Rendered) -> None:
    pod = deployment_pod(default, "server")
    server = container(pod, "server")
    assert server["command"] == ["newstagger"]
    assert server["args"] == ["serve"]
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {
        "grpc": DEFAULT_GRPC_PORT,
        "metrics": DEFAULT_METRICS_PORT,
    }
    # Ready = the tagger service is SERVING (a native gRPC probe on grpc.health.v1.Health); started and
    # alive = the process answers, with or without a model, so a pod waiting for one is not restarted.
    assert server["readinessProbe"]["grpc"] == {"port": DEFAULT_GRPC_PORT, "service": GRPC_SERVICE_NAME}
    assert server["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}

    service = default.one("Service", FULLNAME)
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "grpc": (DEFAULT_GRPC_PORT, "grpc"),
        "metrics": (DEFAULT_METRICS_PORT, "metrics"),
    }
    assert (
        service["spec"]["selector"]
        == default.one("Deployment", f"{FULLNAME}-server")["spec"]["selector"]["matchLabels"]
    )

    settings = settings_for(default, pod, server)
    assert (settings.host, settings.port) == ("0.0.0.0", DEFAULT_GRPC_PORT)
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", DEFAULT_METRICS_PORT)
    assert settings.workers == 1
    # The chart's default grace period is the code's, and Kubernetes waits longer than it.
    assert settings.grace_seconds == Settings.model_fields["grace_seconds"].default
    assert (
        pod["terminationGracePeriodSeconds"]
        > settings.grace_seconds + server["lifecycle"]["preStop"]["sleep"]["seconds"]
    )


def test_worker_deployment_matches_the_service(default: Rendered) -> None:
    pod = deployment_pod(default, "worker")
    worker = container(pod, "worker")
    assert worker["command"] == ["newstagger"]
    assert worker["args"] == ["stream"]
    assert worker["ports"] == [{"name": "metrics", "containerPort": DEFAULT_METRICS_PORT, "protocol": "TCP"}]
    # An idle worker (no partition, or no model yet) is unready, not restarted.
    assert worker["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    settings = settings_for(default, pod, worker)
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", DEFAULT_METRICS_PORT)
    assert settings.group_id == default.one("ConfigMap", FULLNAME)["data"]["NEWSTAGGER_GROUP_ID"]
    assert pod["terminationGracePeriodSeconds"] > settings.grace_seconds


def test_tls_server_is_probed_over_http(production: Rendered) -> None:
    """Kubelet gRPC probes cannot do TLS, so with gRPC TLS on the server is probed on /readyz, /healthz."""
    server = container(deployment_pod(production, "server"), "server")
    assert server["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_config_extra_overrides_the_charts_own_keys(production: Rendered) -> None:
    """`config.extra` may set a key the chart sets itself: it wins, and the key is written once (the
    strict loader above refuses a key given twice)."""
    data = production.one("ConfigMap", FULLNAME)["data"]
    assert data["NEWSTAGGER_MAX_TEXT_BYTES"] == "500000"
    assert data["NEWSTAGGER_GRACE_SECONDS"] == "25.5"


def settings_for(rendered: Rendered, pod_spec: dict[str, Any], ctr: dict[str, Any]) -> Settings:
    """Load the service's real Settings from exactly the environment the container gets."""
    env = container_env(rendered, pod_spec, ctr)
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(ENV_PREFIX) or name == "KAFKA_BOOTSTRAP_SERVERS":
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()  # type: ignore[call-arg]  # fields come from the environment


@pytest.mark.parametrize("profile", PROFILES)
def test_every_setting_the_chart_passes_is_a_real_setting(
    releases: dict[str, Rendered], profile: str
) -> None:
    rendered = releases[profile]
    for pod_name, pod_spec in rendered.pod_specs():
        for ctr in pod_spec["containers"]:
            env = container_env(rendered, pod_spec, ctr)
            unknown = {name for name in env if name.startswith(ENV_PREFIX)} - SETTING_ENV_VARS
            assert unknown == set(), f"{pod_name}/{ctr['name']} sets unknown settings"
            if ctr["name"] == "grpc-health":
                continue  # the test Pod runs a health check, not the service
            settings = settings_for(rendered, pod_spec, ctr)  # every value parses and validates
            mounted = mount_paths(ctr)
            for path in (
                settings.model_dir,
                settings.tls_cert,
                settings.tls_key,
                settings.tls_client_ca,
                settings.kafka_ssl_cafile,
                settings.kafka_ssl_certfile,
                settings.kafka_ssl_keyfile,
            ):
                if path is not None:
                    assert any(str(path).startswith(m) for m in mounted), (
                        f"{path} is not mounted in {pod_name}"
                    )


def test_production_wires_secrets_from_existing_secrets(production: Rendered) -> None:
    server_pod = deployment_pod(production, "server")
    worker_pod = deployment_pod(production, "worker")
    server_env = container_env(production, server_pod, container(server_pod, "server"))
    worker_env = container_env(production, worker_pod, container(worker_pod, "worker"))

    secret_refs = {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for pod in (server_pod, worker_pod)
        for var in pod["containers"][0].get("env", [])
        if "valueFrom" in var
    }
    assert secret_refs == {
        "NEWSTAGGER_ADMIN_TOKEN": {"name": "newstagger-admin", "key": "token"},
        "NEWSTAGGER_KAFKA_SASL_USERNAME": {"name": "newstagger-kafka-sasl", "key": "username"},
        "NEWSTAGGER_KAFKA_SASL_PASSWORD": {"name": "newstagger-kafka-sasl", "key": "password"},
    }
    assert worker_env["NEWSTAGGER_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert worker_env["NEWSTAGGER_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert worker_env["NEWSTAGGER_KAFKA_SSL_CAFILE"] == "/etc/newstagger/kafka-tls/ca.crt"
    assert server_env["NEWSTAGGER_TLS_CLIENT_CA"] == "/etc/newstagger/tls/ca.crt"
    assert server_env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
    assert "/tmp/prometheus" in mount_paths(container(server_pod, "server"))
    # Kafka credentials reach only the worker; nothing secret is in the ConfigMap.
    assert not any(
        "SASL_PASSWORD" in name or "ADMIN_TOKEN" in name
        for name in production.one("ConfigMap", FULLNAME)["data"]
    )
    assert "NEWSTAGGER_KAFKA_SASL_PASSWORD" not in server_env
    # KEDA reads lag with the same credentials.
    auth = production.one("TriggerAuthentication", f"{FULLNAME}-kafka")
    assert {(r["parameter"], r["name"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("username", "newstagger-kafka-sasl"),
        ("password", "newstagger-kafka-sasl"),
        ("ca", "newstagger-kafka-ca"),
    }
    trigger = production.one("ScaledObject", f"{FULLNAME}-worker")["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"]) == (
        worker_env["NEWSTAGGER_GROUP_ID"],
        worker_env["NEWSTAGGER_INPUT_TOPIC"],
    )
    assert trigger["metadata"]["bootstrapServers"] == worker_env["NEWSTAGGER_BOOTSTRAP_SERVERS"]
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_are_hardened(releases: dict[str, Rendered], profile: str) -> None:
    rendered = releases[profile]
    pods = dict(rendered.pod_specs())
    assert len(pods) == (4 if profile == "production" else 3)
    for name, pod in pods.items():
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, (
            name
        )  # else a Service "newstagger" sets NEWSTAGGER_PORT=tcp://...
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == IMAGE_UID, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for ctr in pod["containers"]:
            ctx = ctr["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert "limits" in ctr["resources"] and "requests" in ctr["resources"], name
            tmp = [m for m in ctr["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], name
            models = [m for m in ctr["volumeMounts"] if m["name"] == "models"]
            if name.startswith("Deployment/"):
                assert models[0]["readOnly"] is True, name
            if name.startswith("CronJob/"):
                assert models[0]["readOnly"] is False, name
    for account in rendered.all("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("profile", PROFILES)
def test_termination_grace_covers_the_service_grace_period(
    releases: dict[str, Rendered], profile: str
) -> None:
    rendered = releases[profile]
    grace = float(rendered.one("ConfigMap", FULLNAME)["data"]["NEWSTAGGER_GRACE_SECONDS"])
    for component in ("server", "worker"):
        pod = deployment_pod(rendered, component)
        pre_stop = (
            pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        )
        assert (
            math.ceil(grace) + pre_stop
            < pod["terminationGracePeriodSeconds"]
            <= math.ceil(grace) + pre_stop + 30
        )


def test_retrain_cronjob_runs_the_gated_train_command(production: Rendered) -> None:
    cron = production.one("CronJob", f"{FULLNAME}-retrain")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    train = container(pod, "train")
    assert train["command"] == ["newstagger"]
    assert train["args"] == [
        "train", "--data", "/data/train-2024.jsonl", "/data/train-2025.jsonl", "--dev", "/data/dev.jsonl",
        "--registry", "/models", "--promote-if-better",
    ]  # fmt: skip
    # The real command line parser takes it, with the quality gate on and the registry the claim.
    args = build_parser().parse_args(train["args"])
    assert (args.command, args.promote_if_better, args.no_promote, args.out) == ("train", True, False, None)
    assert str(args.registry) == production.one("ConfigMap", FULLNAME)["data"]["NEWSTAGGER_MODEL_DIR"]
    assert [str(f) for f in args.data + args.dev] == [
        *PRODUCTION_VALUES["retrain"]["trainFiles"],
        "/data/dev.jsonl",
    ]
    assert {
        m["mountPath"]: m["readOnly"] for m in train["volumeMounts"] if m["name"] in ("models", "data")
    } == {
        "/models": False,
        "/data": True,
    }
    claim = production.one("PersistentVolumeClaim", f"{FULLNAME}-models")
    assert {v["name"]: v for v in pod["volumes"]}["models"]["persistentVolumeClaim"]["claimName"] == claim[
        "metadata"
    ]["name"]


def test_service_monitor_scrapes_server_and_worker_metrics(production: Rendered) -> None:
    monitor = production.one("ServiceMonitor", FULLNAME)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        svc for svc in production.all("Service") if selector.items() <= svc["metadata"]["labels"].items()
    ]
    assert {svc["metadata"]["name"] for svc in scraped} == {FULLNAME, f"{FULLNAME}-worker-metrics"}
    for svc in scraped:
        assert {"name": "metrics", "port": DEFAULT_METRICS_PORT} in [
            {"name": p["name"], "port": p["port"]} for p in svc["spec"]["ports"]
        ]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def rule_ports(rules: list[dict[str, Any]]) -> set[int | str]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


def test_network_policies_allow_each_workload_only_what_it_uses(production: Rendered) -> None:
    """One policy per workload: the server takes API calls and scrapes, the stream worker only scrapes
    and alone reaches the brokers, the retraining Job and the helm test pod take nothing in."""
    policies = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: p
        for p in production.all("NetworkPolicy")
    }
    assert set(policies) == {"server", "worker", "retrain", "test"}
    pods = dict(production.pod_specs())
    pod_labels = {
        "server": production.one("Deployment", f"{FULLNAME}-server")["spec"]["template"]["metadata"][
            "labels"
        ],
        "worker": production.one("Deployment", f"{FULLNAME}-worker")["spec"]["template"]["metadata"][
            "labels"
        ],
        "retrain": production.one("CronJob", f"{FULLNAME}-retrain")["spec"]["jobTemplate"]["spec"][
            "template"
        ]["metadata"]["labels"],
        "test": production.one("Pod", f"{FULLNAME}-test-grpc-health")["metadata"]["labels"],
    }
    assert len(pods) == len(pod_labels)
    for component, labels in pod_labels.items():  # each pod is selected by its own policy only
        selecting = [
            c
            for c, p in policies.items()
            if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert selecting == [component]
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress = {c: rule_ports(p["spec"]["ingress"]) for c, p in policies.items()}
    egress = {c: rule_ports(p["spec"]["egress"]) for c, p in policies.items()}
    assert ingress == {"server": {"grpc", "metrics"}, "worker": {"metrics"}, "retrain": set(), "test": set()}
    assert egress == {"server": {53}, "worker": {53, 9093}, "retrain": {53}, "test": {53, "grpc"}}
    # The helm test pod may call the server, and only the server.
    grpc_in = next(r for r in policies["server"]["spec"]["ingress"] if r["ports"][0]["port"] == "grpc")
    clients = [p["podSelector"]["matchLabels"] for p in grpc_in["from"] if "podSelector" in p]
    assert any(c.items() <= pod_labels["test"].items() for c in clients)
    grpc_out = next(
        r for r in policies["test"]["spec"]["egress"] if r.get("ports", [{}])[0].get("port") == "grpc"
    )
    targets = [p["podSelector"]["matchLabels"] for p in grpc_out["to"]]
    assert [c for c in pod_labels if any(t.items() <= pod_labels[c].items() for t in targets)] == ["server"]


def test_notes_tell_how_to_call_the_service(default: Rendered) -> None:
    assert f"{FULLNAME}.{NAMESPACE}.svc:{DEFAULT_GRPC_PORT}" in default.notes
    assert f"grpcurl -plaintext localhost:{DEFAULT_GRPC_PORT} describe {GRPC_SERVICE_NAME}" in default.notes
    assert f"curl -s localhost:{DEFAULT_METRICS_PORT}/metrics" in default.notes
    assert f"helm test {RELEASE}" in default.notes


# Helm allows release names up to 53 characters; without "newstagger" in it the full name is cut at 63.
LONG_RELEASE = "eu-west-1-production-recommendations-tagging-service"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def label_keys(node: Any) -> Iterator[str]:
    """Every key of a labels or matchLabels map anywhere in an object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("labels", "matchLabels") and isinstance(value, dict):
                yield from value
            yield from label_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from label_keys(item)


@pytest.mark.parametrize("release_name", [RELEASE, LONG_RELEASE])
def test_names_and_label_keys_fit_kubernetes_limits(
    chart: helm.Chart, helm_config: helm.Config, release_name: str
) -> None:
    """The API server refuses a name or a label key's name part above 63 characters; the schemas do not."""
    rendered = dry_run_install(helm_config, chart, PRODUCTION_VALUES, release_name)
    for obj in rendered.objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert DNS_LABEL.match(obj["metadata"]["name"]), where
        for key in label_keys(obj):
            assert LABEL_NAME.match(key.rsplit("/", 1)[-1]), f"{where}: label key {key}"


@pytest.mark.parametrize("release_name", [RELEASE, LONG_RELEASE])
def test_notes_train_now_command_runs_as_printed(
    chart: helm.Chart, helm_config: helm.Config, release_name: str
) -> None:
    values = {"retrain": {"enabled": True, "dataVolume": {"emptyDir": {}}}}
    rendered = dry_run_install(helm_config, chart, values, release_name)
    lines = [line for line in rendered.notes.splitlines() if "kubectl" in line and "create job" in line]
    assert len(lines) == 1
    words = shlex.split(lines[0])
    assert words[:5] == ["kubectl", "-n", NAMESPACE, "create", "job"]
    source, job = words[5:]
    rendered.one("CronJob", source.removeprefix("--from=cronjob/"))
    assert DNS_LABEL.match(job), job  # a Job's name is also its pods' job-name label: 63 characters at most
    assert rendered.notes.count(job) == 1


def test_retrain_extra_args_reach_the_parser(chart: helm.Chart, helm_config: helm.Config) -> None:
    values = {
        "retrain": {
            "enabled": True,
            "dataVolume": {"emptyDir": {}},
            "extraArgs": ["--gate-tolerance", "0.01", "--gate-metric=micro_f1", "--quiet"],
        }
    }
    rendered = dry_run_install(helm_config, chart, values)
    cron = rendered.one("CronJob", f"{FULLNAME}-retrain")
    train = container(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"], "train")
    args = build_parser().parse_args(train["args"])
    assert (args.promote_if_better, args.gate_tolerance, args.gate_metric, args.quiet) == (
        True, 0.01, "micro_f1", True,
    )  # fmt: skip
    # The default retrain resources bound the fold processes (one per CPU of the limit) and cover them.
    assert train["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}


@pytest.mark.parametrize(
    "values",
    [
        {},
        PRODUCTION_VALUES,
        {"server": {"enabled": False}},
        {"server": {"enabled": False}, "worker": {"enabled": False}, "retrain": PRODUCTION_VALUES["retrain"]},
    ],
    ids=["default", "production", "worker only", "retrain only"],
)
def test_notes_name_only_objects_the_release_has(
    chart: helm.Chart, helm_config: helm.Config, values: dict[str, Any]
) -> None:
    rendered = dry_run_install(helm_config, chart, values)
    kinds = {"deploy": "Deployment", "svc": "Service", "cronjob": "CronJob"}
    named = re.findall(r"\b(deploy|svc|cronjob)/([a-z0-9-]+)", rendered.notes)
    for short, name in named:
        rendered.one(kinds[short], name)


# ------------------------------------------------------------------------------------------- helm test hook


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    from grpc_health.v1 import health_pb2_grpc

    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None).wait(timeout=5)


def test_helm_test_hook_checks_grpc_health(
    default: Rendered, health_server: tuple[int, health.HealthServicer]
) -> None:
    """Run the hook Pod's own command against a real grpc.health.v1 server on localhost."""
    pod = default.one("Pod", f"{FULLNAME}-test-grpc-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    python, flag, script, target, timeout, *services = pod["spec"]["containers"][0]["command"]
    assert (python, flag) == ("python", "-c")
    assert target == f"{FULLNAME}.{NAMESPACE}.svc:{DEFAULT_GRPC_PORT}"
    assert services == ["", GRPC_SERVICE_NAME]

    port, servicer = health_server
    serving = health_pb2.HealthCheckResponse.SERVING
    servicer.set("", serving)
    servicer.set(GRPC_SERVICE_NAME, serving)
    command = [sys.executable, "-c", script, f"127.0.0.1:{port}", timeout, *services]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    assert f"{GRPC_SERVICE_NAME}: SERVING" in ok.stdout

    servicer.set(GRPC_SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    not_ready = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert not_ready.returncode == 1
    assert f"{GRPC_SERVICE_NAME}: NOT_SERVING" in not_ready.stdout


# ------------------------------------------------------------------------------------------- image and docs


def dockerfile_stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined, comments dropped), split into stages."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    lines = [
        line.strip() for line in logical.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_matches_the_chart_and_the_code() -> None:
    builder, runtime = dockerfile_stages()
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert runtime[0] == "FROM ${PYTHON_IMAGE} AS runtime"
    assert any("pip install ." in line for line in builder)  # the same install the tests use
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    # No build tools, package manager installs or source code in the final stage.
    assert not any(re.search(r"apt-get|apk |gcc|build-essential|pip install", line) for line in runtime)
    assert not any(line.startswith("COPY ") and "--from=builder" not in line for line in runtime)
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in runtime
    assert f"EXPOSE {DEFAULT_GRPC_PORT} {DEFAULT_METRICS_PORT}" in runtime
    assert 'ENTRYPOINT ["newstagger"]' in runtime
    assert 'CMD ["serve"]' in runtime
    env_names = set(re.findall(r"\b(NEWSTAGGER_[A-Z_]+)=", " ".join(runtime)))
    assert env_names and env_names <= SETTING_ENV_VARS
    assert re.search(r'^newstagger = "newstagger:main"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[i for i, line in enumerate(ignore) if not line.startswith("#")][0]] == "*"
    assert {"!pyproject.toml", "!README.md", "!newstagger/", "!service/", "!training/"} <= set(ignore)
    assert {f"COPY {p} ./{p}" for p in ("newstagger", "service", "training")} <= set(builder)


def values_key_lines() -> Iterator[tuple[str, bool]]:
    """(dotted path, has a comment on itself or an ancestor) for every key line of values.yaml."""
    stack: list[tuple[int, str, bool]] = []
    previous_comment = False
    for line in (CHART_DIR / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            previous_comment = True
            continue
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if match is None:
            previous_comment = previous_comment and not stripped
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = previous_comment or any(doc for _, _, doc in stack)
        path = ".".join([k for _, k, _ in stack] + [key])
        stack.append((indent, key, previous_comment))
        previous_comment = False
        yield path, documented


def schema_leaves(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and sub.get("additionalProperties") is False and "properties" in sub:
            yield from schema_leaves(sub, path + ".")
        else:
            yield path


def test_every_option_is_commented_typed_and_in_the_readme(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    keys = dict(values_key_lines())
    leaves = set(schema_leaves(schema)) - {"global"}
    readme = (CHART_DIR / "README.md").read_text()
    documented_in_readme = set(re.findall(r"^\| `([A-Za-z0-9.]+)` \|", readme, re.MULTILINE))
    for leaf in sorted(leaves):
        assert leaf in keys, f"{leaf} is in values.schema.json but not in values.yaml"
        assert keys[leaf], f"{leaf} has no comment in values.yaml"
        parts = leaf.split(".")
        assert any(".".join(parts[:n]) in documented_in_readme for n in range(len(parts), 0, -1)), (
            f"{leaf} is not in the README values table"
        )
    assert set(schema["required"]) >= set(chart.values) - {"global"}
