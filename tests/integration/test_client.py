"""The Python entry points: `newstagger.load` tags in-process with one import; `TaggerClient`
raises the project's own errors, by status code, with the server's message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import newstagger
from service.client import InvalidArgumentError, OverloadedError, RemoteError, TaggerClient, UnavailableError
from service.core.errors import InvalidRequest, NewstaggerError, Overloaded
from service.model.registry import ModelRegistry
from tests.helpers import free_port
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
