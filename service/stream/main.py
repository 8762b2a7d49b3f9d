"""Entry point of `newstagger stream` (to be built: issue 4)."""

from __future__ import annotations

from service.settings import Settings


def run_stream(settings: Settings) -> int:
    raise SystemExit("newstagger stream: not implemented yet")
