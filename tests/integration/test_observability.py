"""The HTTP side door of a real serving runtime: /readyz follows the model, /healthz stays up unless
the micro-batcher died, /metrics speaks Prometheus text and OpenMetrics; logs are JSON lines with
context."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.core.errors import ModelNotReady
from service.core.types import Article
from service.logs import configure_logging
from service.model.registry import ModelRegistry
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from tests.helpers import free_port, scrape_series, wait_for
from tests.unit.test_registry import add_version


def _get(port: int, path: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310 - loopback
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture()
def empty_runtime(tmp_path: Path) -> Iterator[tuple[Runtime, int, ModelRegistry]]:
    registry = ModelRegistry(tmp_path / "registry")
    settings = Settings(
        model_dir=registry.root,
        reload_interval_seconds=0.1,
        metrics_port=free_port(),
        metrics_host="127.0.0.1",
    )
    runtime = build_runtime(settings)
    port = runtime.start_http()
    assert port is not None
    yield runtime, port, registry
    runtime.close(5)


def test_readyz_follows_the_model_and_healthz_stays_up(
    empty_runtime: tuple[Runtime, int, ModelRegistry], model_dir: Path
) -> None:
    _, port, registry = empty_runtime
    status, _, body = _get(port, "/readyz")
    assert (status, body.strip()) == (503, "model not loaded")
    assert _get(port, "/healthz")[0] == 200

    shutil.copytree(model_dir, registry.new_version_dir("v1"))
    registry.promote("v1")
    wait_for(lambda: _get(port, "/readyz")[0] == 200, 15, what="/readyz after the model appears")
    assert "v1" in _get(port, "/readyz")[2]
    assert _get(port, "/healthz")[0] == 200
    assert _get(port, "/nope")[0] == 404


class _Died(BaseException):
    """What no batch catches (as a MemoryError might): it ends the micro-batcher's thread."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_healthz_fails_once_the_micro_batcher_has_died(
    empty_runtime: tuple[Runtime, int, ModelRegistry], model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing tags again without a restart: liveness must fail (it stayed 200, so Kubernetes left
    the pod unready for good instead of restarting it), and readiness fails too."""
    runtime, port, registry = empty_runtime
    shutil.copytree(model_dir, registry.new_version_dir("v1"))
    registry.promote("v1")
    wait_for(lambda: _get(port, "/readyz")[0] == 200, 15, what="/readyz after the model appears")
    assert _get(port, "/healthz")[:3:2] == (200, "ok\n")

    def die(*args: object) -> None:
        raise _Died

    monkeypatch.setattr(runtime.tagger, "tag", die)
    future = runtime.batcher.submit(Article(id="a", text="Ministers agreed a trade deal."))
    with pytest.raises(ModelNotReady, match="the batcher has stopped"):  # it hung, never answered
        future.result(15)
    status, _, body = wait_for(lambda: (r := _get(port, "/healthz"))[0] == 503 and r, 15, what="/healthz 503")
    assert body.strip() == "micro-batcher died: restart needed"
    assert _get(port, "/readyz")[::2] == (503, "micro-batcher not running\n")


def test_metrics_in_prometheus_text_and_openmetrics(
    empty_runtime: tuple[Runtime, int, ModelRegistry], model_dir: Path
) -> None:
    runtime, port, registry = empty_runtime
    shutil.copytree(model_dir, registry.new_version_dir("v1"))
    registry.promote("v1")
    wait_for(lambda: runtime.tagger.model is not None, 15, what="model load")

    status, content_type, text = _get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = [s for s in families["newstagger_model_info"].samples if s.value == 1]
    assert [s.labels["version"] for s in info] == ["v1"]
    reloads = {
        s.labels["result"]: s.value
        for s in families["newstagger_model_reloads"].samples
        if s.name.endswith("_total")
    }
    assert reloads == {"loaded": 1.0}
    assert "process_cpu_seconds" in families  # default process collectors

    status, content_type, text = _get(port, "/metrics", "application/openmetrics-text; version=1.0.0")
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")


def test_model_info_has_one_series_the_served_model_after_hot_reloads(
    empty_runtime: tuple[Runtime, int, ModelRegistry], model_dir: Path
) -> None:
    """An info metric: only the served model has a series. Each version served before kept one at 0,
    so weeks of hot reloads grew the scrape and `sum(newstagger_model_info)` counted nothing useful."""
    _, port, registry = empty_runtime

    def info_is(version: str) -> bool:
        """The scrape shows one model_info series: ``version``'s, value 1 (polled: the reload is
        in another thread)."""
        return scrape_series(port, "newstagger_model_info") == [
            ({"name": "newstagger", "version": version}, 1.0)
        ]

    shutil.copytree(model_dir, registry.new_version_dir("v1"))
    registry.promote("v1")
    wait_for(lambda: info_is("v1"), 30, what="model_info v1 only")
    for version in ("v2", "v3"):
        add_version(registry, version)
        registry.promote(version)
        wait_for(lambda v=version: info_is(v), 30, what=f"model_info {version} only")
    registry.rollback()  # back to a version served before: its series returns, v3's goes
    wait_for(lambda: info_is("v2"), 30, what="model_info v2 only")


def test_json_logs_carry_context_and_no_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        logging.getLogger("newstagger.test").info(
            "tagged %s", "a1", extra={"article_id": "a1", "topic": "articles", "partition": 2, "offset": 7}
        )
    finally:
        logging.getLogger().handlers.clear()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["level"] == "INFO" and line["logger"] == "newstagger.test" and line["message"] == "tagged a1"
    assert (line["article_id"], line["topic"], line["partition"], line["offset"]) == ("a1", "articles", 2, 7)
