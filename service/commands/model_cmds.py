"""CLI commands that work on models and data: train, evaluate, tag, models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from service.core.errors import InvalidArticle, NewstaggerError
from service.core.tagger import Tagger
from service.core.types import Article, TagOptions, TagResult
from service.model.artifact import load_artifact
from service.model.registry import ModelRegistry, resolve_model_path

FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def register(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="Train a model from labelled data (no data: the starter set).",
        description="Train a model from labelled JSONL/CSV data and write a versioned "
        "artifact. With no --data, trains the default model from the shipped starter set.",
        formatter_class=FORMATTER,
    )
    train.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="Training files (JSONL or CSV), merged in order; later files win for the same id. "
        "Default: the shipped starter set.",
    )
    train.add_argument(
        "--dev",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="Dev files for threshold tuning and metrics (default: hold out part of --data).",
    )
    train.add_argument(
        "--config", type=Path, default=None, help="Training config (TOML); see training/config.py."
    )
    train.add_argument(
        "--heads",
        nargs="+",
        default=(),
        metavar="HEAD",
        help="Label fields to train as heads (default: every label field in the data).",
    )
    train.add_argument("--out", type=Path, default=None, help="Write the artifact to this new directory.")
    train.add_argument(
        "--registry",
        type=Path,
        default=Path("models"),
        help="Add the model to this registry (ignored with --out).",
    )
    train.add_argument("--version", default="", help="Model version (default: UTC time + checksum).")
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser(
        "evaluate", help="Print per-head metrics of a model on labelled data.", formatter_class=FORMATTER
    )
    evaluate.add_argument(
        "--model", type=Path, default=Path("models"), help="Artifact or registry directory."
    )
    evaluate.add_argument(
        "--data", type=Path, nargs="+", required=True, metavar="FILE", help="Labelled data."
    )
    evaluate.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="Also write the metrics as JSON."
    )
    evaluate.set_defaults(handler=_evaluate)

    tag = sub.add_parser(
        "tag",
        help="Tag articles (JSONL) from a file or stdin; one JSON result per line.",
        formatter_class=FORMATTER,
    )
    tag.add_argument("input", nargs="?", type=Path, default=None, help="JSONL file (default: stdin).")
    tag.add_argument("--model", type=Path, default=Path("models"), help="Artifact or registry directory.")
    tag.add_argument("--heads", nargs="+", default=(), metavar="HEAD", help="Only these heads.")
    tag.add_argument("--top-k", type=int, default=0, help="At most K labels per head (0 = no cap).")
    tag.add_argument("--min-score", type=float, default=None, help="Override the thresholds with one score.")
    tag.add_argument("--explain", action="store_true", help="Show the terms that pushed each label most.")
    tag.add_argument("--batch-size", type=int, default=64, help="Articles per vectorized call.")
    tag.set_defaults(handler=_tag)

    models = sub.add_parser(
        "models", help="List, show, promote or roll back registry versions.", formatter_class=FORMATTER
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", type=Path, default=Path("models"), help="Registry directory.")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="Every version, the current one marked.", parents=[common])
    show = actions.add_parser("show", help="One version's manifest.", parents=[common])
    show.add_argument("version", nargs="?", default=None, help="Version (default: current).")
    promote = actions.add_parser("promote", help="Verify a version and make it current.", parents=[common])
    promote.add_argument("version")
    actions.add_parser(
        "rollback", help="Make the previously current version current again.", parents=[common]
    )
    models.set_defaults(handler=_models)


def _train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.train import STARTER_DIR, train

    config = load_config(args.config)
    data, dev = args.data, args.dev
    if data is None:
        data, dev = [STARTER_DIR / "train.jsonl"], dev or [STARTER_DIR / "dev.jsonl"]
    registry = None if args.out else ModelRegistry(args.registry)
    if args.out:
        out = args.out
    elif registry is not None:
        out = registry.new_version_dir(args.version or ".pending")
    manifest = train(data, out, config, dev or (), args.heads, args.version)
    if registry is not None and out.name == ".pending":
        final = registry.new_version_dir(manifest.version)
        out.rename(final)
        out = final
    print(f"model {manifest.name} {manifest.version} written to {out}")
    if registry is not None:
        registry.promote(manifest.version)
        print(f"promoted {manifest.version} to current in {registry.root}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.config import HeadConfig, load_config
    from training.data import load_dataset
    from training.evaluate import evaluate_model, format_report

    loaded = load_artifact(resolve_model_path(args.model))
    heads = {h.name: HeadConfig(kind=h.kind, target=h.target) for h in loaded.manifest.heads}
    data = load_dataset(args.data, load_config(None), heads=heads)
    metrics = evaluate_model(loaded, data)
    print(f"model {loaded.manifest.name} {loaded.manifest.version} on {len(data.rows)} rows")
    print(format_report(metrics))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def result_to_json(result: TagResult) -> dict[str, Any]:
    heads: dict[str, Any] = {}
    for head in result.heads:
        entry: dict[str, Any] = {"labels": [{"label": s.label, "score": s.score} for s in head.labels]}
        if head.kind == "single":
            entry["label"] = head.labels[0].label if head.labels else None
            entry["distribution"] = {s.label: s.score for s in head.scores}
        if head.explanations:
            entry["explanations"] = {k: list(v) for k, v in head.explanations.items()}
        heads[head.head] = entry
    return {
        "id": result.article_id,
        "heads": heads,
        "model": {"name": result.model_name, "version": result.model_version},
    }


def _read_articles(stream: TextIO, source: str) -> list[Article]:
    articles = []
    for lineno, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
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
        batch = articles[start : start + args.batch_size]
        for article in batch:
            tagger.validate(article, options)
        for result in tagger.tag(batch, options):
            print(json.dumps(result_to_json(result), ensure_ascii=False))
    return 0


def _models(args: argparse.Namespace) -> int:
    registry = ModelRegistry(args.registry)
    if args.action == "list":
        current = registry.current()
        versions = registry.versions()
        if not versions:
            print(f"no models in {registry.root} — run `newstagger train`")
            return 0
        print(f"{'':2}{'version':<28} {'created':<21} heads")
        for version in versions:
            m = registry.manifest(version)
            heads = ", ".join(f"{h.name}({len(h.labels)})" for h in m.heads)
            print(f"{'*' if version == current else ' ':2}{version:<28} {m.created_at:<21} {heads}")
        return 0
    if args.action == "show":
        shown: str | None = args.version or registry.current()
        if shown is None:
            raise NewstaggerError(f"no current model in {registry.root}")
        print(json.dumps(registry.manifest(shown).to_json(), indent=2))
        return 0
    if args.action == "promote":
        registry.promote(args.version)
        print(f"promoted {args.version} to current in {registry.root}")
        return 0
    version = registry.rollback()
    print(f"rolled back: {version} is current in {registry.root}")
    return 0
