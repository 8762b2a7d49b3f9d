"""Print what the image tests measured (build times, image size) after the run."""

from __future__ import annotations

import pytest

REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("container image")
        for line in REPORT:
            terminalreporter.write_line(line)
