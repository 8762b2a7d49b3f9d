"""Labelled data a user might plausibly hand to `train`/`evaluate` by mistake: each is refused
with one line naming the file, the line and the field, or read exactly as the service would."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from service.core.errors import DataError
from service.core.tagger import MAX_MODEL_TEXT_CHARS
from training.config import TrainConfig
from training.data import MAX_LABEL_BYTES, load_dataset
from training.records import MAX_LINE_BYTES

CONFIG = TrainConfig()


def rows(n: int = 4) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "text": "Troops crossed the border.", "stance": "ab"[i % 2]} for i in range(n)]


def jsonl(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in items)


def data_error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_dataset([path], CONFIG)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400  # one short line, whatever the input
    return message


def test_a_key_twice_in_one_object_is_refused_not_last_wins(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(rows(2)) + '{"id": "r9", "text": "Talks.", "stance": "a", "stance": "b"}\n')
    message = data_error(path)
    assert message.startswith(f"{path}:3: field 'stance'") and "twice" in message


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(tmp_path: Path, constant: str) -> None:
    path = tmp_path / "train.jsonl"
    line = '{"id": "r9", "text": "Talks.", "stance": "a", "group": ' + constant + "}\n"
    path.write_text(jsonl(rows(2)) + line)
    message = data_error(path)
    assert message.startswith(f"{path}:3: invalid JSON") and constant in message


def test_a_gzip_file_is_named_as_one(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(gzip.compress(jsonl(rows()).encode()))
    message = data_error(path)
    assert message.startswith(f"{path}:1: not valid UTF-8") and "gzip file: decompress" in message


def test_a_utf16_file_is_named_as_one(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes("id,text,stance\na,Talks.,x\nb,Tanks.,y\n".encode("utf-16"))
    message = data_error(path)
    assert message.startswith(f"{path}:1: not valid UTF-8") and "UTF-16" in message


def test_a_label_over_the_limit_is_refused_and_quoted_short(tmp_path: Path) -> None:
    items = rows()
    items[2]["stance"] = "x" * 1_000_000  # a text pasted into the label column
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(items))
    message = data_error(path)
    assert message.startswith(f"{path}:3: field 'stance': label") and f"limit of {MAX_LABEL_BYTES}" in message


def test_a_label_at_the_limit_is_kept(tmp_path: Path) -> None:
    items = rows()
    items[2]["stance"] = "é" * (MAX_LABEL_BYTES // 2)
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(items))
    assert load_dataset([path], CONFIG).labels("stance")[2] == ("é" * (MAX_LABEL_BYTES // 2),)


def test_a_long_text_is_cut_to_what_the_served_model_reads(tmp_path: Path) -> None:
    items = rows()
    items[1]["text"] = "war " * MAX_MODEL_TEXT_CHARS  # 4x what the model reads when it serves
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(items))
    data = load_dataset([path], CONFIG)
    assert len(data.articles()[1].text) == MAX_MODEL_TEXT_CHARS and data.cut_texts == 1
    assert data.articles()[0].text == "Troops crossed the border."


def test_a_file_without_line_breaks_is_refused_at_the_line_limit(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    with path.open("wb") as fh:  # a sparse file: 1 GiB of zero bytes that take no disk space
        fh.truncate(1024**3)
    message = data_error(path)
    assert message.startswith(f"{path}:1: the line is over {MAX_LINE_BYTES:,} bytes")


def test_a_line_at_the_limit_is_read(tmp_path: Path) -> None:
    head = '{"id": "r9", "stance": "b", "text": "'
    line = head + "w" * (MAX_LINE_BYTES - len(head) - 3) + '"}\n'
    assert len(line.encode()) == MAX_LINE_BYTES
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(rows()) + line)
    assert len(load_dataset([path], CONFIG).rows) == 5
