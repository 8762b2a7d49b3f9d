"""Kafka record bytes and headers -> events: the input decoder. Pure translation: no Kafka
client, no I/O. The formats are documented in docs/events.md and schemas/*.json; the output side
(tagged records, dead-letter envelope) is ``encoding``.

Every input ends either as an ``InputEvent`` or as a ``DecodeFailed`` carrying one of ``REASONS``;
``decode_event`` raises nothing else, whatever the bytes and headers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from service.core.errors import InvalidArticle, InvalidRequest
from service.core.json_values import OTHER_VALUES, VALUES_PER_ARTICLE, more_values_than
from service.core.types import Article
from service.core.validation import validate_article

Headers = Sequence[tuple[str, bytes | None]]

CONTENT_TYPE = "content-type"
JSON_TYPES = frozenset({"application/json", "text/json"})
PROTOBUF_TYPES = frozenset(
    {"application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf"}
)
#: Why a record went to the dead-letter topic (the ``reason`` label: a bounded set).
REASONS = (
    "invalid_json",  # not parseable as JSON (or not valid protobuf)
    "wrong_type",  # not an object, or a field of the wrong type
    "missing_field",  # no id or no text
    "empty_text",
    "text_too_long",  # text, title and target together over max_text_bytes
    "field_too_long",  # id, published_at, source or url over MAX_FIELD_BYTES
    "undecodable",  # bytes that are not UTF-8, a string that is not Unicode, or a null value
    "unknown_content_type",
    "too_many_values",  # more JSON values (or protobuf fields) than one API request may hold
    "invalid_article",  # refused by the tagger's own validation
    "model_error",  # the model failed on this article
    "unpublishable",  # the tagged record could not be encoded or is too large to produce
    "too_large_to_read",  # over the consumer's receive limit: dead-lettered unread (``unreadable``)
)
STRING_FIELDS = ("id", "text", "title", "target", "published_at", "source", "url")
#: the fields the model reads: together at most max_text_bytes
MODEL_FIELDS = ("text", "title", "target")
#: the other string fields are identifiers and metadata: each at most this many UTF-8 bytes
MAX_FIELD_BYTES = 8192


class DecodeFailed(Exception):  # noqa: N818 - an outcome, not a crash
    """The record cannot become an article; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InputEvent:
    """A decoded article event: the article to tag plus the input fields it may pass through."""

    article: Article
    fields: dict[str, Any] = field(default_factory=dict)


def header_value(headers: Headers, name: str) -> bytes | None:
    """The last value of header ``name`` (case-insensitive), or None."""
    found = None
    for key, value in headers:
        if isinstance(key, str) and key.lower() == name:
            found = value
    return found


def decode_event(
    value: bytes | None,
    headers: Headers,
    max_text_bytes: int,
    passthrough: Sequence[str] = (),
    max_articles: int = 512,
) -> InputEvent:
    """Decode one record value; the ``passthrough`` fields (copied to the output) are checked to
    be valid Unicode too. Raises only DecodeFailed.

    A record may hold as many JSON values (or protobuf fields) as one API request of
    ``max_articles`` articles (``--max-request-articles``) may, counted before it is parsed: the
    parse holds the GIL, and a record of millions of tiny values (a 10 MB ``metadata`` of a million
    entries: 0.7 s to parse, measured) stopped the whole process, health checks and the group's
    heartbeats included, then was tagged as if nothing were wrong."""
    if value is None:
        raise DecodeFailed("undecodable", "record value is null")
    raw_type = header_value(headers, CONTENT_TYPE)
    try:
        media = (raw_type or b"application/json").decode("utf-8").split(";", 1)[0].strip().lower()
    except UnicodeDecodeError:
        raise DecodeFailed("unknown_content_type", "content-type header is not UTF-8") from None
    if media in PROTOBUF_TYPES:
        fields = _protobuf_fields(value, max_articles)
    elif media in JSON_TYPES or not media:
        fields = _json_fields(value, max_articles)
    else:
        raise DecodeFailed("unknown_content_type", f"unsupported content-type {media[:100]!r}")
    article = _article(fields, max_text_bytes)
    for name in passthrough:
        if name not in STRING_FIELDS and name in fields:
            _check_unicode(name, fields[name])
    return InputEvent(article, fields)


