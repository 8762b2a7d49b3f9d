"""Labelled-data loading: every bad-data case names file, line and field; nothing is half-written."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.core.errors import DataError
from service.core.types import Article
from service.model.article_model import articles_to_matrix
from service.model.artifact import load_artifact
from training.config import HeadConfig, TrainConfig
from training.data import load_dataset
from training.train import train

CONFIG = TrainConfig()


def row(rid: str, text: str = "Troops crossed the border.", **heads: Any) -> dict[str, Any]:
    return {"id": rid, "text": text, **(heads or {"topics": ["deployment"], "stance": "neutral"})}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def good_rows(n: int = 3) -> list[dict[str, Any]]:
    return [row(f"r{i}") for i in range(n)]


def data_error(paths: list[Path], config: TrainConfig = CONFIG, **kwargs: Any) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(paths, config, **kwargs)
    return str(info.value)


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
    rows = good_rows()
    rows.insert(1, {"id": "bad", "topics": [], "stance": "neutral"})
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path])
    assert f"{path}:2:" in message and "'text'" in message


def test_blank_text_is_missing_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [*good_rows(2), row("blank", text="   ")])
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
    data = load_dataset([write_jsonl(tmp_path / "train.jsonl", good_rows())], config)
    assert {n: h.kind for n, h in data.heads.items()} == {"topics": "multi", "stance": "single"}
    assert data.heads["stance"].labels == ("neutral",)
    # `--heads` still picks heads, and a declared head it does not pick is simply left out
    assert list(load_dataset([tmp_path / "train.jsonl"], config, head_names=["topics"]).heads) == ["topics"]


def test_ignored_fields_are_not_heads(tmp_path: Path) -> None:
    config = TrainConfig(heads={"stance": HeadConfig()}, ignore_fields=("topics",))
    data = load_dataset([write_jsonl(tmp_path / "train.jsonl", good_rows())], config)
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
    rows = [*good_rows(2), {"id": "c", "text": "x", "topics": ["war"]}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path])
    assert f"{path}:3:" in message and "'stance'" in message


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    rows = [row("a"), row("b"), row("a")]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path])
    assert f"{path}:3:" in message and "'id'" in message and "duplicate id 'a'" in message
    assert "line 1" in message


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r).encode() for r in good_rows(2)]
    lines.append(b'{"id": "c", "text": "caf\xe9 owners protest", "topics": [], "stance": "neutral"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    message = data_error([path])
    assert f"{path}:3:" in message and "UTF-8" in message


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in good_rows(2)) + '{"id": "c", "text": \n'
    path.write_text(text, encoding="utf-8")
    message = data_error([path])
    assert f"{path}:3:" in message and "invalid JSON" in message


def test_a_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row("a")) + "\n[1, 2]\n", encoding="utf-8")
    message = data_error([path])
    assert f"{path}:2:" in message and "JSON object" in message


def test_wrong_label_types_name_the_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [row("a"), row("b", topics="war", stance="neutral")])
    message = data_error([path])
    assert f"{path}:2:" in message and "'topics'" in message and "list of label strings" in message


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
    path = write_jsonl(tmp_path / "train.jsonl", [row("a", topics=["war"]), row("b", topics=["war,aid"])])
    assert f"{path}:2: field 'topics': 'war,aid' looks like several labels" in data_error([path])
    declared = TrainConfig(heads={"topics": HeadConfig(kind="multi")})
    assert load_dataset([path], declared).labels("topics")[1] == ("war,aid",)


def test_a_head_kind_is_inferred_from_every_row_of_every_file(tmp_path: Path) -> None:
    """The first row once decided the kind: a string first made `topics` single-label, and the
    error (or not) depended on the order of rows and files."""
    text_first = write_jsonl(tmp_path / "a.jsonl", [row("a", topics="war", stance="neutral")])
    lists = write_jsonl(tmp_path / "b.jsonl", [row("b", topics=["war", "aid"], stance="neutral")])
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


def test_several_files_merge_and_the_later_file_wins(tmp_path: Path) -> None:
    first = write_jsonl(
        tmp_path / "a.jsonl",
        [row("x", "old text", topics=["war"], stance="neutral"), row("y", topics=["aid"], stance="neutral")],
    )
    second = write_jsonl(
        tmp_path / "b.jsonl",
        [row("x", "new text", topics=["aid"], stance="critical"), row("z", topics=[], stance="neutral")],
    )
    data = load_dataset([first, second], CONFIG)
    by_id = {r.article.id: r for r in data.rows}
    assert sorted(by_id) == ["x", "y", "z"]
    assert by_id["x"].article.text == "new text"
    assert by_id["x"].labels == {"topics": ("aid",), "stance": ("critical",)}
    assert [f["path"] for f in data.files] == [str(first), str(second)]


def test_errors_in_a_later_file_name_that_file(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", good_rows())
    second = write_jsonl(tmp_path / "b.jsonl", [row("q"), {"id": "w", "topics": [], "stance": "neutral"}])
    message = data_error([first, second])
    assert f"{second}:2:" in message and "'text'" in message


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    assert str(tmp_path / "nope.jsonl") in data_error([tmp_path / "nope.jsonl"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert f"{empty}: no rows" in data_error([empty])


def test_failed_train_leaves_no_artifact_directory(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [*good_rows(5), row("r0")])
    out = tmp_path / "models" / "m1"
    with pytest.raises(DataError, match=re.escape(f"{bad}:6:")):
        train([bad], out, CONFIG)
    assert not out.exists()
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_failed_train_on_the_command_line_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(row("a")).encode() + b"\n\xff\xfe\n")
    registry = tmp_path / "registry"
    assert main(["train", "--data", str(bad), "--registry", str(registry)]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err
    assert not (registry / "current").exists()
    leftovers = list((registry / "versions").iterdir()) if (registry / "versions").exists() else []
    assert leftovers == []
    out = tmp_path / "out"
    assert main(["train", "--data", str(bad), "--out", str(out)]) == 2
    assert not out.exists()


def binary_rows(n: int = 16) -> list[dict[str, Any]]:
    """A topics head with one label, on some rows only (a binary tagger), and two stances."""
    economy = "Inflation and interest rates rose, the central bank said ({})."
    other = "The museum opened an art exhibition at the festival ({})."
    return [
        row(
            f"r{i}",
            (economy if i % 2 else other).format(i),
            topics=["economy"] if i % 2 else [],
            stance="critical" if i % 4 < 2 else "neutral",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"stance": "neutral"}, "head 'stance' has one class ('neutral') in the training data ("),
        ({"topics": []}, "head 'topics' has no labels in any row of the training data ("),
        ({"topics": ["economy"]}, "head 'topics' has one label ('economy') and every training row has it"),
    ],
)
def test_heads_a_classifier_cannot_learn_are_refused_before_fitting(
    tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    """Each once crashed `train` with a scikit-learn traceback."""
    path = write_jsonl(tmp_path / "train.jsonl", [r | change for r in binary_rows()])
    out = tmp_path / "model"
    with pytest.raises(DataError) as info:
        train([path], out, CONFIG)
    assert says in str(info.value) and str(path) in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize("folds", [2, 0])
def test_a_multi_label_head_with_one_label_is_a_binary_tagger(tmp_path: Path, folds: int) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", binary_rows())
    config = replace(CONFIG, thresholds=replace(CONFIG.thresholds, cv_folds=folds))
    manifest = train([path], tmp_path / "model", config, [path] if folds == 0 else [])
    assert manifest.metrics["cv" if folds else "dev"]["topics"]["per_label"]["economy"]["f1"] > 0.5
    model = load_artifact(tmp_path / "model").model
    texts = ["Interest rates and inflation, the central bank said.", "An art exhibition at the museum."]
    X = articles_to_matrix([Article(str(i), t) for i, t in enumerate(texts)])
    scores = model.scores(X, ["topics"])["topics"]
    assert scores.shape == (2, 1) and scores[0, 0] > 0.5 > scores[1, 0]


def test_dev_rows_that_are_training_rows_are_refused_or_allowed_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Such a dev score was once called held out, with no warning; then warned about only after
    training. Now refused before training when more than 5% are shared, unless --allow-dev-overlap;
    warned about and recorded otherwise."""
    rows = binary_rows()
    train_path = write_jsonl(tmp_path / "train.jsonl", rows)
    same_text = rows[3] | {"id": "new-id", "text": rows[3]["text"].upper()}
    dev_path = write_jsonl(tmp_path / "dev.jsonl", [rows[0], same_text, row("fresh", "A quiet day.")])
    config = tmp_path / "c.toml"
    config.write_text("[thresholds]\ncv_folds = 2\n")
    out = tmp_path / "model"
    args = ["train", "--quiet", "--data", str(train_path), "--dev", str(dev_path), "--config", str(config)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 of the 3 --dev rows are also training rows (same id, or same title and text)" in err
    assert "ids 'r0', 'new-id'" in err and "--allow-dev-overlap" in err and not out.exists()
    registry = ["--registry", str(tmp_path / "reg")]
    assert main([*args, *registry, "--version", "v1", "--allow-dev-overlap"]) == 0
    captured = capsys.readouterr()
    assert "warning: 2 of the 3 --dev rows are also training rows (same id" in captured.err
    assert "dev score: 3 dev rows (WARNING: 2 of them are also training rows" in captured.out
    out = tmp_path / "reg" / "versions" / "v1"
    assert "WARNING: 2 of them are also training rows" in (out / "MODEL_CARD.md").read_text()
    assert load_artifact(out).manifest.data["dev_overlap"] == 2
    assert main(["models", "show", "v1", "--summary", *registry]) == 0
    assert "WARNING: 2 of them are also training rows: not held out" in capsys.readouterr().out
    # a few repeated articles, as real corpora have (5% or fewer): warned about and recorded
    few = [rows[0]] + [row(f"fresh-{i}", f"A quiet day number {i}.") for i in range(20)]
    few_path = write_jsonl(tmp_path / "few.jsonl", few)
    assert main([*args[:5], str(few_path), *args[6:], *registry, "--version", "v2"]) == 0
    assert "warning: 1 of the 21 --dev rows are also training rows" in capsys.readouterr().err
    assert load_artifact(tmp_path / "reg" / "versions" / "v2").manifest.data["dev_overlap"] == 1
    clean = write_jsonl(tmp_path / "clean.jsonl", [row("fresh", "A quiet day.")])
    assert main([*args[:5], str(clean), *args[6:], "--out", str(tmp_path / "m2")]) == 0
    assert "warning" not in capsys.readouterr().err.lower()


def test_an_id_that_is_a_boolean_is_refused(tmp_path: Path) -> None:
    rows = [row("a"), {**row("b"), "id": True}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = data_error([path])
    assert f"{path}:2:" in message and "'id'" in message


def test_a_head_left_with_one_class_after_the_held_out_split_is_refused(tmp_path: Path) -> None:
    """Without cross-validation or --dev, cut-offs are tuned on a held-out share: what is left
    to fit on must still be learnable (once a scikit-learn traceback)."""
    path = write_jsonl(tmp_path / "train.jsonl", binary_rows(20))
    config = replace(CONFIG, dev_fraction=0.95, thresholds=replace(CONFIG.thresholds, cv_folds=0))
    with pytest.raises(DataError, match="95% of the rows held out for cut-offs"):
        train([path], tmp_path / "model", config)
    assert not (tmp_path / "model").exists()


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
    rows = [{**r, field: r.pop("topics")} for r in good_rows()]  # trained as a head before
    message = data_error([write_jsonl(tmp_path / "d.jsonl", rows)])
    assert "d.jsonl:1: field" in message and "cannot be a head" in message and says in message


def test_a_label_no_manifest_can_hold_is_refused_before_training(tmp_path: Path) -> None:
    """A lone surrogate in a label trained to the end, then crashed writing the manifest."""
    rows = good_rows()
    rows[2]["topics"] = ["deployment", "bad\ud800"]
    assert "d.jsonl:3: field 'topics': label 'bad\\ud800' holds a lone surrogate" in data_error(
        [write_jsonl(tmp_path / "d.jsonl", rows)]
    )
    rows = good_rows()
    rows[0]["stance"] = "  "  # a label that is only spaces is as empty as ""
    assert "d.jsonl:1: field 'stance': label '  ' is blank" in data_error(
        [write_jsonl(tmp_path / "d.jsonl", rows)]
    )
