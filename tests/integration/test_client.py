"""The Python entry points: `newstagger.load` tags in-process with one import; `TaggerClient`
raises the project's own errors, by status code, with the server's message."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

import newstagger
from service.client import (
    DeadlineError,
    InvalidArgumentError,
    OverloadedError,
    RemoteError,
    TaggerClient,
    TooLargeError,
    UnavailableError,
)
from service.core.errors import InvalidRequest, NewstaggerError, Overloaded
from service.core.types import Article, TagResult
from service.model.registry import ModelRegistry
from tests.helpers import free_port
from tests.integration.test_grpc_api import BlockingTagger
from tests.integration.test_grpc_support import serve_in_process

TEXT = "North Korean troops were deployed to the Kursk front."


def test_load_tags_in_process_with_one_import(registry: ModelRegistry) -> None:
    tagger = newstagger.load(registry.root)
    [result] = tagger.tag([newstagger.Article("a1", TEXT)], newstagger.TagOptions(heads=("topics",)))
    assert isinstance(result, newstagger.TagResult) and result.article_id == "a1"
    assert [h.head for h in result.heads] == ["topics"] and result.model_version == "v1"
    with pytest.raises(newstagger.NewstaggerError, match="no model in"):
        newstagger.load(registry.root / "nothing-here")


def test_client_raises_the_projects_errors_with_the_servers_message(registry: ModelRegistry) -> None:
    with (
        serve_in_process(registry.root) as served,
        TaggerClient(f"127.0.0.1:{served.port}") as client,
    ):
        with pytest.raises(InvalidArgumentError, match="text is empty") as info:
            client.tag("   ", article_id="e1")
        assert isinstance(info.value, InvalidRequest) and info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InvalidRequest, match="unknown head"):
            client.tag(TEXT, options=newstagger.TagOptions(heads=("nope",)))
        assert issubclass(OverloadedError, Overloaded)
    with (
        TaggerClient(f"127.0.0.1:{free_port()}", timeout=5) as nobody,
        pytest.raises(UnavailableError) as down,
    ):
        nobody.model()
    assert isinstance(down.value, RemoteError) and isinstance(down.value, NewstaggerError)
    assert down.value.code == grpc.StatusCode.UNAVAILABLE and str(down.value)


def test_a_request_over_the_size_limit_is_the_callers_error_not_overload(registry: ModelRegistry) -> None:
    """gRPC refuses a message over the server's size limit (16 MiB) with RESOURCE_EXHAUSTED. The
    client raised it as OverloadedError ("retry with backoff"), so a caller retrying overload
    retried a batch that can never pass; it is a TooLargeError (an InvalidRequest) saying what to
    do. A batch of the documented size limit of articles passes and one more is refused whole."""
    with (
        serve_in_process(registry.root, max_request_articles=20) as served,
        TaggerClient(f"127.0.0.1:{served.port}", timeout=60) as client,
    ):
        text = "Troops were sent to the front after the talks failed. " * 18_000  # ~990 KB, under 1 MB
        with pytest.raises(TooLargeError, match="over the server's limit of 16777216: send fewer") as info:
            client.tag_batch([Article(f"a{i}", text) for i in range(18)])
        assert isinstance(info.value, InvalidRequest) and not isinstance(info.value, Overloaded)
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        results = client.tag_batch([Article(f"a{i}", TEXT) for i in range(20)])
        assert [r.article_id for r in results if isinstance(r, TagResult)] == [f"a{i}" for i in range(20)]
        with pytest.raises(InvalidArgumentError, match="21 articles in one request; the limit is 20"):
            client.tag_batch([Article(f"a{i}", TEXT) for i in range(21)])


def test_a_shared_client_takes_a_deadline_per_call_and_the_late_article_is_not_computed(
    registry: ModelRegistry,
) -> None:
    """One client shared by threads: a call may give its own (short) deadline without changing the
    client's for the others; it gets DeadlineError and the server never computes its article."""
    tagger = BlockingTagger()
    with (
        serve_in_process(registry.root, tagger=tagger, max_batch_size=1) as served,
        TaggerClient(f"127.0.0.1:{served.port}", timeout=60) as client,
    ):
        busy: list[str] = []
        other = threading.Thread(target=lambda: busy.append(client.tag(TEXT, article_id="busy").article_id))
        other.start()
        try:
            assert tagger.entered.wait(30)  # the batcher is stuck on "busy"
            with pytest.raises(DeadlineError):
                client.tag(TEXT, article_id="late", timeout=0.5)
        finally:
            tagger.release.set()
            other.join(60)
        assert busy == ["busy"]
        assert client.tag(TEXT, article_id="after").article_id == "after"
        assert client.model(timeout=30).version == "v1"
    assert tagger.computed == ["busy", "after"]


def test_another_projects_service_package_is_named_not_used(tmp_path: Path) -> None:
    """Top-level `service`/`training` collide with other projects' packages in one environment:
    newstagger refuses to run on someone else's and says whose is in the way."""
    fake = tmp_path / "elsewhere" / "service"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(fake.parent), "PATH": "/usr/bin:/bin"}
    program = [sys.executable, "-c", "import sys, newstagger; sys.exit(newstagger.main())", "--version"]
    cli = subprocess.run(
        program, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert cli.returncode == 2 and cli.stdout == ""
    assert cli.stderr.count("\n") == 1 and f"'service' at {fake} is not newstagger's" in cli.stderr
    api = [sys.executable, "-c", "from newstagger import Article"]
    used = subprocess.run(api, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (
        used.returncode == 1
        and f"ImportError: newstagger: the top-level package 'service' at {fake}" in used.stderr
    )
