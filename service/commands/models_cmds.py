"""CLI command `models`: list, show, history, promote and roll back registry versions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.core.errors import NewstaggerError
from service.model.manifest import HeadSpec, Manifest
from service.settings import MODEL_DIR_HELP, default_model_dir

if TYPE_CHECKING:  # the registry loads models (numpy, scikit-learn, skops): imported when run
    from service.model.registry import ModelRegistry


def register(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="List, show, promote or roll back registry versions.",
        description="Manage the model registry: every trained version side by side and a `current` "
        "pointer that the running services follow (see docs/retraining.md).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry", type=Path, default=default_model_dir(), help=f"Registry directory. {MODEL_DIR_HELP}"
    )
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "list",
        help="Every version, the current one marked.",
        description="Every version, the current one marked: when it was created, its dev score, and "
        "its heads, each with its kind (multi- or single-label), its number of labels and, for a "
        "target-aware head, the field it is conditioned on.",
        parents=[common],
    )
    show = actions.add_parser(
        "show", help="One version's manifest.", description="One version's manifest.", parents=[common]
    )
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
    actions.add_parser(
        "history",
        help="Every promotion and rollback, oldest first.",
        description="Every promotion and rollback, oldest first.",
        parents=[common],
    )
    promote = actions.add_parser(
        "promote",
        help="Verify a version and make it current.",
        description="Verify a version and make it current. A version that lacks a head, a head's "
        "kind or a label that the current version has is refused (callers relying on them would "
        "get errors or nothing), unless --allow-head-changes.",
        parents=[common],
    )
    promote.add_argument("version")
    promote.add_argument(
        "--allow-head-changes",
        action="store_true",
        help="Promote even if the version drops heads or labels, or changes a head's kind.",
    )
    actions.add_parser(
        "rollback",
        help="Make the previously current version current again.",
        description="Make the previously current version current again.",
        parents=[common],
    )
    models.set_defaults(handler=_models)


def _models(args: argparse.Namespace) -> int:
    from service.model.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    root = registry.root
    if root.exists() and not root.is_dir():  # else `promote` said "no version", `history` ENOTDIR
        raise NewstaggerError(f"{root}: is a file, not a model registry (a directory)")
    if args.action == "list":
        return _models_list(registry)
    if args.action == "show":
        shown: str | None = args.version or registry.current()
        if shown is None:
            raise NewstaggerError(f"no current model in {root} — run `newstagger train --registry {root}`")
        manifest = registry.manifest(shown)
        if args.export_config:
            from training.config import config_to_toml

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
        previous = registry.promote(args.version, allow_head_changes=args.allow_head_changes)
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
    print(f"{'':2}{'version':<28} {'created':<21} {'dev macro-F1':<14} heads (kind, labels)")
    for version in versions:
        m = registry.manifest(version)
        heads = ", ".join(_head_summary(h) for h in m.heads)
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


def _head_summary(head: HeadSpec) -> str:
    """E.g. ``topics(multi, 9)``, ``stance(single, 3, target-aware: target)``."""
    target = f", target-aware: {head.target}" if head.target else ""
    return f"{head.name}({head.kind}, {len(head.labels)}{target})"


def _dev_score(manifest: Manifest) -> str:
    """Mean dev macro-F1 over the heads, as recorded at training time (the cross-validated
    estimate when there was no dev data)."""
    dev = manifest.metrics.get("dev") or manifest.metrics.get("cv", {})
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
    cv = m.data.get("cv", {})
    grouped = f", grouped by {cv['group_field']!r}" if cv.get("group_field") else ""
    titles = (
        (
            "cv",
            f"cross-validated estimate ({cv.get('folds', 'k')}-fold, out-of-fold scores on "
            f"{m.data.get('train_rows', '?')} training rows{grouped})",
        ),
        (
            "dev",
            f"dev score ({m.data.get('dev_rows', '?')} dev rows, "
            + ("scored only" if "cv" in m.metrics else "the cut-offs were tuned on them: optimistic")
            + (
                f"; WARNING: {m.data['dev_overlap']} of them are also training rows: not held out)"
                if m.data.get("dev_overlap")
                else ")"
            ),
        ),
    )
    for key, title in titles:
        block = m.metrics.get(key, {})
        if not block:
            continue
        lines.append(f"{title}:")
        for head, hm in block.items():
            if hm.get("kind") == "multi":
                micro, macro = hm["micro"]["f1"], hm["macro"]["f1"]
                lines.append(f"  {head}: micro-F1 {micro:.4f}  macro-F1 {macro:.4f}  (n={hm['n']})")
            else:
                lines.append(
                    f"  {head}: accuracy {hm['accuracy']:.4f}  macro-F1 {hm['macro_f1']:.4f}  (n={hm['n']})"
                )
    train_files = [f.get("path") for f in m.data.get("train", []) if isinstance(f, dict)]
    dev_files = [f.get("path") for f in m.data.get("dev", []) if isinstance(f, dict)]
    cmd = "newstagger train --data " + " ".join(str(p) for p in train_files)
    if dev_files:
        cmd += " --dev " + " ".join(str(p) for p in dev_files)
    lines.append("retrain (the same files with the same sha256, the recorded config incl. the seed):")
    lines.append(f"  newstagger models show {m.version} --export-config CONFIG.toml")
    lines.append(f"  {cmd} --config CONFIG.toml")
    return "\n".join(lines)
