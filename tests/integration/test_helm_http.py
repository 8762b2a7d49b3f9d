"""The chart's HTTP API value: off by default; on, the port is in the pod, the Service, the
NetworkPolicy and the settings, and `http.probes` probes the V2 health endpoints."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.integration.test_helm_support import (
    FULLNAME,
    NAMESPACE,
    PRODUCTION_VALUES,
    Render,
    Rendered,
    container,
    deployment_pod,
    settings_for,
    validate_object,
)


def with_http(values: dict[str, Any], **http: Any) -> dict[str, Any]:
    merged = copy.deepcopy(values)
    merged["http"] = {"enabled": True, **http}
    return merged


def test_http_api_is_off_by_default(render: Render) -> None:
    rendered = render({})
    pod = deployment_pod(rendered, "server")
    server = container(pod, "server")
    assert "http" not in {p["name"] for p in server["ports"]}
    assert settings_for(rendered, pod, server).http_port == 0
    assert "HTTP API" not in rendered.notes


def test_http_api_port_is_in_the_pod_service_policy_and_probes(render: Render) -> None:
    values = with_http({"networkPolicy": {"enabled": True}}, port=8081, probes=True)
    rendered = render(values)
    for obj in rendered.objects:
        validate_object(obj)
    pod = deployment_pod(rendered, "server")
    server = container(pod, "server")
    assert {p["name"]: p["containerPort"] for p in server["ports"]}["http"] == 8081
    settings = settings_for(rendered, pod, server)
    assert (settings.host, settings.http_port) == ("0.0.0.0", 8081)
    service = rendered.one("Service", FULLNAME)
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}["http"] == (
        8081,
        "http",
    )
    assert server["readinessProbe"]["httpGet"] == {
        "path": "/v2/health/ready",
        "port": "http",
        "scheme": "HTTP",
    }
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http", "scheme": "HTTP"}
    assert server["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http", "scheme": "HTTP"}
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:8081" in rendered.notes
    policy = rendered.one("NetworkPolicy", f"{FULLNAME}-server")
    assert any({"port": "http", "protocol": "TCP"} in rule["ports"] for rule in policy["spec"]["ingress"])


def test_http_probes_use_https_with_tls(render: Render) -> None:
    values = with_http(PRODUCTION_VALUES, probes=True)
    values["grpc"]["tls"]["mutual"] = False
    server = container(deployment_pod(render(values), "server"), "server")
    assert server["startupProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_http_probes_are_refused_with_mutual_tls(render: Render) -> None:
    with pytest.raises(Exception, match="http.probes cannot be used with grpc.tls.mutual"):
        render(with_http(PRODUCTION_VALUES, probes=True))
    rendered: Rendered = render(with_http(PRODUCTION_VALUES))
    server = container(deployment_pod(rendered, "server"), "server")
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
