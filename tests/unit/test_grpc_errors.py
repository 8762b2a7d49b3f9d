"""The one domain-error -> gRPC status table."""

from __future__ import annotations

import logging

import grpc
import pytest

from service.core.errors import (
    ArtifactError,
    DeadlineExceeded,
    InvalidArticle,
    InvalidRequest,
    ModelNotReady,
    Overloaded,
)
from service.grpc_api.errors import INTERNAL_MESSAGE, code_number, status_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArticle("article 'a': text is empty"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidRequest("unknown head(s) x"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotReady("no model is loaded"), grpc.StatusCode.UNAVAILABLE),
        (Overloaded("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (DeadlineExceeded("deadline passed"), grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_domain_errors_keep_their_caller_safe_message(error: Exception, code: grpc.StatusCode) -> None:
    assert status_for(error) == (code, str(error))


class SubclassedInvalid(InvalidArticle):
    pass


def test_subclasses_map_like_their_parent() -> None:
    assert status_for(SubclassedInvalid("bad"))[0] == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "error", [RuntimeError("/srv/models/secret.skops: bad"), KeyError("vocabulary_"), ArtifactError("sha")]
)
def test_anything_else_is_internal_generic_and_logged(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        code, message = status_for(error, "Tag")
    assert (code, message) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert str(error) not in message
    (record,) = caplog.records
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "Tag" in record.getMessage()


def test_code_numbers_are_google_rpc_codes() -> None:
    assert code_number(grpc.StatusCode.INVALID_ARGUMENT) == 3
    assert code_number(grpc.StatusCode.RESOURCE_EXHAUSTED) == 8
    assert code_number(grpc.StatusCode.UNAVAILABLE) == 14
