"""Ports: the server's own listeners, the brokers', and the NetworkPolicies that open them."""

from __future__ import annotations

from typing import Any

import pytest

from service.settings import DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT
from tests.integration.test_helm_support import FULLNAME, Render, Rendered, assert_install_fails

pytestmark = pytest.mark.timeout(60)


BAD_PORTS: dict[str, tuple[dict[str, Any], str]] = {
    # The server binds each port: a clash is a crash loop (and a Service the API server refuses).
    "metrics port = gRPC port": (
        {"metrics": {"port": DEFAULT_GRPC_PORT}},
        "grpc.port, metrics.port must differ (got [50051 50051])",
    ),
    "HTTP port = metrics port": (
        {"http": {"enabled": True, "port": DEFAULT_METRICS_PORT}},
        "grpc.port, metrics.port and http.port must differ (got [50051 9102 9102])",
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
}


@pytest.mark.parametrize("case", BAD_PORTS)
def test_bad_ports_fail_install_with_a_clear_message(render: Render, case: str) -> None:
    assert_install_fails(render, *BAD_PORTS[case])


@pytest.mark.parametrize(
    "egress",
    [
        {"enabled": True, "kafkaPorts": [9093]},
        {"enabled": True, "extraRules": [{"ports": [{"port": 9093, "protocol": "TCP"}]}]},
        {"enabled": True, "extraRules": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},  # every port
    ],
    ids=["kafkaPorts", "extra rule on the port", "extra rule on every port"],
)
def test_broker_ports_open_in_the_egress_policy_are_accepted(render: Render, egress: dict[str, Any]) -> None:
    values = {
        "kafka": {"bootstrapServers": "kafka:9093"},
        "networkPolicy": {"enabled": True, "egress": egress},
    }
    render(values).one("NetworkPolicy", f"{FULLNAME}-worker")


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
