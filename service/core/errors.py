"""Domain errors. They carry no transport codes; each adapter maps them once, at its edge."""

from __future__ import annotations


class NewstaggerError(Exception):
    """Base class of every error newstagger raises on purpose."""


class InvalidArticle(NewstaggerError):
    """The caller sent an article that cannot be tagged (empty text, too long, bad field)."""


class InvalidRequest(NewstaggerError):
    """The request as a whole is wrong (unknown head, batch too large, bad option)."""


class ModelNotReady(NewstaggerError):
    """No model is loaded yet, or the service is draining."""


class Overloaded(NewstaggerError):
    """The batcher queue is full; the caller should retry later."""


class DeadlineExceeded(NewstaggerError):
    """The caller's deadline passed before the article was tagged."""


class ArtifactError(NewstaggerError):
    """A model artifact is missing, malformed, tampered with or unsafe to load."""


class DataError(NewstaggerError):
    """Labelled training data is invalid; the message names the file, line and field."""
