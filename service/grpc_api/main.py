"""Entry point of `newstagger serve` (to be built: issue 3)."""

from __future__ import annotations

from service.settings import Settings


def run_serve(settings: Settings, with_stream: bool = False) -> int:
    raise SystemExit("newstagger serve: not implemented yet")
