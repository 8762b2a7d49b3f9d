"""The chart's opt-in PrometheusRule: off by default; on, it renders the alerts with the values'
thresholds and durations, selects exactly the jobs the ServiceMonitor's targets get, validates
against the CRD's schema, lints, and names only metrics a real ``newstagger serve`` exposes."""

from __future__ import annotations

import copy
import re
import urllib.request
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_for
from tests.integration.test_grpc_process import serve
from tests.integration.test_helm_support import (
    CHART_DIR,
    FULLNAME,
    KUBE_VERSION,
    NAMESPACE,
    Render,
    Rendered,
    validate_object,
)

pytestmark = pytest.mark.timeout(120)

ON: dict[str, Any] = {"metrics": {"prometheusRule": {"enabled": True}}}
WORKER_ALERTS = {
    "NewstaggerKafkaConsumerLagHigh",
    "NewstaggerKafkaConsumerLagGrowing",
    "NewstaggerKafkaConsumerStalled",
    "NewstaggerKafkaNoPartitionsAssigned",
    "NewstaggerKafkaDeadLetters",
}
SERVER_ALERTS = {"NewstaggerGrpcErrors", "NewstaggerOverloaded"}
SHARED_ALERTS = {"NewstaggerModelNotLoaded", "NewstaggerModelReloadRefused", "NewstaggerTargetDown"}
# every value the alerts take, none at its default
TUNED: dict[str, Any] = {
    "http": {"enabled": True},
    "kafka": {"groupId": "tagging-eu"},
    "metrics": {
        "prometheusRule": {
            "enabled": True,
            "namespace": "monitoring",
            "labels": {"release": "kube-prometheus-stack"},
            "alertLabels": {"team": "news"},
            "runbookUrl": "https://wiki.example.com/newstagger",
            "consumerLag": {"threshold": 2500000, "for": "20m"},
            "consumerLagGrowing": {"window": "7m", "for": "45m", "minRecords": 321},
            "consumerStalled": {"for": "11m"},
            "noPartitions": {"for": "12m"},
            "deadLetters": {"for": "3m"},
            "errorRatio": {"threshold": 0.125, "for": "13m"},
            "overload": {"threshold": 2.5, "for": "14m"},
            "modelNotLoaded": {"for": "16m"},
            "modelReloadRefused": {"window": "2h"},
            "modelStale": {"after": "3d12h"},
            "targetDown": {"for": "90s"},
        }
    },
}


