"""The model CLI end to end: train --out, evaluate --json, tag --explain, and the registry's
models list/show/promote/rollback, including a crash between writing a version and promoting it."""

from __future__ import annotations

import gzip
import io
import json
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.commands.tag_cmd import max_line_chars
from service.model.artifact import MODEL_FILE
from service.model.manifest import MANIFEST_FILE, write_manifest
from service.model.registry import ModelRegistry
from tests.helpers import STARTER, starter_rows

ARTICLES = [
    {"id": "k1", "text": "North Korean troops were deployed to Kursk; dozens were killed in shelling."},
    {"id": "k2", "title": "Sanctions", "text": "The EU imposed sanctions over arms transfers to Russia."},
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "fast.toml"
    path.write_text("[thresholds]\ncv_folds = 0\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory: pytest.TempPathFactory, fast_config: Path) -> tuple[Path, str, str]:
    """`newstagger train --out` on the starter data; returns (dir, stdout, stderr)."""
    out = tmp_path_factory.mktemp("cli") / "model"
    with pytest.MonkeyPatch.context() as mp:
        stdout, stderr = io.StringIO(), io.StringIO()
        mp.setattr("sys.stdout", stdout)
        mp.setattr("sys.stderr", stderr)
        code = main(
            [
                "train",
                "--data",
                str(STARTER / "train.jsonl"),
                "--dev",
                str(STARTER / "dev.jsonl"),
                "--config",
                str(fast_config),
                "--out",
                str(out),
                "--version",
                "cli-1",
            ]
        )
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def test_train_out_writes_an_artifact_and_shows_progress(cli_model: tuple[Path, str, str]) -> None:
    out, stdout, stderr = cli_model
    assert f"model newstagger cli-1 written to {out}" in stdout
    assert "[1/2] tuning thresholds" in stderr and "[2/2] done" in stderr  # cv_folds = 0: fit + tune
    n_dev = starter_rows("dev")
    assert f"dev score: {n_dev} dev rows (the cut-offs were tuned on these rows: optimistic)" in stdout
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["version"] == "cli-1"
    assert manifest["config"]["features"]["use_char"] is False
    assert {h["name"] for h in manifest["heads"]} == {"topics", "stance"}
    card = (out / "MODEL_CARD.md").read_text()
    assert "cli-1" in card and "micro-F1" in card


def test_train_out_refuses_an_existing_artifact(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], fast_config: Path
) -> None:
    out = cli_model[0]
    before = (out / MODEL_FILE).read_bytes()
    code, _, err = run(
        capsys, "train", "--data", str(STARTER / "dev.jsonl"), "--config", str(fast_config), "--out", str(out)
    )
    assert code == 2 and "not empty" in err
    assert (out / MODEL_FILE).read_bytes() == before
    # refused before any training (as a bad --version is): one line, no progress before it
    said = f"newstagger train: {out} exists and is not empty; choose a new --out"
    assert err.strip().splitlines() == [said]
    code, _, err = run(capsys, "train", "--config", str(fast_config), "--out", str(out / MODEL_FILE))
    assert code == 2 and err.strip().splitlines() == [
        f"newstagger train: {out / MODEL_FILE} is a file, not a directory; choose a new --out"
    ]


def test_evaluate_prints_metrics_and_writes_json(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "metrics.json"
    code, out, _ = run(
        capsys,
        "evaluate",
        "--model",
        str(cli_model[0]),
        "--data",
        str(STARTER / "dev.jsonl"),
        "--json",
        str(report),
    )
    assert code == 0
    rows = len((STARTER / "dev.jsonl").read_text(encoding="utf-8").splitlines())
    assert f"model newstagger cli-1 on {rows} rows" in out
    assert "topics: micro-F1" in out and "stance: accuracy" in out and "confusion" in out
    metrics = json.loads(report.read_text())
    topics, stance = metrics["topics"], metrics["stance"]
    assert topics["kind"] == "multi" and topics["n"] == rows
    assert 0.5 < topics["micro"]["f1"] <= 1.0 and 0.0 < topics["macro"]["f1"] <= 1.0
    assert "troop_deployment" in topics["per_label"]
    assert stance["kind"] == "single" and 0.0 < stance["accuracy"] <= 1.0
    matrix = stance["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == rows and len(matrix) == 3
    # the figures on the command line and in the manifest agree
    dev = json.loads((cli_model[0] / MANIFEST_FILE).read_text())["metrics"]["dev"]
    assert dev["topics"]["micro"] == topics["micro"]


def tag_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_evaluate_reports_gold_labels_the_model_does_not_know_and_counts_them_as_errors(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in (STARTER / "dev.jsonl").read_text().splitlines() if line]
    for r in rows[:3]:
        r["stance"] = r["stance"].capitalize()  # "Neutral" for `neutral`
    for r in rows[3:5]:
        r["topics"] = [*r["topics"], "brand_new_topic"]
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "metrics.json"
    code, out, _ = run(
        capsys, "evaluate", "--model", str(cli_model[0]), "--data", str(data), "--json", str(report)
    )
    assert code == 0
    stance, topics = (json.loads(report.read_text())[h] for h in ("stance", "topics"))
    assert stance["n"] == topics["n"] == len(rows)  # no row dropped
    ids = [r["id"] for r in rows]
    assert stance["unknown_gold"]["count"] == 3 and stance["unknown_gold"]["examples"] == ids[:3]
    assert topics["unknown_gold"] == {
        "count": 2,
        "rows": 2,
        "labels": {"brand_new_topic": 2},
        "examples": ids[3:5],
    }
    assert f"stance: accuracy {stance['accuracy']:.4f}" in out
    assert "! 3 gold label(s) in 3 row(s) that the model does not know, counted as errors" in out
    assert "'brand_new_topic' x2" in out
    # the three rows count as wrong (a label no prediction matches); the new topic as missed
    assert sum(map(sum, stance["confusion"]["matrix"])) == len(rows)
    assert stance["per_label"][rows[0]["stance"]]["support"] >= 1
    assert stance["per_label"][rows[0]["stance"]]["f1"] == 0.0
    assert topics["per_label"]["brand_new_topic"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 2,
    }


def test_tag_explain_from_a_file(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(a) + "\n" for a in ARTICLES), encoding="utf-8")
    code, out, _ = run(capsys, "tag", str(src), "--model", str(cli_model[0]), "--explain")
    assert code == 0
    results = tag_lines(out)
    assert [r["id"] for r in results] == ["k1", "k2"]
    first = results[0]
    assert first["model"] == {"name": "newstagger", "version": "cli-1"}
    heads = {h["head"]: h for h in first["heads"]}
    topics = heads["topics"]
    labels = [x["label"] for x in topics["labels"]]
    assert "troop_deployment" in labels
    assert set(topics["explanations"]) == set(labels)
    assert all(topics["explanations"][label] for label in labels)
    stance = heads["stance"]
    [winner] = [x["label"] for x in stance["labels"]]
    assert winner in {"supportive", "critical", "neutral"}
    assert {x["label"] for x in stance["scores"]} == {"supportive", "critical", "neutral"}
    assert winner in stance["explanations"]


def test_tag_from_stdin_with_options(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(ARTICLES[1]) + "\n\n"))
    code, out, _ = run(
        capsys, "tag", "--model", str(cli_model[0]), "--heads", "topics", "--top-k", "1", "--min-score", "0"
    )
    assert code == 0
    [result] = tag_lines(out)
    [topics] = result["heads"]
    assert topics["head"] == "topics"
    assert len(topics["labels"]) == 1
    assert "explanations" not in topics


def test_a_file_after_heads_is_named_as_misplaced(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`tag --heads topics FILE` (the order --help's usage line shows): --heads takes FILE too."""
    articles = tmp_path / "articles.jsonl"
    articles.write_text(json.dumps(ARTICLES[0]) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "tag", "--model", str(cli_model[0]), "--heads", "topics", str(articles))
    assert code == 2 and out == ""
    assert err.strip().endswith(f"({articles} is a file: put FILE before --heads, or after --)"), err
    code, out, _ = run(capsys, "tag", "--model", str(cli_model[0]), "--heads", "topics", "--", str(articles))
    assert code == 0 and [h["head"] for h in tag_lines(out)[0]["heads"]] == ["topics"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "x", "text": ""}', "<stdin>:2: article 'x': text is empty"),
        ('{"id": "x"}', "<stdin>:2: need a JSON object with 'text'"),
        ("not json", "<stdin>:2: invalid JSON"),
        ('[{"text": "a list"}]', "<stdin>:2: need a JSON object with 'text', got an array"),
    ],
)
def test_a_bad_line_gives_an_error_result_in_its_place_or_stops_with_strict(
    cli_model: tuple[Path, str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    line: str,
    message: str,
) -> None:
    good = json.dumps(ARTICLES[0]) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(good + line + "\n" + good))
    code, out, err = run(capsys, "tag", "--model", str(cli_model[0]))
    first, bad, last = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and first["id"] == last["id"] == "k1" and "heads" in last
    assert bad["line"] == 2 and bad["error"].startswith(message)
    assert err == f"newstagger tag: 1 of 3 lines could not be tagged (first: {bad['error']})\n"

    monkeypatch.setattr("sys.stdin", io.StringIO(good + line + "\n" + good))
    code, out, err = run(capsys, "tag", "--model", str(cli_model[0]), "--strict")
    assert code == 2 and [json.loads(x)["id"] for x in out.splitlines()] == ["k1"]
    assert err.startswith(f"newstagger tag: {message}") and err.count("\n") == 1


class ReadSizes(io.StringIO):
    """A stream that records the longest piece any read handed back."""

    longest = 0

    def readline(self, size: int | None = -1, /) -> str:
        line = super().readline(size)
        self.longest = max(self.longest, len(line))
        return line

    def __next__(self) -> str:
        line = super().__next__()
        self.longest = max(self.longest, len(line))
        return line


def test_a_line_over_the_limit_is_an_error_result_and_never_held_whole(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = max_line_chars(1_000_000)  # the default --max-text-bytes
    good = json.dumps(ARTICLES[0]) + "\n"
    huge = '{"id": "big", "text": "' + "a" * (4 * limit) + '"}\n'  # no line break for 4 limits
    stdin = ReadSizes(good + huge + good)
    monkeypatch.setattr("sys.stdin", stdin)
    code, out, err = run(capsys, "tag", "--model", str(cli_model[0]))
    first, bad, last = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and first["id"] == last["id"] == "k1" and "heads" in last
    assert bad == {
        "line": 2,
        "id": None,
        "error": f"<stdin>:2: the line is over {limit:,} characters "
        "(a text may have at most 1,000,000 bytes); not read",
    }
    assert stdin.longest <= limit + 1


def test_tag_prints_each_result_before_the_next_line_arrives(cli_model: tuple[Path, str, str]) -> None:
    """A pipe that delivers one line at a time gets each result at once, not at end of input."""
    with subprocess.Popen(
        [sys.executable, "-m", "service.cli", "tag", "--model", str(cli_model[0]), "--batch-size", "64"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for article in ARTICLES:
                proc.stdin.write(json.dumps(article) + "\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], 60)
                assert ready, f"no result for {article['id']} while stdin is still open"
                assert json.loads(proc.stdout.readline())["id"] == article["id"]
            proc.stdin.close()
            assert proc.wait(30) == 0
        finally:
            proc.kill()


def test_tag_and_evaluate_with_no_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "evaluate", "--model", str(tmp_path), "--data", str(STARTER / "dev.jsonl"))
    assert code == 2 and "no model in" in err and "newstagger train" in err


def test_evaluate_refuses_a_json_path_it_cannot_write_before_scoring(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """It was found only after the model was loaded and every row scored."""
    out = tmp_path / "missing" / "m.json"
    code, _, err = run(
        capsys, "evaluate", "--model", str(tmp_path), "--data", str(STARTER / "dev.jsonl"), "--json", str(out)
    )
    assert code == 2 and f"no directory {out.parent}" in err and "no model in" not in err


def listed(out: str) -> dict[str, str]:
    """`models list` rows by version; the current one starts with '*'."""
    return {line[1:].split()[0]: line for line in out.splitlines() if line[1:].strip()}


def add_version(registry: ModelRegistry, source: Path, version: str, created_at: str) -> None:
    dst = registry.new_version_dir(version)
    shutil.copytree(source, dst)
    manifest = json.loads((dst / MANIFEST_FILE).read_text())
    manifest.update(version=version, created_at=created_at)
    write_manifest(dst, manifest)


def test_models_list_show_promote_rollback(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(registry.root)
    add_version(registry, model_dir, "v2", "2999-01-01T00:00:00Z")
    code, out, _ = run(capsys, "models", "list", "--registry", root)
    assert code == 0
    rows = listed(out)
    assert rows["v1"].startswith("*") and not rows["v2"].startswith("*")
    assert "heads (kind, labels)" in out
    assert rows["v1"].endswith(" topics(multi, 9), stance(single, 3)")

    # a head's kind and target-awareness are shown (the list named only heads and label counts)
    dst = registry.path("v2")
    manifest = json.loads((dst / MANIFEST_FILE).read_text())
    for head in manifest["heads"]:
        if head["name"] == "stance":
            head["target"] = "target"
    write_manifest(dst, manifest)
    code, out, _ = run(capsys, "models", "list", "--registry", root)
    assert listed(out)["v2"].endswith(" topics(multi, 9), stance(single, 3, target-aware: target)")

    code, out, _ = run(capsys, "models", "show", "--registry", root)
    assert code == 0 and json.loads(out)["version"] == "v1"
    code, out, _ = run(capsys, "models", "show", "v2", "--registry", root)
    assert json.loads(out)["version"] == "v2"

    code, out, _ = run(capsys, "models", "promote", "v2", "--registry", root)
    assert code == 0 and "promoted v2" in out
    assert registry.current() == "v2"
    code, out, _ = run(capsys, "models", "list", "--registry", root)
    assert listed(out)["v2"].startswith("*") and not listed(out)["v1"].startswith("*")

    code, out, _ = run(capsys, "models", "rollback", "--registry", root)
    assert code == 0 and "v1 is current" in out
    assert registry.current() == "v1"


def test_models_errors_are_clear(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = str(registry.root)
    code, _, err = run(capsys, "models", "show", "nope", "--registry", root)
    assert code == 2 and "no version 'nope'" in err
    code, _, err = run(capsys, "models", "promote", "../v1", "--registry", root)
    assert code == 2 and registry.current() == "v1"
    code, _, err = run(capsys, "models", "rollback", "--registry", root)
    assert code == 2 and "nothing to roll back" in err
    code, out, _ = run(capsys, "models", "list", "--registry", str(tmp_path / "empty"))
    assert code == 0 and "no models" in out
    # as `models list` says: train into that registry, not into the default one
    code, _, err = run(capsys, "models", "show", "--registry", str(tmp_path / "empty"))
    assert code == 2 and f"run `newstagger train --registry {tmp_path / 'empty'}`" in err


def test_promote_refuses_a_tampered_version(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_version(registry, model_dir, "v2", "2999-01-01T00:00:00Z")
    with (registry.path("v2") / MODEL_FILE).open("ab") as fh:
        fh.write(b"tampered")
    code, _, err = run(capsys, "models", "promote", "v2", "--registry", str(registry.root))
    assert code == 2 and "checksum mismatch" in err
    assert registry.current() == "v1"


class SimulatedCrash(Exception):
    pass


def test_crash_between_writing_a_version_and_promoting_it(
    registry: ModelRegistry,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fast_config: Path,
) -> None:
    root = str(registry.root)
    # debris of an earlier run that died while writing: a hidden staging directory
    stale = registry.versions_dir / ".pending"
    stale.mkdir()
    (stale / MODEL_FILE).write_bytes(b"half a model")

    def crash(
        self: ModelRegistry, version: str, verify: bool = True, allow_head_changes: bool = False
    ) -> None:
        raise SimulatedCrash(version)

    monkeypatch.setattr(ModelRegistry, "promote", crash)
    with pytest.raises(SimulatedCrash) as info:
        main(
            ["train", "--data", str(STARTER / "dev.jsonl"), "--config", str(fast_config), "--registry", root]
        )
    new = str(info.value)
    monkeypatch.undo()
    capsys.readouterr()

    # consistent: the old version is still served, the new one is complete but not current
    assert registry.current() == "v1"
    assert sorted(registry.versions()) == sorted(["v1", new])
    code, out, _ = run(capsys, "models", "list", "--registry", root)
    assert code == 0 and ".pending" not in out
    rows = listed(out)
    assert rows["v1"].startswith("*") and not rows[new].startswith("*")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(ARTICLES[0]) + "\n"))
    code, out, _ = run(capsys, "tag", "--model", root)
    assert code == 0 and tag_lines(out)[0]["model"]["version"] == "v1"

    # and the interrupted promotion can simply be done again
    code, out, _ = run(capsys, "models", "promote", new, "--registry", root)
    assert code == 0 and registry.current() == new
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(ARTICLES[0]) + "\n"))
    code, out, _ = run(capsys, "tag", "--model", root)
    assert tag_lines(out)[0]["model"]["version"] == new


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_what_it_is(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The error named no line (the file was decoded in chunks: a bad third line failed the first
    read) and said nothing of a gzip file: both users' first guesses were wrong."""
    good = (json.dumps(ARTICLES[0]) + "\n").encode()
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(good * 2 + '{"text": "caf\u00e9"}\n'.encode("latin-1"))
    code, out, err = run(capsys, "tag", str(latin1), "--model", str(cli_model[0]))
    assert code == 2 and f"{latin1}:3: not valid UTF-8" in err and "gzip" not in err
    assert len(out.splitlines()) == 2  # the lines before it were tagged
    packed = tmp_path / "articles.jsonl"
    packed.write_bytes(gzip.compress(good))
    code, _, err = run(capsys, "tag", str(packed), "--model", str(cli_model[0]))
    assert code == 2 and f"{packed}:1: not valid UTF-8; this is a gzip file: decompress it first" in err
