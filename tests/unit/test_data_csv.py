"""Labelled data in CSV files, and how a label cell or field is read: list separators that hide
several labels in one, and a head's kind inferred from every row of every file (CSV or JSONL)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import data_error
from tests.helpers import data_row, write_jsonl
from training.config import HeadConfig, TrainConfig
from training.data import load_dataset

CONFIG = TrainConfig()


def test_csv_input_works(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "title", "text", "topics", "stance"])
        writer.writerow(["a", "Border", "Troops, tanks and\nartillery moved.", '["war", "aid"]', "critical"])
        writer.writerow(["b", "", "Talks resumed.", "[]", "neutral"])
    data = load_dataset([path], CONFIG)
    assert {n: h.kind for n, h in data.heads.items()} == {"topics": "multi", "stance": "single"}
    assert data.articles()[0].text == "Troops, tanks and\nartillery moved."
    assert data.labels("topics") == [("war", "aid"), ()]
    assert data.labels("stance") == [("critical",), ("neutral",)]


def test_csv_multi_label_cells_use_a_pipe_and_an_empty_cell_means_no_labels(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        "id,text,topics,stance\n"
        "a,Sanctions and missiles.,sanctions|weapons_programme,critical\n"
        "b,Troops moved.,troop_deployment,neutral\n"
        "c,Nothing to see.,,neutral\n",
        encoding="utf-8",
    )
    data = load_dataset([path], CONFIG)
    assert data.heads["topics"].kind == "multi" and data.heads["stance"].kind == "single"
    assert data.labels("topics") == [("sanctions", "weapons_programme"), ("troop_deployment",), ()]


def test_a_declared_multi_label_csv_column_needs_no_pipe(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("id,text,topics\na,Sanctions.,sanctions\nb,Quiet day.,\n", encoding="utf-8")
    data = load_dataset([path], TrainConfig(heads={"topics": HeadConfig(kind="multi")}))
    assert data.labels("topics") == [("sanctions",), ()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_labels_joined_by_another_separator_are_refused_not_combined(tmp_path: Path, suffix: str) -> None:
    """`sanctions;weapons_programme` once trained a single-label head of combined labels."""
    path = tmp_path / f"train{suffix}"
    rows = [("a", "sanctions"), ("b", "sanctions;weapons_programme")]
    if suffix == ".csv":
        path.write_text("id,text,topics\n" + "".join(f"{i},Some text.,{t}\n" for i, t in rows))
    else:
        write_jsonl(path, [{"id": i, "text": "Some text.", "topics": t} for i, t in rows])
    message = data_error([path])
    line = 3 if suffix == ".csv" else 2
    assert f"{path}:{line}: field 'topics'" in message and "looks like several labels" in message
    assert "'|'" in message and 'kind = "single"' in message
    declared = TrainConfig(heads={"topics": HeadConfig(kind="single")})
    assert load_dataset([path], declared).labels("topics")[1] == ("sanctions;weapons_programme",)


def test_hidden_lists_are_refused_in_multi_label_heads_too(tmp_path: Path) -> None:
    """A head inferred multi-label once accepted `a;b` or `a,b` as one label."""
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("id,text,topics\na,Some text.,war|aid\nb,Some text.,war;aid\n", encoding="utf-8")
    message = data_error([csv_path])
    assert f"{csv_path}:3: field 'topics': 'war;aid' looks like several labels" in message
    assert 'kind = "multi"' in message
    path = write_jsonl(
        tmp_path / "train.jsonl", [data_row("a", topics=["war"]), data_row("b", topics=["war,aid"])]
    )
    assert f"{path}:2: field 'topics': 'war,aid' looks like several labels" in data_error([path])
    declared = TrainConfig(heads={"topics": HeadConfig(kind="multi")})
    assert load_dataset([path], declared).labels("topics")[1] == ("war,aid",)


def test_a_head_kind_is_inferred_from_every_row_of_every_file(tmp_path: Path) -> None:
    """The first row once decided the kind: a string first made `topics` single-label, and the
    error (or not) depended on the order of rows and files."""
    text_first = write_jsonl(tmp_path / "a.jsonl", [data_row("a", topics="war", stance="neutral")])
    lists = write_jsonl(tmp_path / "b.jsonl", [data_row("b", topics=["war", "aid"], stance="neutral")])
    for paths in ([text_first, lists], [lists, text_first]):
        message = data_error(paths)
        assert f"{text_first}:1: field 'topics'" in message and "list of label strings" in message
    pipes = tmp_path / "c.csv"
    pipes.write_text("id,text,topics,stance\nc,Some text.,war|aid,neutral\n", encoding="utf-8")
    plain = tmp_path / "d.csv"
    plain.write_text("id,text,topics,stance\nd,Some text.,war,neutral\ne,Quiet.,,neutral\n", encoding="utf-8")
    for paths in ([plain, pipes], [pipes, plain]):
        data = load_dataset(paths, CONFIG)
        assert data.heads["topics"].kind == "multi"
        assert dict(zip([a.id for a in data.articles()], data.labels("topics"), strict=True)) == {
            "c": ("war", "aid"),
            "d": ("war",),
            "e": (),
        }


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (
            ["id,text,stance", "a,Talks resumed.,neutral", "b,Troops, tanks moved.,critical"],
            ":3: 4 cells, the header has 3; quote cells that contain commas",
        ),
        (
            ["id,text,stance", "a,Talks resumed.,neutral", "b,Troops moved."],
            ":3: 2 cells, the header has 3; every row needs a cell per column",
        ),
        (["id,text,stance,stance", "a,Talks resumed.,neutral,neutral"], ":1: column 'stance' appears twice"),
        (
            ["id,text,stance,", "a,Talks resumed.,neutral,", "b,Tanks,critical,x"],
            ":3: a value in column 4, unnamed",
        ),
    ],
)
def test_csv_rows_must_match_the_header(tmp_path: Path, lines: list[str], says: str) -> None:
    """Extra cells were silently dropped; missing cells or a repeated column crashed."""
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert f"{path}{says}" in data_error([path])


def test_a_nameless_empty_csv_column_is_ignored(tmp_path: Path) -> None:
    """A trailing comma on every line (a spreadsheet export) adds an empty column with no name."""
    path = tmp_path / "train.csv"
    path.write_text(
        "id,text,stance,\na,Talks resumed.,neutral,\nb,Tanks moved.,critical,\n", encoding="utf-8"
    )
    assert list(load_dataset([path], CONFIG).heads) == ["stance"]


def test_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("id,text,stance\na,Talks resumed.,neutral\nb,,critical\n", encoding="utf-8")
    message = data_error([path])
    assert f"{path}:3:" in message and "'text'" in message
