"""CLI command `tag`: articles as JSONL in, one JSON result per line out, as they are tagged.

Lines are read on their own thread; the tagger takes whatever has arrived (up to
``--batch-size``) as one vectorized call, so a pipe that delivers one line at a time gets each
result at once and a file is tagged in full batches. Output keeps the input order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from service.core.errors import InvalidArticle, InvalidRequest, NewstaggerError
from service.core.types import Article, TagOptions, result_to_json
from service.core.validation import lone_surrogate
from service.settings import MODEL_DIR_HELP, default_model_dir

if TYPE_CHECKING:  # the model's modules (numpy, scikit-learn, skops) load only when tagging
    from service.core.tagger import Tagger

DESCRIPTION = (
    "Tag articles read as JSON lines (an object with 'text' and optional 'id', 'title', 'target' "
    "per line) from FILE or stdin. Each result is printed as soon as it is tagged, one JSON line per "
    'input line, in order. A line that cannot be tagged gives {"line": N, "id": ..., "error": ...} '
    "in its place and the exit code is 1; with --strict the first such line stops the command "
    "(exit 2) after printing the results before it."
)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return number


def register(sub: Any) -> None:
    tag = sub.add_parser(
        "tag", help="Tag articles (JSONL) from a file or stdin, streaming.", description=DESCRIPTION
    )
    tag.add_argument(
        "input", nargs="?", type=Path, default=None, metavar="FILE", help="JSONL file (default: stdin)."
    )
    tag.add_argument(
        "--model",
        type=Path,
        default=default_model_dir(),
        help=f"Artifact or registry directory. {MODEL_DIR_HELP}",
    )
    tag.add_argument("--heads", nargs="+", default=(), metavar="HEAD", help="Only these heads.")
    tag.add_argument("--top-k", type=int, default=0, help="At most K labels per head (0 = no cap).")
    tag.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="One cut-off instead of the multi-label heads' thresholds "
        "(a single-label head always gives its best label).",
    )
    tag.add_argument("--explain", action="store_true", help="Show the terms that pushed each label most.")
    tag.add_argument("--batch-size", type=_positive, default=64, help="Most articles per vectorized call.")
    tag.add_argument("--strict", action="store_true", help="Stop at the first line that cannot be tagged.")
    tag.set_defaults(handler=_tag)


def _parse(line: str, where: str) -> Article:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidArticle(f"{where}: invalid JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        kind = "an array" if isinstance(raw, list) else type(raw).__name__
        raise InvalidArticle(f"{where}: need a JSON object with 'text', got {kind}")
    if not isinstance(raw.get("text"), str):
        raise InvalidArticle(f"{where}: need a JSON object with 'text' (a string)")
    fields = [raw.get(k) or "" for k in ("title", "target")]
    if not all(isinstance(f, str) for f in fields):
        raise InvalidArticle(f"{where}: 'title' and 'target' must be strings")
    return Article(str(raw.get("id", where.rsplit(":", 1)[-1])), raw["text"], *fields)


Line = tuple[int, str | None]  # None: a line over the limit, read past but not kept


def max_line_chars(max_text_bytes: int) -> int:
    """The longest input line read: a text at the limit written with JSON escapes (at most six
    characters a byte: \\u0001), and room for the id, title and target."""
    return 6 * max_text_bytes + 64 * 1024


def _lines(stream: TextIO, limit: int) -> Iterator[str | None]:
    """Each line of ``stream``, or None for one over ``limit`` characters: never held whole, so a
    gigabyte without a line break costs no more memory than a line at the limit."""
    while line := stream.readline(limit + 1):
        if len(line) <= limit or line.endswith("\n"):
            yield line
            continue
        while (rest := stream.readline(limit)) and not rest.endswith("\n"):
            pass
        yield None


class NotText(NewstaggerError):
    """A line of the input file is not UTF-8 text."""


def _batches(stream: TextIO, size: int, source: str, limit: int) -> Iterator[list[Line]]:
    """Non-blank lines in batches of what has arrived (at least one, at most ``size``). A file is
    read with its undecodable bytes escaped (``surrogateescape``), so the first such line is named."""
    lines: queue.Queue[Line | Exception | None] = queue.Queue(maxsize=4 * size)
    escaped = getattr(stream, "errors", "") == "surrogateescape" and stream is not sys.stdin

    def read() -> None:
        try:
            for lineno, line in enumerate(_lines(stream, limit), start=1):
                if escaped and line is not None and lone_surrogate(line) is not None:
                    raise NotText(f"{source}:{lineno}: not valid UTF-8")
                if line is None or line.strip():
                    lines.put((lineno, line))
        except NotText as exc:
            lines.put(exc)
        except (OSError, UnicodeDecodeError) as exc:  # handed to the main thread to report
            lines.put(exc)
        finally:
            lines.put(None)

    threading.Thread(target=read, name="tag-reader", daemon=True).start()
    batch: list[Line] = []
    while True:
        item = lines.get() if not batch else _next_now(lines)
        if isinstance(item, tuple):
            batch.append(item)
            if len(batch) < size:
                continue
        if batch:
            yield batch
            batch = []
        if isinstance(item, NotText):
            raise item
        if isinstance(item, Exception):
            raise NewstaggerError(f"{source}: cannot read: {item}") from item
        if item is None:
            return


def _next_now(lines: queue.Queue[Line | Exception | None]) -> Line | Exception | None | bool:
    """The next item if one has arrived, else False (the batch so far is ready to go)."""
    try:
        return lines.get_nowait()
    except queue.Empty:
        return False


def _tag(args: argparse.Namespace) -> int:
    from service.core.tagger import Tagger
    from service.model.locate import load_model

    tagger = Tagger(load_model(args.model))
    options = TagOptions(tuple(args.heads), args.top_k, args.min_score, args.explain)
    try:
        tagger.check_options(options)
    except InvalidRequest as exc:
        # `tag --heads topics articles.jsonl`: --heads took the file too (it takes every word after it)
        files = [h for h in args.heads if args.input is None and Path(h).is_file()]
        if files:
            hint = f"{files[0]} is a file: put FILE before --heads, or after --"
            raise InvalidRequest(f"{exc} ({hint})") from None
        raise
    if args.input is None:
        source, opened = "<stdin>", contextlib.nullcontext(sys.stdin)
    elif args.input.is_dir():
        raise NewstaggerError(f"{args.input}: is a directory, not a JSONL file")
    else:
        source, opened = str(args.input), args.input.open(encoding="utf-8", errors="surrogateescape")
    try:
        with opened as stream:
            failed, first_error, total = _tag_stream(
                tagger, options, stream, source, args.batch_size, args.strict
            )
    except NotText as exc:
        from training.records import not_utf8_hint

        with args.input.open("rb") as raw:  # a file: stdin is never read escaped
            raise NotText(f"{exc}{not_utf8_hint(raw.read(4))}") from None
    if failed:
        print(
            f"newstagger tag: {failed} of {total} lines could not be tagged (first: {first_error})",
            file=sys.stderr,
        )
        return 1
    return 0


def _tag_stream(
    tagger: Tagger, options: TagOptions, stream: TextIO, source: str, batch_size: int, strict: bool
) -> tuple[int, str, int]:
    """Tag and print batch by batch; returns (failed lines, the first error, lines seen)."""
    failed, first_error, total = 0, "", 0
    limit = max_line_chars(tagger.max_text_bytes)
    for batch in _batches(stream, batch_size, source, limit):
        items: list[Article | dict[str, Any]] = []
        for lineno, line in batch:
            where = f"{source}:{lineno}"
            article = None
            try:
                if line is None:
                    raise InvalidArticle(
                        f"{where}: the line is over {limit:,} characters (a text may have at most "
                        f"{tagger.max_text_bytes:,} bytes); not read"
                    )
                article = _parse(line, where)
                tagger.validate(article)
                items.append(article)
            except InvalidArticle as exc:
                message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
                if strict:
                    _print(tagger, options, items)  # what came before, then stop
                    raise InvalidArticle(message) from None
                failed, first_error = failed + 1, first_error or message
                items.append({"line": lineno, "id": article and article.id, "error": message})
        _print(tagger, options, items)
        total += len(batch)
    return failed, first_error, total


def _print(tagger: Tagger, options: TagOptions, items: list[Article | dict[str, Any]]) -> None:
    """Tag the articles among ``items`` in one call; print every item's line in order."""
    results = iter(tagger.tag([a for a in items if isinstance(a, Article)], options))
    out = [result_to_json(next(results)) if isinstance(i, Article) else i for i in items]
    sys.stdout.write("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in out))
    sys.stdout.flush()
