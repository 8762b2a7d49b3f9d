"""Labelled-data loading: every bad-data case names file, line and field; nothing is half-written.
CSV files and label cells: test_data_csv.py; what `train` refuses: test_data_training.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import data_error
from tests.helpers import data_row, good_data_rows, write_jsonl
from training.config import HeadConfig, TrainConfig
from training.data import load_dataset

CONFIG = TrainConfig()


def test_valid_jsonl_resolves_heads_from_the_data(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "title": "T", "text": "x y", "topics": ["war", "aid"], "stance": "critical"},
        {"id": "b", "text": "z", "topics": [], "stance": "neutral"},
    ]
    data = load_dataset([write_jsonl(tmp_path / "d.jsonl", rows)], CONFIG)
    assert {n: h.kind for n, h in data.heads.items()} == {"topics": "multi", "stance": "single"}
    assert [a.id for a in data.articles()] == ["a", "b"]
    assert data.articles()[0].title == "T"
    assert data.labels("topics") == [("war", "aid"), ()]
    assert data.labels("stance") == [("critical",), ("neutral",)]
    assert data.files[0]["rows"] == 2 and len(data.files[0]["sha256"]) == 64


def test_missing_text_names_file_line_and_field(tmp_path: Path) -> None:
    rows = good_data_rows()
    rows.insert(1, {"id": "bad", "topics": [], "stance": "neutral"})
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path])
    assert f"{path}:2:" in message and "'text'" in message


def test_blank_text_is_missing_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [*good_data_rows(2), data_row("blank", text="   ")])
    message = data_error([path])
    assert f"{path}:3:" in message and "'text'" in message


def test_heads_on_the_command_line_select_heads(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "text": "x", "topics": ["war"]},
        {"id": "b", "text": "y", "topics": ["aid"], "sentiment": "positive"},
    ]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    assert list(load_dataset([path], TrainConfig(), head_names=["topics"]).heads) == ["topics"]
    message = data_error([path], head_names=["stance"])
    assert "stance" in message and "found in no row" in message


def test_fields_the_config_does_not_declare_are_still_heads(tmp_path: Path) -> None:
    """Declaring one head (its kind, target...) does not turn the other label fields into errors."""
    config = TrainConfig(heads={"stance": HeadConfig(kind="single", labels=("neutral",))})
    data = load_dataset([write_jsonl(tmp_path / "train.jsonl", good_data_rows())], config)
    assert {n: h.kind for n, h in data.heads.items()} == {"topics": "multi", "stance": "single"}
    assert data.heads["stance"].labels == ("neutral",)
    # `--heads` still picks heads, and a declared head it does not pick is simply left out
    assert list(load_dataset([tmp_path / "train.jsonl"], config, head_names=["topics"]).heads) == ["topics"]


def test_ignored_fields_are_not_heads(tmp_path: Path) -> None:
    config = TrainConfig(heads={"stance": HeadConfig()}, ignore_fields=("topics",))
    data = load_dataset([write_jsonl(tmp_path / "train.jsonl", good_data_rows())], config)
    assert list(data.heads) == ["stance"]


def test_empty_label_list_where_labels_are_required(tmp_path: Path) -> None:
    config = TrainConfig(heads={"topics": HeadConfig(kind="multi", require_labels=True)})
    rows = [{"id": "a", "text": "x", "topics": ["war"]}, {"id": "b", "text": "y", "topics": []}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path], config)
    assert f"{path}:2:" in message and "'topics'" in message and "empty label list" in message


def test_empty_label_list_is_fine_where_labels_are_optional(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "x", "topics": ["war"]}, {"id": "b", "text": "y", "topics": []}]
    data = load_dataset([write_jsonl(tmp_path / "train.jsonl", rows)], CONFIG)
    assert data.labels("topics") == [("war",), ()]


def test_row_missing_a_head_names_the_field(tmp_path: Path) -> None:
    rows = [*good_data_rows(2), {"id": "c", "text": "x", "topics": ["war"]}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path])
    assert f"{path}:3:" in message and "'stance'" in message


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    rows = [data_row("a"), data_row("b"), data_row("a")]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path])
    assert f"{path}:3:" in message and "'id'" in message and "duplicate id 'a'" in message
    assert "line 1" in message


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r).encode() for r in good_data_rows(2)]
    lines.append(b'{"id": "c", "text": "caf\xe9 owners protest", "topics": [], "stance": "neutral"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    message = data_error([path])
    assert f"{path}:3:" in message and "UTF-8" in message


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in good_data_rows(2)) + '{"id": "c", "text": \n'
    path.write_text(text, encoding="utf-8")
    message = data_error([path])
    assert f"{path}:3:" in message and "invalid JSON" in message


def test_a_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(data_row("a")) + "\n[1, 2]\n", encoding="utf-8")
    message = data_error([path])
    assert f"{path}:2:" in message and "JSON object" in message


def test_wrong_label_types_name_the_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl", [data_row("a"), data_row("b", topics="war", stance="neutral")]
    )
    message = data_error([path])
    assert f"{path}:2:" in message and "'topics'" in message and "list of label strings" in message


def test_several_files_merge_and_the_later_file_wins(tmp_path: Path) -> None:
    first = write_jsonl(
        tmp_path / "a.jsonl",
        [
            data_row("x", "old text", topics=["war"], stance="neutral"),
            data_row("y", topics=["aid"], stance="neutral"),
        ],
    )
    second = write_jsonl(
        tmp_path / "b.jsonl",
        [
            data_row("x", "new text", topics=["aid"], stance="critical"),
            data_row("z", topics=[], stance="neutral"),
        ],
    )
    data = load_dataset([first, second], CONFIG)
    by_id = {r.article.id: r for r in data.rows}
    assert sorted(by_id) == ["x", "y", "z"]
    assert by_id["x"].article.text == "new text"
    assert by_id["x"].labels == {"topics": ("aid",), "stance": ("critical",)}
    assert [f["path"] for f in data.files] == [str(first), str(second)]


def test_errors_in_a_later_file_name_that_file(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", good_data_rows())
    second = write_jsonl(
        tmp_path / "b.jsonl", [data_row("q"), {"id": "w", "topics": [], "stance": "neutral"}]
    )
    message = data_error([first, second])
    assert f"{second}:2:" in message and "'text'" in message


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    assert str(tmp_path / "nope.jsonl") in data_error([tmp_path / "nope.jsonl"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert f"{empty}: no rows" in data_error([empty])


def test_an_id_that_is_a_boolean_is_refused(tmp_path: Path) -> None:
    rows = [data_row("a"), {**data_row("b"), "id": True}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path])
    assert f"{path}:2:" in message and "'id'" in message


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("h" * 129, "its name is 129 bytes; callers can name a head of at most 128"),
        ("top\nics", "its name holds a control character"),
        (" ", "its name is blank"),
        ("top\ud800", "its name holds a lone surrogate"),
    ],
)
def test_a_field_whose_name_no_caller_could_ask_for_is_refused_as_a_head(
    tmp_path: Path, field: str, says: str
) -> None:
    rows = [{**r, field: r.pop("topics")} for r in good_data_rows()]  # trained as a head before
    message = data_error([write_jsonl(tmp_path / "d.jsonl", rows)])
    assert "d.jsonl:1: field" in message and "cannot be a head" in message and says in message


def test_a_label_no_manifest_can_hold_is_refused_before_training(tmp_path: Path) -> None:
    """A lone surrogate in a label trained to the end, then crashed writing the manifest."""
    rows = good_data_rows()
    rows[2]["topics"] = ["deployment", "bad\ud800"]
    assert "d.jsonl:3: field 'topics': label 'bad\\ud800' holds a lone surrogate" in data_error(
        [write_jsonl(tmp_path / "d.jsonl", rows)]
    )
    rows = good_data_rows()
    rows[0]["stance"] = "  "  # a label that is only spaces is as empty as ""
    assert "d.jsonl:1: field 'stance': label '  ' is blank" in data_error(
        [write_jsonl(tmp_path / "d.jsonl", rows)]
    )
