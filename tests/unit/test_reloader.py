"""ModelReloader: picks up a new current, refuses broken candidates (old keeps serving, counted),
and calls in flight finish on the model they started with."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.core.errors import ArtifactError
from service.core.tagger import Tagger
from service.core.types import Article
from service.metrics import Metrics
from service.model import artifact
from service.model.artifact import MODEL_FILE, load_artifact, save_artifact
from service.model.manifest import write_manifest
from service.model.registry import ModelRegistry
from service.reloader import ModelReloader, smoke_check
from tests.helpers import wait_for
from tests.unit.test_artifact import manifest_fields
from tests.unit.test_registry import add_version

ARTICLE = Article("a1", "North Korean troops were deployed to the front; dozens were killed in shelling.")


def reloads(prom: CollectorRegistry, result: str) -> float:
    return prom.get_sample_value("newstagger_model_reloads_total", {"result": result}) or 0.0


@pytest.fixture()
def served(registry: ModelRegistry) -> tuple[Tagger, ModelReloader, CollectorRegistry]:
    prom = CollectorRegistry()
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, Metrics(prom), interval=0)
    assert reloader.check().result == "loaded"
    return tagger, reloader, prom


def test_new_current_is_picked_up(registry: ModelRegistry, served: Any) -> None:
    tagger, reloader, prom = served
    assert tagger.tag([ARTICLE])[0].model_version == "v1"
    assert reloader.check().result == "unchanged"
    add_version(registry, "v2")
    registry.promote("v2")
    outcome = reloader.check()
    assert (outcome.result, outcome.version) == ("loaded", "v2")
    assert tagger.tag([ARTICLE])[0].model_version == "v2"
    assert reloads(prom, "loaded") == 2
    assert prom.get_sample_value("newstagger_model_info", {"name": "newstagger", "version": "v2"}) == 1
    # an info metric: the replaced version's series is gone (it stayed, at 0, for every version served)
    assert prom.get_sample_value("newstagger_model_info", {"name": "newstagger", "version": "v1"}) is None


def test_polling_picks_up_a_promotion(registry: ModelRegistry) -> None:
    tagger = Tagger()
    reloader = ModelReloader(tagger, registry.root, None, interval=0.05)
    reloader.start()
    try:
        wait_for(lambda: tagger.model is not None, 10, what="first load")
        add_version(registry, "v2")
        registry.promote("v2")
        wait_for(lambda: tagger.tag([ARTICLE])[0].model_version == "v2", 10, what="v2 served")
    finally:
        reloader.stop()


def test_corrupted_artifact_is_refused_old_keeps_serving(registry: ModelRegistry, served: Any) -> None:
    tagger, reloader, prom = served
    add_version(registry, "v3", tamper=True)
    registry.promote("v3", verify=False)  # as if someone wrote `current` by hand
    outcome = reloader.check()
    assert outcome.result == "refused" and "checksum mismatch" in outcome.message
    assert tagger.tag([ARTICLE])[0].model_version == "v1"
    assert reloads(prom, "refused") == 1
    # polled again: still refused, not counted (or logged) twice
    assert reloader.check().result == "refused"
    assert reloads(prom, "refused") == 1


def test_manifest_labels_that_are_not_the_models_are_refused(registry: ModelRegistry, served: Any) -> None:
    """A manifest that disagrees with its model (one label too few), even sealed, is refused."""
    tagger, reloader, prom = served
    path = add_version(registry, "v4")
    manifest = json.loads((path / "manifest.json").read_text())
    topics = next(h for h in manifest["heads"] if h["name"] == "topics")
    topics["labels"], topics["thresholds"] = topics["labels"][:-1], topics["thresholds"][:-1]
    write_manifest(path, manifest)
    with pytest.raises(ArtifactError, match="labels of head 'topics' are not the model's"):
        load_artifact(path)
    registry.promote("v4", verify=False, allow_head_changes=True)  # as if by hand
    outcome = reloader.check()
    assert outcome.result == "refused" and "not the model's" in outcome.message
    assert tagger.tag([ARTICLE])[0].model_version == "v1"
    assert reloads(prom, "refused") == 1


def test_smoke_check_rejects_scores_outside_0_1(registry: ModelRegistry) -> None:
    loaded = load_artifact(registry.path("v1"))

    class Broken:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.head_featurizer = inner.head_featurizer

        def features(self, X: Any, heads: Any) -> Any:
            return self.inner.features(X, heads)

        def scores(self, X: Any, heads: Any, features: Any = None) -> Any:
            return {h: s * float("nan") for h, s in self.inner.scores(X, heads, features).items()}

    from dataclasses import replace

    with pytest.raises(ArtifactError, match="outside"):
        smoke_check(replace(loaded, model=Broken(loaded.model)))


def test_calls_in_flight_finish_on_the_old_model(registry: ModelRegistry, served: Any) -> None:
    tagger, reloader, _ = served
    old = tagger.model
    assert old is not None
    entered, release = threading.Event(), threading.Event()
    inner = old.model

    class Slow:
        head_featurizer = inner.head_featurizer

        def features(self, X: Any, heads: Any) -> Any:
            entered.set()
            assert release.wait(10)
            return inner.features(X, heads)

        def scores(self, X: Any, heads: Any, features: Any = None) -> Any:
            return inner.scores(X, heads, features)

    from dataclasses import replace

    tagger.swap(replace(old, model=Slow()))
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(tagger.tag([ARTICLE])[0].model_version))
    worker.start()
    assert entered.wait(10)
    add_version(registry, "v2")
    registry.promote("v2")
    assert reloader.check().result == "loaded"  # swapped while the call is in flight
    assert tagger.tag([ARTICLE])[0].model_version == "v2"  # new calls: the new model
    release.set()
    worker.join(10)
    assert results == ["v1"]  # the call in flight finished on the model it started with


def test_missing_model_dir(tmp_path: Path) -> None:
    reloader = ModelReloader(Tagger(), tmp_path / "nothing", None, interval=0)
    assert reloader.check().result == "missing"


def test_a_current_pointer_to_a_missing_version_is_logged_once_per_value(
    registry: ModelRegistry, served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """It was once ignored silently, poll after poll."""
    tagger, reloader, _ = served
    caplog.set_level("WARNING", logger="service.reloader")
    for bad in ("gone", "gone", "gone", "also-gone", "also-gone"):
        (registry.root / "current").write_text(bad + "\n")
        assert reloader.check().result == "missing"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert "no version 'gone'" in warnings[0] and "no version 'also-gone'" in warnings[1]
    assert tagger.model.manifest.version == "v1"  # the old model keeps serving
    registry.promote("v1")
    assert reloader.check().result == "unchanged"
    (registry.root / "current").write_text("gone\n")
    reloader.check()
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 3  # a new episode


def test_a_served_version_written_again_under_its_name_is_loaded(
    registry: ModelRegistry, served: Any
) -> None:
    """`rm -r versions/v1`, then `train --version v1` (current still names v1): the same path, another
    model. The reloader answered "unchanged" for good, serving the deleted model, while a process
    started since served the new one under the same version."""
    tagger, reloader, _ = served
    v1 = load_artifact(registry.path("v1"))
    shutil.rmtree(registry.path("v1"))
    cut_offs = tuple(replace(h, thresholds=tuple(0.99 for _ in h.thresholds)) for h in v1.manifest.heads)
    rewritten = save_artifact(
        v1.model, {**manifest_fields(v1, "v1"), "heads": cut_offs}, registry.new_version_dir("v1")
    )
    outcome = reloader.check()
    assert (outcome.result, outcome.version) == ("loaded", "v1")
    assert tagger.model is not None and tagger.model.manifest == rewritten
    assert reloader.check().result == "unchanged"


def test_a_version_copied_in_slowly_is_logged_once_per_problem_and_counted_per_poll(
    registry: ModelRegistry, served: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """`current` names v2 while `cp -r` is still writing it: every poll saw other file sizes, so
    it refused (and logged an error) on every poll until the copy ended. Now each state still
    counts as a refused attempt, but a problem is logged once, again when it changes, and once
    more when it is over."""
    tagger, reloader, prom = served
    caplog.set_level("INFO", logger="service.reloader")
    whole = tmp_path / "v2"  # a complete v2 elsewhere, copied in below as `cp` would
    shutil.copytree(registry.path("v1"), whole)
    manifest = json.loads((whole / "manifest.json").read_text())
    manifest["version"] = "v2"
    write_manifest(whole, manifest)
    v2 = registry.new_version_dir("v2")
    v2.mkdir()
    shutil.copy(whole / "manifest.json", v2 / "manifest.json")
    registry.promote("v2", verify=False)  # a promote racing the copy
    assert reloader.check().result == "refused"  # the manifest is there, the model not yet
    model = (whole / MODEL_FILE).read_bytes()
    chunks = [model[i : i + len(model) // 10 + 1] for i in range(0, len(model), len(model) // 10 + 1)]
    with (v2 / MODEL_FILE).open("wb") as out:
        for chunk in chunks[:-1]:
            out.write(chunk)
            out.flush()
            outcome = reloader.check()
            assert outcome.result == "refused" and "checksum mismatch" in outcome.message
        out.write(chunks[-1])
    assert tagger.tag([ARTICLE])[0].model_version == "v1"  # the old model kept serving
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2, errors  # one per problem, not one per poll (was 10)
    assert f"no {MODEL_FILE}" in errors[0] and "checksum mismatch" in errors[1]
    assert reloads(prom, "refused") == len(chunks)  # every state tried is still counted
    assert reloader.check().result == "loaded"
    assert tagger.tag([ARTICLE])[0].model_version == "v2"
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert f"resolved after {len(chunks) - 1} poll(s): refused model" in infos[-1]
    assert "checksum mismatch" in infos[-1]
    # a refused current rolled back: the problem is over when the served model is current again
    add_version(registry, "v3", tamper=True)
    registry.promote("v3", verify=False)
    for _ in range(3):
        assert reloader.check().result == "refused"
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 3
    registry.promote("v2", verify=False)
    assert reloader.check().result == "unchanged"
    assert "resolved after 3 poll(s): refused model" in caplog.records[-1].getMessage()


def test_a_registry_that_cannot_be_read_keeps_the_old_model_and_is_logged_once(
    registry: ModelRegistry, served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """`current` a symlink loop, or (for a service running as another user) a registry made
    unreadable with chmod: the OSError escaped `check()`, a traceback on every poll, and
    `serve` starting then exited instead of starting unready and waiting."""
    tagger, reloader, _ = served
    caplog.set_level("INFO", logger="service.reloader")
    pointer = registry.root / "current"
    pointer.unlink()
    pointer.symlink_to("current")  # every read fails with ELOOP
    for _ in range(3):
        outcome = reloader.check()
        assert outcome.result == "missing" and "symbolic links" in outcome.message
    assert tagger.tag([ARTICLE])[0].model_version == "v1"  # the old model keeps serving
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    starting = ModelReloader(Tagger(), registry.root, None, interval=0)  # a process starting now
    assert starting.check().result == "missing"  # unready, not dead
    pointer.unlink()
    add_version(registry, "v2")
    registry.promote("v2")
    assert reloader.check().result == "loaded"
    assert "resolved after 3 poll(s): no model to load" in caplog.records[-1].getMessage()


def test_a_model_file_that_cannot_be_read_is_tried_again_until_it_can(
    registry: ModelRegistry, served: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`chmod 000` on the promoted version's model file, as a service running as another user sees
    it (the test runs as any user, so the denial is injected where the file is read): the
    PermissionError escaped `check()` (a traceback per poll, never counted). A refusal is
    remembered by the files' sizes and times, which `chmod 644` does not change: an unreadable
    file must be tried again at the next poll, not refused for good."""
    tagger, reloader, prom = served
    caplog.set_level("ERROR", logger="service.reloader")
    add_version(registry, "v2")
    registry.promote("v2")
    denied = registry.path("v2") / MODEL_FILE
    readable = artifact.sha256_file

    def chmod_000(path: Path) -> str:
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return readable(path)

    monkeypatch.setattr(artifact, "sha256_file", chmod_000)
    for _ in range(3):
        outcome = reloader.check()
        assert outcome.result == "refused" and "Permission denied" in outcome.message
    assert tagger.tag([ARTICLE])[0].model_version == "v1"
    assert reloads(prom, "refused") == 3  # counted at every poll, logged once
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
    monkeypatch.setattr(artifact, "sha256_file", readable)  # chmod 644: same size, same time
    assert reloader.check().result == "loaded"
    assert tagger.tag([ARTICLE])[0].model_version == "v2"
