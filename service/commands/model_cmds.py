"""CLI commands that work on models and data: train, evaluate, tag, models."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from service.core.errors import ArtifactError, InvalidArticle, NewstaggerError
from service.core.tagger import Tagger
from service.core.types import Article, TagOptions, TagResult
from service.model.artifact import Manifest, load_artifact
from service.model.registry import ModelRegistry, resolve_model_path

FORMATTER = argparse.ArgumentDefaultsHelpFormatter
GATE_METRICS = ("macro_f1", "micro_f1")  # training.gate.METRICS (not imported: training loads lazily)
EXIT_REFUSED = 3  # train --promote-if-better refused the new version


def _non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 0")
    return number


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
    gate = train.add_argument_group("registry and quality gate (see docs/retraining.md)")
    when = gate.add_mutually_exclusive_group()
    when.add_argument(
        "--promote-if-better",
        action="store_true",
        help="Promote the new version only if it is not worse than the current one on the evaluation "
        "set (beyond --gate-tolerance); print the comparison either way; exit 3 when refused.",
    )
    when.add_argument(
        "--no-promote",
        action="store_true",
        help="Only add the new version to the registry; `newstagger models promote` it later.",
    )
    gate.add_argument(
        "--eval",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="Evaluation set of the gate (default: the --dev files, else the held-out part of --data).",
    )
    gate.add_argument(
        "--gate-metric",
        choices=sorted(GATE_METRICS),
        default="macro_f1",
        help="Per-head metric, averaged over the heads both models share.",
    )
    gate.add_argument(
        "--gate-tolerance",
        type=_non_negative,
        default=0.0,
        metavar="X",
        help="How much worse (absolute, e.g. 0.01) the new model may be and still be promoted.",
    )
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
    show.add_argument(
        "--summary",
        action="store_true",
        help="A readable summary (heads, thresholds, data files with sha256, seed, dev metrics, "
        "how to retrain) instead of the manifest's JSON.",
    )
    show.add_argument(
        "--export-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="Write the version's training config (seed included) as TOML, for `train --config FILE`.",
    )
    actions.add_parser("history", help="Every promotion and rollback, oldest first.", parents=[common])
    promote = actions.add_parser("promote", help="Verify a version and make it current.", parents=[common])
    promote.add_argument("version")
    actions.add_parser(
        "rollback", help="Make the previously current version current again.", parents=[common]
    )
    models.set_defaults(handler=_models)


def _train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.train import STARTER_DIR, train

    if args.out and (args.promote_if_better or args.no_promote):
        raise NewstaggerError("--promote-if-better and --no-promote work on a --registry, not with --out")
    config = load_config(args.config)
    data, dev = args.data, args.dev
    if data is None:
        data, dev = [STARTER_DIR / "train.jsonl"], dev or [STARTER_DIR / "dev.jsonl"]
    registry = None if args.out else ModelRegistry(args.registry)
    # Without --version the version is known only once the model is saved: write it under a
    # hidden name unique to this run (a crashed or concurrent run cannot block it; the registry
    # ignores hidden names), then rename it into place. Whatever happens, no staging is left.
    pending = f".pending-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    out = args.out if registry is None else registry.new_version_dir(args.version or pending)
    try:
        manifest = train(data, out, config, dev or (), args.heads, args.version)
        if registry is not None and out.name == pending:
            final = registry.new_version_dir(manifest.version)
            try:
                out.rename(final)
            except OSError as exc:
                raise ArtifactError(
                    f"cannot add version {manifest.version} to {registry.root}: {exc}"
                ) from exc
            out = final
    finally:
        if out.name == pending:
            shutil.rmtree(out, ignore_errors=True)
    print(f"model {manifest.name} {manifest.version} written to {out}")
    if registry is None:
        return 0
    version, root = manifest.version, registry.root
    if args.no_promote:
        print(
            f"added {version} to {root}, not promoted (current: {registry.current() or 'none'}); "
            f"promote it with: newstagger models promote {version} --registry {root}"
        )
        return 0
    if args.promote_if_better:
        return _promote_if_better(args, registry, version, data, dev or ())
    previous = registry.promote(version)
    print(f"promoted {version} to current in {root} (was: {previous or 'none'})")
    return 0


def _promote_if_better(
    args: argparse.Namespace, registry: ModelRegistry, version: str, data: list[Path], dev: Sequence[Path]
) -> int:
    from training.config import load_config
    from training.gate import compare_models, format_comparison, load_eval_set

    new = load_artifact(registry.path(version))
    current_version = registry.current()
    current = None
    if current_version is not None:
        try:
            current = load_artifact(registry.path(current_version))
        except ArtifactError as exc:
            print(f"warning: the current model does not load, nothing to protect: {exc}", file=sys.stderr)
    eval_set, described = load_eval_set(current, new, load_config(args.config), args.eval or (), dev, data)
    print(f"evaluation set: {described}")
    try:
        decision = compare_models(current, new, eval_set, args.gate_metric, args.gate_tolerance)
    except ValueError as exc:
        raise NewstaggerError(f"cannot compare {version} with {current_version}: {exc}") from exc
    print(format_comparison(decision))
    root = registry.root
    if not decision.promote:
        print(
            f"newstagger train: refused to promote {version}: {decision.reason}.\n"
            f"  {version} stays in {root}, unpromoted; {current_version} is still current.\n"
            f"  To promote it anyway: newstagger models promote {version} --registry {root}",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    previous = registry.promote(version)
    print(f"promoted {version} to current in {root} (was: {previous or 'none'})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.config import HeadConfig, load_config
    from training.data import label_fields, load_dataset
    from training.evaluate import evaluate_model, format_report

    loaded = load_artifact(resolve_model_path(args.model))
    present = label_fields(args.data)
    heads = {
        h.name: HeadConfig(kind=h.kind, target=h.target) for h in loaded.manifest.heads if h.name in present
    }
    if not heads:
        names = ", ".join(h.name for h in loaded.manifest.heads)
        raise NewstaggerError(f"the data has none of the model's heads ({names}) to evaluate")
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
        batch = articles[start : start + args.batch_size]
        for article in batch:
            tagger.validate(article, options)
        for result in tagger.tag(batch, options):
            print(json.dumps(result_to_json(result), ensure_ascii=False))
    return 0


def _models(args: argparse.Namespace) -> int:
    registry = ModelRegistry(args.registry)
    root = registry.root
    if args.action == "list":
        return _models_list(registry)
    if args.action == "show":
        shown: str | None = args.version or registry.current()
        if shown is None:
            raise NewstaggerError(f"no current model in {root} — run `newstagger train`")
        manifest = registry.manifest(shown)
        if args.export_config:
            args.export_config.write_text(config_to_toml(manifest.config), encoding="utf-8")
            print(f"wrote the training config of {shown} to {args.export_config}", file=sys.stderr)
        if args.summary:
            print(_describe(manifest, registry.path(shown), shown == registry.current()))
        else:
            print(json.dumps(manifest.to_json(), indent=2))
        return 0
    if args.action == "history":
        entries = registry.entries()
        if not entries:
            print(f"no promotions yet in {root}")
        for entry in entries:
            print(f"{entry.time}  {entry.action:<8}  {entry.version}")
        return 0
    if args.action == "promote":
        previous = registry.promote(args.version)
        if previous == args.version:
            print(f"{args.version} is already current in {root} (verified)")
        else:
            print(f"promoted {args.version} to current in {root} (was: {previous or 'none'})")
        return 0
    previous = registry.current()
    version = registry.rollback()
    print(f"rolled back: {version} is current in {root} (was: {previous})")
    return 0


def _models_list(registry: ModelRegistry) -> int:
    current = registry.current()
    versions = registry.versions()
    broken = registry.broken()
    if not versions and not broken:
        print(f"no models in {registry.root} — run `newstagger train --registry {registry.root}`")
        return 0
    print(f"{'':2}{'version':<28} {'created':<21} {'dev macro-F1':<14} heads (labels)")
    for version in versions:
        m = registry.manifest(version)
        heads = ", ".join(f"{h.name}({len(h.labels)})" for h in m.heads)
        print(
            f"{'*' if version == current else ' ':2}{version:<28} {m.created_at:<21} "
            f"{_dev_score(m):<14} {heads}"
        )
    for name, reason in sorted(broken.items()):
        print(f"{'!':2}{name:<28} BROKEN: {reason}")
    if current is None:
        print("no current version: `newstagger models promote VERSION`")
    elif current not in versions:
        print(f"current points to {current!r}, which is missing or broken: promote or roll back")
    else:
        print("* = current (what the services load)")
    leftovers = registry.leftovers()
    if leftovers:
        print(
            f"{len(leftovers)} hidden staging leftover(s) of interrupted writes in {registry.root} "
            "(ignored; safe to delete when no training runs)"
        )
    return 0


def _dev_score(manifest: Manifest) -> str:
    """Mean dev macro-F1 over the heads, as recorded at training time."""
    dev = manifest.metrics.get("dev", {})
    values = []
    for m in dev.values():
        if isinstance(m, dict):
            value = m.get("macro", {}).get("f1") if m.get("kind") == "multi" else m.get("macro_f1")
            if isinstance(value, int | float):
                values.append(float(value))
    return f"{sum(values) / len(values):.4f}" if values else "-"


def _describe(m: Manifest, path: Path, is_current: bool) -> str:
    """``models show``: what a person needs to know about a version, and how to retrain it."""
    lines = [
        f"version      {m.version}{'  (current)' if is_current else ''}",
        f"name         {m.name}",
        f"path         {path}",
        f"created      {m.created_at}",
        f"model sha256 {m.model_sha256}",
        "versions     " + ", ".join(f"{k} {v}" for k, v in m.versions.items()),
        f"seed         {m.config.get('seed', '-')}",
        "heads:",
    ]
    for h in m.heads:
        target = f", conditioned on {h.target!r}" if h.target else ""
        lines.append(f"  {h.name} ({h.kind}-label{target}): {len(h.labels)} labels")
        if h.kind == "multi":
            pairs = (f"{label}@{t:g}" for label, t in zip(h.labels, h.thresholds, strict=True))
            lines.append("    " + ", ".join(pairs))
        else:
            lines.append("    " + ", ".join(h.labels))
    lines.append("data:")
    for role in ("train", "dev"):
        files = m.data.get(role)
        if isinstance(files, list):
            for f in files:
                lines.append(f"  {role:<5} {f.get('path')}  rows {f.get('rows')}  sha256 {f.get('sha256')}")
        elif files:
            lines.append(f"  {role:<5} {files}")
    dev = m.metrics.get("dev", {})
    if dev:
        lines.append("dev metrics:")
        for head, hm in dev.items():
            if hm.get("kind") == "multi":
                lines.append(f"  {head}: micro-F1 {hm['micro']['f1']:.4f}  macro-F1 {hm['macro']['f1']:.4f}")
            else:
                lines.append(f"  {head}: accuracy {hm['accuracy']:.4f}  macro-F1 {hm['macro_f1']:.4f}")
    train_files = [f.get("path") for f in m.data.get("train", []) if isinstance(f, dict)]
    dev_files = [f.get("path") for f in m.data.get("dev", []) if isinstance(f, dict)]
    cmd = "newstagger train --data " + " ".join(str(p) for p in train_files)
    if dev_files:
        cmd += " --dev " + " ".join(str(p) for p in dev_files)
    lines.append("retrain (the same files with the same sha256, the recorded config incl. the seed):")
    lines.append(f"  newstagger models show {m.version} --export-config CONFIG.toml")
    lines.append(f"  {cmd} --config CONFIG.toml")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def config_to_toml(config: dict[str, Any]) -> str:
    """A manifest's training config as the TOML ``train --config`` reads (tables one level deep,
    ``heads`` as ``[heads.NAME]``)."""
    top = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    tables = []
    for key, value in config.items():
        if not isinstance(value, dict):
            continue
        if key == "heads":
            for name, head in value.items():
                tables.append(f"\n[heads.{json.dumps(name)}]")
                tables += [f"{k} = {_toml_value(v)}" for k, v in head.items()]
        else:
            tables.append(f"\n[{key}]")
            tables += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(top + tables) + "\n"
