"""Ports: the server's own listeners, the brokers', and the NetworkPolicies that open them."""

from __future__ import annotations

from typing import Any

import pytest

from service.settings import DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT
from tests.integration.test_helm_support import (
    FULLNAME,
    Render,
    Rendered,
    assert_install_fails,
    container,
    deployment_pod,
    settings_for,
    validate_object,
)

pytestmark = pytest.mark.timeout(60)


def egress(
    rules: list[dict[str, Any]], servers: str = "kafka:9092", kafka_ports: list[int] | None = None
) -> dict[str, Any]:
    """Values with the egress policy on: these extra rules, these bootstrap servers."""
    return {
        "kafka": {"bootstrapServers": servers},
        "networkPolicy": {
            "enabled": True,
            "egress": {"enabled": True, "extraRules": rules, "kafkaPorts": kafka_ports or [9092]},
        },
    }


def unprivileged_from(port: str) -> dict[str, Any]:
    """A pod security context letting unprivileged processes bind from this port up."""
    return {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": port}]}


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
        "out to TCP ports [9092] only",
    ),
    # Out of 1-65535: the schema refuses the chart's own port values...
    "gRPC port above 65535": ({"grpc": {"port": 65536}}, "at '/grpc/port': maximum: got 65,536, want 65,535"),
    "HTTP port 0": ({"http": {"enabled": True, "port": 0}}, "at '/http/port': minimum: got 0, want 1"),
    "metrics port 0": ({"metrics": {"port": 0}}, "at '/metrics/port': minimum: got 0, want 1"),
    "broker port in kafkaPorts above 65535": (
        {"networkPolicy": {"egress": {"kafkaPorts": [70000]}}},
        "at '/networkPolicy/egress/kafkaPorts/0': maximum: got 70,000, want 65,535",
    ),
    # ...and the chart refuses those inside strings and free-form rules.
    "bootstrap server port above 65535": (
        {"kafka": {"bootstrapServers": "kafka-0:9092,kafka-1:65536"}},
        'kafka.bootstrapServers names kafka-1:65536, whose port "65536" is not a port number (1-65535)',
    ),
    "bootstrap server port 0": (
        {"kafka": {"bootstrapServers": "kafka:0"}},
        'kafka.bootstrapServers names kafka:0, whose port "0" is not a port number (1-65535)',
    ),
    "bootstrap server port not a number": (
        {"kafka": {"bootstrapServers": "kafka:plaintext"}},
        'kafka.bootstrapServers names kafka:plaintext, whose port "plaintext" is not a port number',
    ),
    "bootstrap server with an empty port": (  # the service refuses it too (service.settings)
        {"kafka": {"bootstrapServers": "kafka-0:9092,kafka-1:"}},
        'kafka.bootstrapServers names kafka-1:, whose port "" is not a port number (1-65535)',
    ),
    "egress rule port above 65535": (
        egress([{"ports": [{"port": 70000}]}]),
        "networkPolicy.egress.extraRules[0].ports[0].port (70000) is out of the port range 1-65535",
    ),
    "egress rule endPort above 65535": (
        egress([{"to": [], "ports": [{"port": 53}]}, {"ports": [{"port": 9000, "endPort": 65536}]}]),
        "networkPolicy.egress.extraRules[1].ports[0].endPort (65536) is out of the port range 1-65535",
    ),
    "egress rule endPort below its port": (
        egress([{"ports": [{"port": 9095, "endPort": 9093}]}]),
        "networkPolicy.egress.extraRules[0].ports[0].endPort (9093) is below its port (9095)",
    ),
    "egress rule endPort after a named port": (
        egress([{"ports": [{"port": "kafka", "endPort": 9099}]}]),
        "networkPolicy.egress.extraRules[0].ports[0].endPort needs a numbered",
    ),
    # A port range opens the ports inside it only, and a UDP rule no Kafka port.
    "broker port past an egress port range": (
        egress([{"ports": [{"port": 9093, "endPort": 9095, "protocol": "TCP"}]}], "kafka:9094,kafka:9096"),
        "kafka.bootstrapServers names kafka:9096, but networkPolicy.egress lets the stream worker out to TCP "
        "ports [9092 9093-9095] only",
    ),
    "broker port open for UDP only": (
        egress([{"ports": [{"port": 9093, "protocol": "UDP"}]}], "kafka:9093"),
        "out to TCP ports [9092] only: it could not reach the broker. Add 9093",
    ),
    # kafka-python reads an IPv6 literal without brackets as a host on the default port 9092.
    "unbracketed IPv6 broker on the default port": (
        egress([], "[fd00::1]:9093,fd00::2", kafka_ports=[9093]),
        "kafka.bootstrapServers names fd00::2, but networkPolicy.egress lets the stream worker out to TCP "
        "ports [9093] only: it could not reach the broker. Add 9092",
    ),
    # The pods run as non-root with every capability dropped: binding below 1024 fails at start.
    "gRPC port below 1024": ({"grpc": {"port": 443}}, "grpc.port (443) is below 1024"),
    "HTTP port below 1024": ({"http": {"enabled": True, "port": 80}}, "http.port (80) is below 1024"),
    "worker metrics port below 1024": (
        {"server": {"enabled": False}, "metrics": {"port": 1023}},
        "metrics.port (1023) is below 1024, the first port a non-root process may bind",
    ),
    "server port below a raised unprivileged start": (
        {"grpc": {"port": 1500}, "podSecurityContext": unprivileged_from("2000")},
        "grpc.port (1500) is below 2000",
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
        {"enabled": True, "extraRules": [{"ports": [{"port": 9090, "endPort": 9093, "protocol": "TCP"}]}]},
        {"enabled": True, "extraRules": [{"ports": [{"port": 9093, "endPort": 9093}]}]},
        {"enabled": True, "extraRules": [{"ports": [{"protocol": "TCP"}]}]},  # every TCP port
    ],
    ids=[
        "kafkaPorts",
        "extra rule on the port",
        "extra rule on every port",
        "extra rule on a range ending at the port",
        "extra rule on a one-port range",
        "extra rule on every TCP port",
    ],
)
def test_broker_ports_open_in_the_egress_policy_are_accepted(render: Render, egress: dict[str, Any]) -> None:
    values = {
        "kafka": {"bootstrapServers": "kafka:9093,[fd00::1]:9093"},
        "networkPolicy": {"enabled": True, "egress": egress},
    }
    rendered = render(values)
    worker_out = rendered.one("NetworkPolicy", f"{FULLNAME}-worker")["spec"]["egress"]
    assert all(rule in worker_out for rule in egress.get("extraRules", []))
    for obj in rendered.objects:
        validate_object(obj)


def test_listeners_below_1024_are_accepted_where_the_pods_may_bind_them(render: Render) -> None:
    """With net.ipv4.ip_unprivileged_port_start lowered (a safe sysctl), the server may listen below
    1024; the chart passes the ports to the pod, the Service and the settings, and Kubernetes accepts
    the result. The edges of the range are accepted too."""
    values = {
        "grpc": {"port": 443},
        "http": {"enabled": True, "port": 80},
        "metrics": {"port": 65535},
        "podSecurityContext": unprivileged_from("80"),
    }
    rendered = render(values)
    for obj in rendered.objects:
        validate_object(obj)
    pod = deployment_pod(rendered, "server")
    server = container(pod, "server")
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {
        "grpc": 443,
        "http": 80,
        "metrics": 65535,
    }
    settings = settings_for(rendered, pod, server)
    assert (settings.port, settings.http_port, settings.metrics_port) == (443, 80, 65535)
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"} in pod["securityContext"]["sysctls"]
    lowest = render({"grpc": {"port": 1024}, "metrics": {"port": 1025}})
    assert container(deployment_pod(lowest, "server"), "server")["ports"][0]["containerPort"] == 1024


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