def _json_fields(value: bytes, max_articles: int) -> dict[str, Any]:
    most = VALUES_PER_ARTICLE * max_articles + OTHER_VALUES  # the V2 API's budget for one request
    if len(value) > most and more_values_than(value, most):  # a value takes at least a byte
        raise DecodeFailed(
            "too_many_values",
            f"the value holds more than {most} JSON array elements and object members "
            f"(as many as one request of --max-request-articles {max_articles} may)",
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeFailed("undecodable", f"value is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise DecodeFailed("invalid_json", f"invalid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise DecodeFailed("wrong_type", f"the event must be a JSON object, not {type(data).__name__}")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _protobuf_fields(value: bytes, max_articles: int) -> dict[str, Any]:
    try:
        from google.protobuf.json_format import MessageToDict
        from google.protobuf.message import DecodeError

        from service.core.wire import FieldBudget
        from service.gen.newstagger.v1 import tagger_pb2
    except ImportError:
        raise DecodeFailed("unknown_content_type", "protobuf support is not installed") from None
    try:
        FieldBudget(max_articles).check(value, tagger_pb2.Article.DESCRIPTOR)
    except InvalidRequest as exc:
        refusal = str(exc).replace("the request", "the value", 1)
        raise DecodeFailed("too_many_values", refusal) from None
    message = tagger_pb2.Article()
    try:
        message.ParseFromString(value)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise DecodeFailed("invalid_json", f"invalid protobuf Article: {str(exc)[:200]}") from None
    data: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
    return data


def _article(fields: dict[str, Any], max_text_bytes: int) -> Article:
    for name in STRING_FIELDS:
        item = fields.get(name)
        if item is not None and not isinstance(item, str):
            raise DecodeFailed("wrong_type", f"field {name!r} must be a string, not {type(item).__name__}")
    metadata = fields.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise DecodeFailed("wrong_type", f"field 'metadata' must be an object, not {type(metadata).__name__}")
    for name in ("id", "text"):
        if fields.get(name) is None:
            raise DecodeFailed("missing_field", f"field {name!r} is required")
    article_id, text = fields["id"], fields["text"]
    if not article_id.strip():
        raise DecodeFailed("missing_field", "field 'id' is empty")
    if not text.strip():
        raise DecodeFailed("empty_text", "field 'text' is empty")
    sizes = {name: _utf8_size(name, fields.get(name) or "") for name in STRING_FIELDS}
    model_bytes = sum(sizes[name] for name in MODEL_FIELDS)
    if model_bytes > max_text_bytes:
        parts = " + ".join(f"{name} {sizes[name]}" for name in MODEL_FIELDS if sizes[name])
        raise DecodeFailed(
            "text_too_long",
            f"text, title and target together are {model_bytes} bytes ({parts}), "
            f"over the limit of {max_text_bytes}",
        )
    for name in STRING_FIELDS:
        if name not in MODEL_FIELDS and sizes[name] > MAX_FIELD_BYTES:
            raise DecodeFailed(
                "field_too_long",
                f"field {name!r} is {sizes[name]} bytes, over the limit of {MAX_FIELD_BYTES}",
            )
    article = Article(article_id, text, fields.get("title") or "", fields.get("target") or "")
    try:
        validate_article(article, max_text_bytes)  # the one validation (field limits)
    except InvalidArticle as exc:
        raise DecodeFailed(exc.reason, str(exc)) from None
    return article


def _utf8_size(name: str, value: str) -> int:
    """The exact UTF-8 size of field ``name``; DecodeFailed if it is not valid Unicode (a lone
    surrogate, which JSON's \\u escapes allow and UTF-8 cannot encode)."""
    if value.isascii():  # constant time in CPython
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise DecodeFailed("undecodable", f"field {name!r} is not valid Unicode (a lone surrogate)") from None


def _check_unicode(name: str, value: Any) -> None:
    """DecodeFailed if any string in ``value`` (nested lists and objects, keys too) is not
    valid Unicode. Iterative: JSON nesting can be deeper than Python's recursion limit."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _utf8_size(name, item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
