"""The chart lints strictly, renders objects Kubernetes and the CRDs accept, within Kubernetes' name
limits, and every value is typed, commented and in the README."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

from tests.integration.test_helm_support import (
    CHART_DIR,
    DNS_LABEL,
    FULLNAME,
    KUBE_VERSION,
    LONG_RELEASE,
    NAMESPACE,
    PRODUCTION_VALUES,
    PROFILES,
    RELEASE,
    Render,
    Rendered,
    validate_object,
)

pytestmark = pytest.mark.timeout(60)


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
        "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "CronJob",
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
def test_names_and_label_keys_fit_kubernetes_limits(render: Render, release_name: str) -> None:
    """The API server refuses a name or a label key's name part above 63 characters; the schemas do not."""
    rendered = render(PRODUCTION_VALUES, release_name)
    for obj in rendered.objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert DNS_LABEL.match(obj["metadata"]["name"]), where
        for key in label_keys(obj):
            assert LABEL_NAME.match(key.rsplit("/", 1)[-1]), f"{where}: label key {key}"


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
