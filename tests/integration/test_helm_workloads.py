"""What the chart deploys runs the service as the code expects: commands, ports, probes, settings,
Secrets, hardening, grace periods, the retraining CronJob and the ServiceMonitor."""

from __future__ import annotations

import math

import pytest

from service.cli import build_parser
from service.settings import DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT, ENV_PREFIX, GRPC_SERVICE_NAME, Settings
from tests.integration.test_helm_support import (
    FULLNAME,
    IMAGE_UID,
    PRODUCTION_VALUES,
    PROFILES,
    SETTING_ENV_VARS,
    Render,
    Rendered,
    container,
    container_env,
    deployment_pod,
    mount_paths,
    settings_for,
)

pytestmark = pytest.mark.timeout(60)


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
    StrictLoader in test_helm_support refuses a key given twice)."""
    data = production.one("ConfigMap", FULLNAME)["data"]
    assert data["NEWSTAGGER_MAX_TEXT_BYTES"] == "500000"
    assert data["NEWSTAGGER_GRACE_SECONDS"] == "25.5"


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


def test_retrain_extra_args_reach_the_parser(render: Render) -> None:
    values = {
        "retrain": {
            "enabled": True,
            "dataVolume": {"emptyDir": {}},
            "extraArgs": ["--gate-tolerance", "0.01", "--gate-metric=micro_f1", "--quiet"],
        }
    }
    rendered = render(values)
    cron = rendered.one("CronJob", f"{FULLNAME}-retrain")
    train = container(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"], "train")
    args = build_parser().parse_args(train["args"])
    assert (args.promote_if_better, args.gate_tolerance, args.gate_metric, args.quiet) == (
        True, 0.01, "micro_f1", True,
    )  # fmt: skip
    # The default retrain resources bound the fold processes (one per CPU of the limit) and cover them.
    assert train["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
