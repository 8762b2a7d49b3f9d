"""Fixtures of the Helm chart tests (``test_helm*.py``): one chart and one offline Helm
configuration for the session, and the default and production releases rendered once."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import helm_python as helm
import pytest

from tests.integration.test_helm_support import (
    CHART_DIR,
    NAMESPACE,
    NOWHERE_KUBECONFIG,
    PROFILES,
    Render,
    Rendered,
    dry_run_install,
)


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    helm.disable_logging()  # `fail` is logged by the SDK too; the exception carries the message
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def helm_config() -> Iterator[helm.Config]:
    with helm.Config(
        kubeconfig_content=NOWHERE_KUBECONFIG, namespace=NAMESPACE, storage_driver="memory"
    ) as cfg:
        yield cfg


@pytest.fixture(scope="session")
def render(chart: helm.Chart, helm_config: helm.Config) -> Render:
    return functools.partial(dry_run_install, helm_config, chart)


@pytest.fixture(scope="session")
def releases(render: Render) -> dict[str, Rendered]:
    return {profile: render(values) for profile, values in PROFILES.items()}


@pytest.fixture(scope="session")
def default(releases: dict[str, Rendered]) -> Rendered:
    return releases["default"]


@pytest.fixture(scope="session")
def production(releases: dict[str, Rendered]) -> Rendered:
    return releases["production"]
