"""The errors of the model layer, and the base of every error newstagger raises on purpose.

They live here, at the bottom of the dependency graph (service.core depends on service.model,
never the reverse), and ``service.core.errors`` re-exports them with the other domain errors.
"""

from __future__ import annotations


class NewstaggerError(Exception):
    """Base class of every error newstagger raises on purpose."""


class ArtifactError(NewstaggerError):
    """A model artifact is missing, malformed, tampered with or unsafe to load."""


class HeadsChanged(ArtifactError):
    """A version would take away heads, head kinds or labels that the current version serves."""

    def __init__(self, message: str, lost: list[str]) -> None:
        super().__init__(message)
        self.lost = lost


class CurrentChanged(ArtifactError):
    """A promotion conditional on what is current (``ModelRegistry.promote(if_current=...)``) found
    another version current under the registry's lock: another promote or rollback ran since."""

    def __init__(self, message: str, current: str | None) -> None:
        super().__init__(message)
        self.current = current
