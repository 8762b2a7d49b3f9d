"""`newstagger tag` end to end: --explain, stdin and options, misplaced files, a bad or overlong
line answered in its place (or stopping with --strict), results streamed line by line, and input
that is not UTF-8 named with its line."""

from __future__ import annotations

import gzip
import io
import json
import select
import subprocess
import sys
from pathlib import Path

import pytest

from service.commands.tag_cmd import max_line_chars
from tests.conftest import run_cli
from tests.helpers import TAG_ARTICLES, tag_lines


def test_tag_explain_from_a_file(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(a) + "\n" for a in TAG_ARTICLES), encoding="utf-8")
    code, out, _ = run_cli(capsys, "tag", str(src), "--model", str(cli_model[0]), "--explain")
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
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(TAG_ARTICLES[1]) + "\n\n"))
    code, out, _ = run_cli(
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
    articles.write_text(json.dumps(TAG_ARTICLES[0]) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "tag", "--model", str(cli_model[0]), "--heads", "topics", str(articles))
    assert code == 2 and out == ""
    assert err.strip().endswith(f"({articles} is a file: put FILE before --heads, or after --)"), err
    code, out, _ = run_cli(
        capsys, "tag", "--model", str(cli_model[0]), "--heads", "topics", "--", str(articles)
    )
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
    good = json.dumps(TAG_ARTICLES[0]) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(good + line + "\n" + good))
    code, out, err = run_cli(capsys, "tag", "--model", str(cli_model[0]))
    first, bad, last = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and first["id"] == last["id"] == "k1" and "heads" in last
    assert bad["line"] == 2 and bad["error"].startswith(message)
    assert err == f"newstagger tag: 1 of 3 lines could not be tagged (first: {bad['error']})\n"

    monkeypatch.setattr("sys.stdin", io.StringIO(good + line + "\n" + good))
    code, out, err = run_cli(capsys, "tag", "--model", str(cli_model[0]), "--strict")
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
    good = json.dumps(TAG_ARTICLES[0]) + "\n"
    huge = '{"id": "big", "text": "' + "a" * (4 * limit) + '"}\n'  # no line break for 4 limits
    stdin = ReadSizes(good + huge + good)
    monkeypatch.setattr("sys.stdin", stdin)
    code, out, err = run_cli(capsys, "tag", "--model", str(cli_model[0]))
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
            for article in TAG_ARTICLES:
                proc.stdin.write(json.dumps(article) + "\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], 60)
                assert ready, f"no result for {article['id']} while stdin is still open"
                assert json.loads(proc.stdout.readline())["id"] == article["id"]
            proc.stdin.close()
            assert proc.wait(30) == 0
        finally:
            proc.kill()


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_what_it_is(
    cli_model: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The error named no line (the file was decoded in chunks: a bad third line failed the first
    read) and said nothing of a gzip file: both users' first guesses were wrong."""
    good = (json.dumps(TAG_ARTICLES[0]) + "\n").encode()
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(good * 2 + '{"text": "caf\u00e9"}\n'.encode("latin-1"))
    code, out, err = run_cli(capsys, "tag", str(latin1), "--model", str(cli_model[0]))
    assert code == 2 and f"{latin1}:3: not valid UTF-8" in err and "gzip" not in err
    assert len(out.splitlines()) == 2  # the lines before it were tagged
    packed = tmp_path / "articles.jsonl"
    packed.write_bytes(gzip.compress(good))
    code, _, err = run_cli(capsys, "tag", str(packed), "--model", str(cli_model[0]))
    assert code == 2 and f"{packed}:1: not valid UTF-8; this is a gzip file: decompress it first" in err