def rules(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """The one PrometheusRule's alerting rules by name."""
    [rule] = rendered.all("PrometheusRule")
    found: dict[str, dict[str, Any]] = {}
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            assert item["alert"] not in found, f"{item['alert']} twice"
            found[item["alert"]] = item
    return found


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def test_no_prometheus_rule_unless_enabled(default: Rendered, render: Render) -> None:
    assert default.all("PrometheusRule") == []
    # the ServiceMonitor alone brings no alerts either
    assert render({"metrics": {"serviceMonitor": {"enabled": True}}}).all("PrometheusRule") == []
    # nothing to alert on without a server or a worker
    assert (
        render(merged(ON, {"server": {"enabled": False}, "worker": {"enabled": False}}))
        .kinds()
        .isdisjoint({"PrometheusRule"})
    )


def test_enabled_rule_has_every_alert_and_validates(render: Render) -> None:
    rendered = render(ON)
    [rule] = rendered.all("PrometheusRule")
    validate_object(rule)  # the CRD's schema (tests/integration/crd_schemas)
    assert rule["metadata"]["name"] == FULLNAME and rule["metadata"]["namespace"] == NAMESPACE
    found = rules(rendered)
    # HTTP API off: no HTTP alert; modelStale.after empty: no staleness alert
    assert set(found) == WORKER_ALERTS | SERVER_ALERTS | SHARED_ALERTS
    for name, item in found.items():
        assert item["labels"]["severity"] in {"warning", "critical"}, name
        annotations = item["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert re.search(r"\bnewstagger_[a-z_]+|\bup\b", annotations["description"]), (
            f"{name} names no metric"
        )
        assert annotations["runbook_url"].endswith("/helm/newstagger/README.md#alerts"), name
    readme = (CHART_DIR / "README.md").read_text()
    assert "## Alerts" in readme
    for name in found:
        assert f"`{name}`" in readme, f"{name} is not in the chart README's alert table"


def test_values_set_thresholds_durations_labels_and_which_alerts(render: Render) -> None:
    rendered = render(TUNED)
    [rule] = rendered.all("PrometheusRule")
    validate_object(rule)
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    found = rules(rendered)
    assert set(found) == WORKER_ALERTS | SERVER_ALERTS | SHARED_ALERTS | {
        "NewstaggerHttpErrors",
        "NewstaggerModelStale",
    }
    assert all(item["labels"]["team"] == "news" for item in found.values())
    assert all(
        item["annotations"]["runbook_url"] == "https://wiki.example.com/newstagger#alerts"
        for item in found.values()
    )

    def expr(name: str) -> str:
        return str(found[name]["expr"])

    assert expr("NewstaggerKafkaConsumerLagHigh").endswith("> 2500000")  # an integer, not 2.5e+06
    assert found["NewstaggerKafkaConsumerLagHigh"]["for"] == "20m"
    assert "[7m:]" in expr("NewstaggerKafkaConsumerLagGrowing")
    assert expr("NewstaggerKafkaConsumerLagGrowing").endswith("> 321")
    assert found["NewstaggerKafkaConsumerLagGrowing"]["for"] == "45m"
    assert found["NewstaggerKafkaConsumerStalled"]["for"] == "11m"
    assert found["NewstaggerKafkaNoPartitionsAssigned"]["for"] == "12m"
    assert found["NewstaggerKafkaDeadLetters"]["for"] == "3m"
    for name in ("NewstaggerGrpcErrors", "NewstaggerHttpErrors"):
        assert expr(name).endswith("> 0.125") and found[name]["for"] == "13m"
    assert expr("NewstaggerOverloaded").endswith("> 2.5") and found["NewstaggerOverloaded"]["for"] == "14m"
    assert found["NewstaggerModelNotLoaded"]["for"] == "16m"
    assert "[2h]" in expr("NewstaggerModelReloadRefused")
    assert expr("NewstaggerModelStale").endswith(f"> {(3 * 24 + 12) * 3600}")
    assert found["NewstaggerTargetDown"]["for"] == "90s"
    assert "tagging-eu" in found["NewstaggerKafkaConsumerLagHigh"]["annotations"]["summary"]

    # each component's alerts go with it
    no_worker = rules(render(merged(ON, {"worker": {"enabled": False}})))
    assert set(no_worker) == SERVER_ALERTS | SHARED_ALERTS
    no_server = rules(render(merged(ON, {"server": {"enabled": False}})))
    assert set(no_server) == WORKER_ALERTS | SHARED_ALERTS


def selected_jobs(expr: str) -> set[str]:
    """The job names one expression selects (job="a" or job=~"a|b"); every selector names its namespace."""
    jobs: set[str] = set()
    for selector in re.findall(r"\{([^}]*)\}", expr):
        assert f'namespace="{NAMESPACE}"' in selector, expr
        match = re.search(r'job(=~?)"([^"]+)"', selector)
        assert match is not None, f"{selector} selects no job"
        jobs |= set(match.group(2).split("|")) if match.group(1) == "=~" else {match.group(2)}
    return jobs


def test_alerts_select_the_jobs_of_the_service_monitors_targets(render: Render) -> None:
    """The Prometheus Operator names a ServiceMonitor target's job after its Service: the alerts
    must select exactly the Services the ServiceMonitor selects, with a metrics port."""
    rendered = render(merged(ON, {"metrics": {"serviceMonitor": {"enabled": True}}}))
    [monitor] = rendered.all("ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["endpoints"][0]["port"]
    scraped = {
        svc["metadata"]["name"]
        for svc in rendered.all("Service")
        if wanted.items() <= svc["metadata"]["labels"].items()
        and port in {p["name"] for p in svc["spec"]["ports"]}
    }
    assert scraped == {FULLNAME, f"{FULLNAME}-worker-metrics"}
    found = rules(rendered)
    every = set().union(*(selected_jobs(str(item["expr"])) for item in found.values()))
    assert every == scraped
    assert selected_jobs(str(found["NewstaggerTargetDown"]["expr"])) == scraped
    for name in WORKER_ALERTS:
        assert selected_jobs(str(found[name]["expr"])) == {f"{FULLNAME}-worker-metrics"}, name
    for name in SERVER_ALERTS:
        assert selected_jobs(str(found[name]["expr"])) == {FULLNAME}, name


def test_chart_with_alerts_passes_strict_lint() -> None:
    report = helm.lint(
        CHART_DIR, copy.deepcopy(TUNED), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_schema_refuses_bad_alert_values(chart: helm.Chart) -> None:
    for bad in (
        {"consumerLag": {"for": "15 minutes"}},
        {"errorRatio": {"threshold": 5}},
        {"modelStale": {"after": "weekly"}},
        {"deadLetters": {"for": "10m", "typo": 1}},
    ):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema({"metrics": {"prometheusRule": bad}})
    chart.validate_schema({"metrics": {"prometheusRule": {"modelStale": {"after": "1w"}}}})


def test_crd_schema_refuses_broken_rules(render: Render) -> None:
    """The schema the rule is validated against can fail: a bad duration, a rule both alert and
    record, a field the CRD does not have, no expression."""
    [rule] = render(ON).all("PrometheusRule")
    for change in ({"for": "15 minutes"}, {"record": "x"}, {"severity": "critical"}, {"expr": None}):
        broken = copy.deepcopy(rule)
        target = broken["spec"]["groups"][0]["rules"][0]
        for key, value in change.items():
            if value is None:
                del target[key]
            else:
                target[key] = value
        with pytest.raises(jsonschema.ValidationError):
            validate_object(broken)


def exposed_names(text: str) -> tuple[set[str], set[str]]:
    """(families, series) a /metrics page carries, parsed with ``prometheus_client.parser``. A
    labelled family with no child yet has no sample, so a family's series come from its type too:
    a counter's is its ``_total``, a histogram's ``_bucket``, ``_sum`` and ``_count``."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count", ""),
    }
    families: set[str] = set()
    series: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        series |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        series |= {sample.name for sample in family.samples}
    return families, series


def test_every_alert_expression_is_valid_promql(render: Render) -> None:
    """Each expression parses with a PromQL parser (promql-parser, a port of Prometheus' own), so a
    typo in the template fails here, not when the Prometheus Operator loads the rule."""
    for item in rules(render(TUNED)).values():
        promql_parser.parse(str(item["expr"]))  # raises on a syntax error
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        promql_parser.parse("sum(rate(newstagger_x_total[5m]) >")


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bnewstagger_[a-z0-9_]+", text))


def test_every_metric_the_alerts_use_is_exposed_by_the_service(render: Render, tmp_path: Path) -> None:
    """Alerts stay in step with service/metrics.py: rename a metric and this fails. The names come
    from a real `newstagger serve` process's /metrics (no model: every family is there already)."""
    found = rules(render(TUNED)).values()  # every alert rendered
    in_exprs = set().union(*(metric_names(str(item["expr"])) for item in found))
    in_text = set().union(*(metric_names(" ".join(item["annotations"].values())) for item in found))
    assert len(in_exprs) >= 10, sorted(in_exprs)
    empty_registry = tmp_path / "registry"
    empty_registry.mkdir()
    with serve(empty_registry, tmp_path) as (proc, _, metrics_port):

        def scrape() -> str | None:
            assert proc.poll() is None, "serve exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:  # noqa: S310
                    return str(reply.read().decode())
            except OSError:
                return None

        text = wait_for(scrape, 60, interval=0.2, what="/metrics of newstagger serve")
    families, series = exposed_names(text)
    assert "newstagger_kafka_consumer_lag_records" in series  # the worker's families are there too
    # an expression must name a series; a description may name a family (a histogram) too
    assert sorted(in_exprs - series) == []
    assert sorted(in_text - series - families) == []


def test_notes_name_the_rule_and_warn_when_nothing_scrapes_the_jobs(render: Render) -> None:
    assert "PrometheusRule" not in render({}).notes
    scraped = render(merged(ON, {"metrics": {"serviceMonitor": {"enabled": True}}})).notes
    assert f"Alerts in PrometheusRule {NAMESPACE}/{FULLNAME}" in scraped
    assert "WARNING" not in scraped
    unscraped = render(ON).notes
    assert f'the jobs "{FULLNAME}" and "{FULLNAME}-worker-metrics"; scrape the pods' in unscraped
