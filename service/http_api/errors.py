"""Domain errors to HTTP statuses: the one table of the HTTP edge, mirroring the gRPC one.

Every error body is ``{"error": {"code": <http status>, "status": <gRPC code name>, "message": ...}}``.
Messages of domain errors are written for callers and passed through; anything else becomes 500
``internal error`` and its traceback is logged, never sent.
"""

from __future__ import annotations

import logging

from service.core.errors import (
    DeadlineExceeded,
    InvalidArticle,
    InvalidRequest,
    ModelNotReady,
    NewstaggerError,
    Overloaded,
)

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"
RETRY_AFTER_SECONDS = "1"


class BodyTooLarge(NewstaggerError):
    """The request body is over the configured limit."""


class NotFound(NewstaggerError):
    """No such model (or model version) here."""


class Unauthenticated(NewstaggerError):
    """A state-changing call without the right bearer token."""


class Disabled(NewstaggerError):
    """The operation is disabled by configuration (e.g. admin calls without an admin token)."""


#: HTTP status and the gRPC status name of the same failure (what TagBatch items report).
STATUS_BY_ERROR: dict[type[NewstaggerError], tuple[int, str]] = {
    InvalidArticle: (400, "INVALID_ARGUMENT"),
    InvalidRequest: (400, "INVALID_ARGUMENT"),
    BodyTooLarge: (413, "INVALID_ARGUMENT"),
    NotFound: (404, "NOT_FOUND"),
    Unauthenticated: (401, "UNAUTHENTICATED"),
    Disabled: (501, "UNIMPLEMENTED"),
    Overloaded: (429, "RESOURCE_EXHAUSTED"),
    ModelNotReady: (503, "UNAVAILABLE"),
    DeadlineExceeded: (504, "DEADLINE_EXCEEDED"),
}


def status_for(exc: BaseException, where: str = "") -> tuple[int, str, str]:
    """(HTTP status, gRPC code name, caller-safe message) for ``exc``; unexpected ones are logged."""
    for error_type in type(exc).__mro__:
        found = STATUS_BY_ERROR.get(error_type)
        if found is not None:
            return found[0], found[1], str(exc)
    logger.error("unexpected error in %s", where or "an HTTP call", exc_info=exc)
    return 500, "INTERNAL", INTERNAL_MESSAGE


def headers_for(status: int) -> dict[str, str]:
    """Extra response headers a status calls for."""
    if status in (429, 503):
        return {"Retry-After": RETRY_AFTER_SECONDS}
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    return {}
