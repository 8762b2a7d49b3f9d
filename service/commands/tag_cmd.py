"""CLI command `tag`: articles as JSONL in, one JSON result per article out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from service.core.errors import InvalidArticle
from service.core.tagger import Tagger
from service.core.types import Article, TagOptions, result_to_json
from service.model.artifact import load_artifact
from service.model.registry import resolve_model_path
from service.settings import MODEL_DIR_HELP, default_model_dir

FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def register(sub: Any) -> None:
    tag = sub.add_parser(
        "tag",
        help="Tag articles (JSONL) from a file or stdin; one JSON result per line.",
        formatter_class=FORMATTER,
    )
    tag.add_argument("input", nargs="?", type=Path, default=None, help="JSONL file (default: stdin).")
    tag.add_argument(
        "--model",
        type=Path,
        default=default_model_dir(),
        help=f"Artifact or registry directory. {MODEL_DIR_HELP}",
    )
    tag.add_argument("--heads", nargs="+", default=(), metavar="HEAD", help="Only these heads.")
    tag.add_argument("--top-k", type=int, default=0, help="At most K labels per head (0 = no cap).")
    tag.add_argument("--min-score", type=float, default=None, help="Override the thresholds with one score.")
    tag.add_argument("--explain", action="store_true", help="Show the terms that pushed each label most.")
    tag.add_argument("--batch-size", type=int, default=64, help="Articles per vectorized call.")
    tag.set_defaults(handler=_tag)


def _read_articles(stream: TextIO, source: str) -> list[Article]:
    articles = []
    for lineno, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            if not isinstance(raw.get("text"), str):
                raise TypeError("'text' must be a string")
            articles.append(
                Article(
                    str(raw.get("id", lineno)), raw["text"], raw.get("title") or "", raw.get("target") or ""
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidArticle(f"{source}:{lineno}: need a JSON object with 'text' ({exc})") from exc
    return articles


def _tag(args: argparse.Namespace) -> int:
    tagger = Tagger(load_artifact(resolve_model_path(args.model)))
    options = TagOptions(tuple(args.heads), args.top_k, args.min_score, args.explain)
    if args.input is None:
        articles = _read_articles(sys.stdin, "<stdin>")
    else:
        with args.input.open(encoding="utf-8") as fh:
            articles = _read_articles(fh, str(args.input))
    for start in range(0, len(articles), args.batch_size):
        for result in tagger.tag(articles[start : start + args.batch_size], options):
            print(json.dumps(result_to_json(result), ensure_ascii=False))
    return 0
