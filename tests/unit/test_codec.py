"""The event codec: every input ends as an article or a dead-letter reason, never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.types import HeadResult, LabelScore, TagResult
from service.stream.codec import REASONS, DecodeFailed, InputEvent, decode_event
from service.stream.encoding import (
    H_DROPPED,
    H_MODEL_VERSION,
    H_REASON,
    Source,
    encode_dead_letter,
    encode_tagged,
)
from tests.helpers import REPO

LIMIT = 1000
header_names = st.one_of(
    st.sampled_from(["content-type", "Content-Type", "traceparent", "x-b3-traceid", "other"]),
    st.text(max_size=8),
)
header_values = st.one_of(
    st.none(),
    st.sampled_from([b"application/json", b"application/x-protobuf", b"text/plain", b"\xff"]),
    st.binary(max_size=16),
)
headers_st = st.lists(st.tuples(header_names, header_values), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
field_values = st.one_of(json_values, st.text(max_size=40), st.just(" "), st.just("x" * (LIMIT + 1)))
objects = st.dictionaries(
    st.sampled_from(["id", "text", "title", "target", "published_at", "source", "url", "metadata", "extra"]),
    field_values,
    max_size=8,
)


def outcome(value: bytes | None, headers: Any) -> InputEvent | str:
    try:
        return decode_event(value, headers, LIMIT)
    except DecodeFailed as exc:
        assert exc.reason in REASONS
        assert str(exc)
        return exc.reason


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.none(), st.binary(max_size=200)), headers=headers_st)
def test_arbitrary_bytes_and_headers_never_raise(value: bytes | None, headers: Any) -> None:
    result = outcome(value, headers)
    assert isinstance(result, InputEvent | str)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(objects, json_values), headers=headers_st)
def test_arbitrary_json_is_an_article_or_a_reason(data: Any, headers: Any) -> None:
    headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
    result = outcome(json.dumps(data).encode(), headers)
    if isinstance(result, InputEvent):
        assert isinstance(data, dict)
        assert result.article.id == data["id"] and result.article.text == data["text"]
        assert data["text"].strip() and len(data["text"].encode()) <= LIMIT


@given(data=objects)
def test_encoded_dead_letter_keeps_the_original(data: dict[str, Any]) -> None:
    value = json.dumps(data).encode()
    letter = encode_dead_letter(
        b"k", value, [("traceparent", b"t")], Source("in", 2, 9), "wrong_type", ValueError("x\ny"), "v3", 0.0
    )
    headers = dict(letter.headers)
    assert letter.key == b"k" and letter.value == value
    assert headers["traceparent"] == b"t" and headers[H_REASON] == b"wrong_type"
    assert headers["newstagger-error-message"] == b"x y"
    assert headers[H_MODEL_VERSION] == b"v3"


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"{", [], "invalid_json"),
        (b"NaN", [], "invalid_json"),
        (b"[]", [], "wrong_type"),
        (b'{"id": "a", "text": 1}', [], "wrong_type"),
        (b'{"id": "a", "text": "t", "metadata": []}', [], "wrong_type"),
        (b'{"text": "t"}', [], "missing_field"),
        (b'{"id": "a", "text": null}', [], "missing_field"),
        (b'{"id": "a", "text": " \\n"}', [], "empty_text"),
        (json.dumps({"id": "a", "text": "\u00e9" * 501}).encode(), [], "text_too_long"),
        (json.dumps({"id": "a", "text": "t", "title": "x" * 1000}).encode(), [], "text_too_long"),
        (json.dumps({"id": "a", "text": "t" * 600, "target": "y" * 500}).encode(), [], "text_too_long"),
        (json.dumps({"id": "a" * 9000, "text": "t"}).encode(), [], "field_too_long"),
        (json.dumps({"id": "a", "text": "t", "url": "\u00e9" * 4097}).encode(), [], "field_too_long"),
        (b"\xc3\x28", [], "undecodable"),
        (None, [], "undecodable"),
        (b"{}", [("content-type", b"text/csv")], "unknown_content_type"),
        (b"\xff\xff", [("content-type", b"application/x-protobuf")], "invalid_json"),
    ],
)
def test_each_bad_input_has_its_reason(value: bytes | None, headers: Any, reason: str) -> None:
    assert outcome(value, headers) == reason


def test_json_with_charset_and_tagged_record() -> None:
    event = decode_event(
        b'{"id": "a", "text": "t", "title": "T", "url": "u", "metadata": {"m": 1}}',
        [("Content-Type", b"application/json; charset=utf-8")],
        LIMIT,
    )
    result = TagResult(
        "a", (HeadResult("topics", "multi", (LabelScore("x", 0.9),), (LabelScore("x", 0.9),)),), "m", "v1"
    )
    out = encode_tagged(
        result, b"key", [("traceparent", b"tp"), ("secret", b"s")], Source("in", 0, 5), event.fields,
        ("title", "url", "metadata", "published_at"), 0.0,
    )  # fmt: skip
    payload = json.loads(out.value or b"")
    assert out.key == b"key"
    assert dict(out.headers) == {
        "traceparent": b"tp",
        "content-type": b"application/json",
        "newstagger-model-name": b"m",
        "newstagger-model-version": b"v1",
    }
    assert payload["fields"] == {"title": "T", "url": "u", "metadata": {"m": 1}}
    assert payload["source_record"] == {"topic": "in", "partition": 0, "offset": 5}
    assert payload["tagged_at"] == "1970-01-01T00:00:00.000Z"
    assert payload["heads"][0]["labels"] == [{"label": "x", "score": 0.9}]


@pytest.mark.parametrize("name", ["id", "text", "title", "target", "source", "url", "published_at"])
def test_a_lone_surrogate_in_a_string_field_is_undecodable(name: str) -> None:
    fields = {"id": "s", "text": "troops", name: "x \\ud83d y"}
    value = json.dumps(fields).replace("\\\\ud83d", "\\ud83d").encode()
    with pytest.raises(DecodeFailed, match=f"field '{name}' is not valid Unicode") as info:
        decode_event(value, [], LIMIT)
    assert info.value.reason == "undecodable"


def test_a_lone_surrogate_in_a_passthrough_field_is_undecodable_elsewhere_ignored() -> None:
    value = b'{"id": "s", "text": "troops", "metadata": {"desk": ["w", {"\\udc00": 1}]}}'
    with pytest.raises(DecodeFailed, match="field 'metadata' is not valid Unicode"):
        decode_event(value, [], LIMIT, passthrough=("title", "metadata"))
    event = decode_event(value, [], LIMIT, passthrough=("title",))  # not copied: not checked
    assert event.article.id == "s"


def test_a_valid_surrogate_pair_is_fine() -> None:
    event = decode_event(b'{"id": "s", "text": "troops \\ud83d\\ude00"}', [], LIMIT)
    assert event.article.text == "troops \U0001f600"


def test_text_title_and_target_are_summed_in_exact_utf8_bytes() -> None:
    # 950 + 4 * 15 = 1010 bytes: each field alone passes the per-field shortcut
    value = json.dumps({"id": "a", "text": "t" * 950, "title": "\U0001f600" * 15}).encode()
    with pytest.raises(DecodeFailed, match=r"together are 1010 bytes \(text 950 \+ title 60\)") as info:
        decode_event(value, [], LIMIT)
    assert info.value.reason == "text_too_long"
    ok = json.dumps({"id": "a", "text": "t" * 940, "title": "\U0001f600" * 15}).encode()
    assert decode_event(ok, [], LIMIT).article.title == "\U0001f600" * 15


def test_a_dead_letter_too_large_leaves_out_what_is_named_and_says_so() -> None:
    headers = [("big", b"h" * 100), ("nul", None), ("traceparent", b"t")]
    args = (b"key", b"v" * 50, headers, Source("in", 1, 7), "invalid_json", ValueError("bad"), "v1", 0.0)
    full = encode_dead_letter(*args)
    assert full.value == b"v" * 50 and dict(full.headers)["big"] == b"h" * 100
    assert "nul" not in dict(full.headers)  # kafka-python cannot send a null header value
    assert H_DROPPED not in dict(full.headers)
    small = encode_dead_letter(*args, drop=("value",))
    assert small.value is None and small.key == b"key" and dict(small.headers)[H_DROPPED] == b"value=50"
    smaller = encode_dead_letter(*args, drop=("value", "headers"))
    names = [k for k, _ in smaller.headers]
    assert "big" not in names and "traceparent" not in names and smaller.key == b"key"
    assert dict(smaller.headers)[H_DROPPED] == b"value=50,headers=115"
    assert dict(smaller.headers)[H_REASON] == b"invalid_json"


def test_a_dead_letter_message_that_is_not_unicode_is_escaped() -> None:
    letter = encode_dead_letter(
        None, b"x", [], Source("in", 0, 0), "model_error", ValueError("a\ud800"), "", 0.0
    )
    assert dict(letter.headers)["newstagger-error-message"] == b"a\\ud800"


def test_every_reason_is_documented_and_in_the_dead_letter_schema() -> None:
    doc = (REPO / "docs" / "events.md").read_text()
    schema = json.loads((REPO / "schemas" / "dead-letter.schema.json").read_text())
    assert schema["properties"]["newstagger-error-reason"]["enum"] == list(REASONS)
    assert [reason for reason in REASONS if f"| `{reason}` |" not in doc] == []


def test_values_past_what_one_request_of_max_articles_may_hold_are_refused_before_parsing() -> None:
    """The budget follows --max-request-articles: 8 values per article plus 10,000."""
    from service.gen.newstagger.v1 import tagger_pb2

    def entries(n: int) -> bytes:
        return json.dumps({"id": "m", "text": "troops", "metadata": {str(i): 1 for i in range(n)}}).encode()

    assert decode_event(entries(10_000), [], LIMIT, max_articles=1).article.id == "m"
    with pytest.raises(DecodeFailed, match="more than 10008 JSON array elements") as info:
        decode_event(entries(10_008), [], LIMIT, max_articles=1)
    assert info.value.reason == "too_many_values"
    assert decode_event(entries(10_008), [], LIMIT, max_articles=2).article.id == "m"
    proto = tagger_pb2.Article(id="p", text="troops", metadata={str(i): "" for i in range(400)})
    headers = [("content-type", b"application/x-protobuf")]
    assert decode_event(proto.SerializeToString(), headers, LIMIT, max_articles=8).article.id == "p"
    with pytest.raises(DecodeFailed, match="the value holds more than 1032 protobuf fields") as info:
        decode_event(proto.SerializeToString(), headers, LIMIT, max_articles=1)
    assert info.value.reason == "too_many_values"
