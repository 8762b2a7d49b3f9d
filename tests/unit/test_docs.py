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


def _code() -> list[str]:
    """The README's code: fenced blocks (joined across backslash line breaks) and inline spans."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README, re.S)
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    spans = re.findall(r"`([^`]+)`", prose)
    return [b.replace("\\\n", " ") for b in blocks] + [s.replace("\n", " ") for s in spans]


def _command_lines() -> list[list[str]]:
    """Every `newstagger ...` invocation in the README's code."""
    lines = []
    for code in _code():
        for match in re.finditer(r"(?:^\s*|\|\s*)newstagger((?: [^\n|#;&)]+)?)", code, re.M):
            try:
                lines.append(shlex.split(match.group(1)))
            except ValueError:
                lines.append(match.group(1).split())
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


def test_every_readme_command_and_flag_exists() -> None:
    root = build_parser()
    commands = _subparsers(root)
    checked = 0
    for words in _command_lines():
        parser, words = root, [w for w in words if w]
        while words and words[0] in _subparsers(parser):
            parser = _subparsers(parser)[words.pop(0)]
            checked += 1
        if parser is root:
            unknown = words[0] if words and not words[0].startswith("-") else None
            assert unknown is None, f"README mentions unknown command: newstagger {unknown}"
        for word in words:
            if word.startswith("--"):
                flag = word.split("=", 1)[0]
                assert flag in _flags(parser), f"README: `{flag}` is not a flag of {parser.prog}"
    assert checked >= 5 and set(commands) >= {"train", "evaluate", "tag", "serve", "stream", "models", "demo"}


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
