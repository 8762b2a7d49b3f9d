"""Events -> Kafka records: the tagged record and the dead-letter envelope (the input side is
``codec``). Pure translation: no Kafka client, no I/O. The formats are documented in
docs/events.md and schemas/*.json.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.core.types import TagResult, result_to_json
from service.stream.codec import CONTENT_TYPE, Headers

#: Headers copied from the input record to the tagged record (distributed tracing, correlation).
TRACE_HEADERS = frozenset(
    {"traceparent", "tracestate", "baggage", "b3", "uber-trace-id", "x-request-id", "x-correlation-id"}
)
TRACE_PREFIXES = ("x-b3-", "ot-baggage-", "uberctx-")
H_MODEL_NAME = "newstagger-model-name"
H_MODEL_VERSION = "newstagger-model-version"
# dead-letter headers
H_REASON = "newstagger-error-reason"
H_ERROR_CLASS = "newstagger-error-class"
H_ERROR_MESSAGE = "newstagger-error-message"
H_SOURCE_TOPIC = "newstagger-source-topic"
H_SOURCE_PARTITION = "newstagger-source-partition"
H_SOURCE_OFFSET = "newstagger-source-offset"
H_FAILED_AT = "newstagger-failed-at"
H_DROPPED = "newstagger-dropped"
MAX_ERROR_MESSAGE = 500
#: what a dead letter too large to produce leaves out, in this order, until it fits
DROPPABLE = ("value", "headers", "key")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class OutRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def iso_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_headers(headers: Headers) -> list[tuple[str, bytes]]:
    out = []
    for key, value in headers:
        name = key.lower() if isinstance(key, str) else ""
        if value is not None and (name in TRACE_HEADERS or name.startswith(TRACE_PREFIXES)):
            out.append((key, value))
    return out


def tagged_payload(
    result: TagResult, source: Source, fields: dict[str, Any], passthrough: Sequence[str], now: float
) -> dict[str, Any]:
    return result_to_json(result) | {
        "tagged_at": iso_now(now),
        "source_record": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
        "fields": {name: fields[name] for name in passthrough if name in fields},
    }


def encode_tagged(
    result: TagResult,
    key: bytes | None,
    headers: Headers,
    source: Source,
    fields: dict[str, Any],
    passthrough: Sequence[str],
    now: float,
) -> OutRecord:
    """The tagged record: same key, trace headers copied, model headers added."""
    payload = tagged_payload(result, source, fields, passthrough, now)
    # allow_nan=False: a passthrough number out of float range (``1e999`` parses as inf) would be
    # written as ``Infinity``, which is not JSON; it raises instead (an ``unpublishable`` dead letter)
    value = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    out_headers = trace_headers(headers) + [
        (CONTENT_TYPE, b"application/json"),
        (H_MODEL_NAME, result.model_name.encode("utf-8")),
        (H_MODEL_VERSION, result.model_version.encode("utf-8")),
    ]
    return OutRecord(key, value, out_headers)


def encode_dead_letter(
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    source: Source,
    reason: str,
    error: BaseException,
    model_version: str,
    now: float,
    drop: Collection[str] = (),
) -> OutRecord:
    """The dead letter: the original key, value and headers, plus headers saying why, where
    from, when and under which model version. The parts named in ``drop`` (of DROPPABLE: the
    dead letter would be too large to produce) are left out, and ``newstagger-dropped`` says
    which and their sizes, e.g. ``value=3000477``. Input headers with a null value are left out,
    and a dead letter that would have neither key nor value gets an empty value (kafka-python
    cannot send either)."""
    message = str(error).replace("\r", " ").replace("\n", " ")[:MAX_ERROR_MESSAGE]
    error_class = type(error).__name__
    kept = [(k, v) for k, v in headers if isinstance(k, str) and v is not None]
    extra = [
        (H_REASON, reason),
        (H_ERROR_CLASS, error_class),
        (H_ERROR_MESSAGE, message),
        (H_SOURCE_TOPIC, source.topic),
        (H_SOURCE_PARTITION, str(source.partition)),
        (H_SOURCE_OFFSET, str(source.offset)),
        (H_FAILED_AT, iso_now(now)),
        (H_MODEL_VERSION, model_version),
    ]
    if drop:
        sizes = {
            "value": len(value or b""),
            "headers": sum(len(k.encode("utf-8", "surrogatepass")) + len(v) for k, v in kept),
            "key": len(key or b""),
        }
        extra.append((H_DROPPED, ",".join(f"{part}={sizes[part]}" for part in DROPPABLE if part in drop)))
    out_key = None if "key" in drop else key
    out_value = None if "value" in drop else value
    if out_key is None and out_value is None:  # kafka-python cannot send a record with neither
        out_value = b""
    return OutRecord(
        out_key,
        out_value,
        ([] if "headers" in drop else kept) + [(k, v.encode("utf-8", "backslashreplace")) for k, v in extra],
    )
