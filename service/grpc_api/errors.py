"""Domain errors to gRPC status codes: the one table, applied once at the edge.

Messages of domain errors are written for callers (they name the article and the limit) and are
passed through; anything else becomes ``INTERNAL, "internal error"`` and its traceback is logged,
never sent.
"""

from __future__ import annotations

import logging

import grpc

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

STATUS_BY_ERROR: dict[type[NewstaggerError], grpc.StatusCode] = {
    InvalidArticle: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_for(exc: BaseException, method: str = "") -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for ``exc``; unexpected errors are logged here."""
    for error_type in type(exc).__mro__:
        code = STATUS_BY_ERROR.get(error_type)
        if code is not None:
            return code, str(exc)
    logger.error("unexpected error in %s", method or "a gRPC call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def code_number(code: grpc.StatusCode) -> int:
    """The numeric google.rpc.Code of ``code`` (what ItemError.code carries)."""
    number: int = code.value[0]
    return number
