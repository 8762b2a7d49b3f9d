"""Shared by the Helm chart tests (``test_helm*.py``; their fixtures are in ``conftest.py``).

The chart is linted and rendered with Helm's own Go SDK (``helm-python-sdk``: strict lint, then a
client-side dry-run install, as ``helm install --dry-run=client`` would), every rendered object is
validated with ``kubernetes-validate --strict`` against the newest Kubernetes it ships, and the
custom resources (KEDA ScaledObject/TriggerAuthentication, Prometheus Operator ServiceMonitor and
PrometheusRule) against the JSON schemas in ``crd_schemas/``, written from those projects' CRDs.
Port numbers, health service names and setting names are imported from ``service.settings``, so the
chart cannot drift from the code. No cluster, no container engine and no network are involved.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.settings import ENV_PREFIX, Settings, env_name

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
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "interval": "15s",
        },
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
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
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}
SETTING_ENV_VARS = {env_name(name) for name in Settings.model_fields}

# Helm allows release names up to 53 characters; without "newstagger" in it the full name is cut at 63.
LONG_RELEASE = "eu-west-1-production-recommendations-tagging-service"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Render(Protocol):
    """A dry-run install of the chart with these values (the ``render`` fixture)."""

    def __call__(self, values: dict[str, Any], release_name: str = RELEASE) -> Rendered: ...


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


def assert_install_fails(render: Render, values: dict[str, Any], message: str) -> None:
    """The install fails, and its error carries this message (a ``fail`` in the chart, or the schema's)."""
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)
