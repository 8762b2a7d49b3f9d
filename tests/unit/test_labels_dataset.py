"""Label collection without a broker: validation, dedup (later event wins), atomic file writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.commands.labels_dataset import load_rows, merge, validate_event, write_rows
from service.core.errors import DataError


def event(rid: str, **fields: object) -> bytes:
    return json.dumps({"id": rid, "text": f"text of {rid}", **fields}).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"text": "t", "topics": []}', "'id'"),
        (b'{"id": "a", "text": " ", "topics": []}', "'text'"),
        (b'{"id": "a", "text": "t"}', "no label field"),
        (b'{"id": "a", "text": "t", "topics": [1]}', "'topics'"),
        (b'{"id": "a", "text": "t", "title": 3, "stance": "x"}', "'title'"),
    ],
)
def test_invalid_events_say_why(value: bytes | None, reason: str) -> None:
    with pytest.raises(DataError, match=reason):
        validate_event(value)


def test_later_event_wins_and_the_file_round_trips(tmp_path: Path) -> None:
    rows: dict[str, dict[str, object]] = {}
    assert merge(rows, validate_event(event("a", stance="neutral")))
    assert merge(rows, validate_event(event("b", topics=["sanctions"])))
    assert not merge(rows, validate_event(event("a", stance="critical")))
    assert list(rows) == ["b", "a"] and rows["a"]["stance"] == "critical"
    out = tmp_path / "labels.jsonl"
    write_rows(out, rows)
    assert load_rows(out) == rows
    assert [p.name for p in tmp_path.iterdir()] == ["labels.jsonl"]  # no temporary file left
    # merging the same events again (a re-delivery) gives the same file
    again = load_rows(out)
    merge(again, validate_event(event("a", stance="critical")))
    write_rows(out, again)
    assert load_rows(out) == rows


def test_a_foreign_file_is_not_silently_merged(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    out.write_text('{"id": "a"}\n')
    with pytest.raises(DataError, match="x.jsonl:1"):
        load_rows(out)
    assert load_rows(tmp_path / "missing.jsonl") == {}
