"""Domain errors. They carry no transport codes; each adapter maps them once, at its edge."""

from __future__ import annotations

from service.model.errors import ArtifactError, NewstaggerError

__all__ = [
    "ArtifactError",
    "DataError",
    "DeadlineExceeded",
    "InvalidArticle",
    "InvalidRequest",
    "ModelNotReady",
    "NewstaggerError",
    "Overloaded",
]


class InvalidArticle(NewstaggerError):
    """The caller sent an article that cannot be tagged (empty text, too long, bad field).
    ``reason`` is a short machine-readable name (the Kafka dead-letter reason)."""

    def __init__(self, message: str, reason: str = "invalid_article") -> None:
        super().__init__(message)
        self.reason = reason


class InvalidRequest(NewstaggerError):
    """The request as a whole is wrong (unknown head, batch too large, bad option)."""


class ModelNotReady(NewstaggerError):
    """No model is loaded yet, or the service is draining."""


class Overloaded(NewstaggerError):
    """The batcher has more work queued than it may hold, or than the call's deadline leaves time
    for; the caller should retry later (elsewhere or with backoff)."""


class DeadlineExceeded(NewstaggerError):
    """The caller's deadline passed before the article was tagged."""


class DataError(NewstaggerError):
    """Labelled training data is invalid; the message names the file, line and field."""
