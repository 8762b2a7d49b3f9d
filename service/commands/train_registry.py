"""What ``newstagger train`` does with the version it added to a registry: leave it unpromoted
(``--no-promote``), promote it (the default), or promote it only if the quality gate passes
(``--promote-if-better``); either way not if it takes away what the current version serves,
unless ``--allow-head-changes``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service.core.errors import ArtifactError, NewstaggerError
from service.model.errors import HeadsChanged

if TYPE_CHECKING:  # training and the model's modules load lazily
    from service.model.registry import ModelRegistry
    from training.data import RawData

EXIT_REFUSED = 3  # the new version was not promoted: the gate refused it, or it takes heads away


def promote_new_version(
    args: argparse.Namespace,
    registry: ModelRegistry,
    version: str,
    dev: Sequence[Path] | RawData,
    eval_data: RawData | None = None,
    overlap: dict[str, int] | None = None,
) -> int:
    """The exit code of ``train`` once ``version`` is in ``registry`` (``dev``: the --dev rows;
    ``eval_data``: the --eval rows as read before training; ``overlap``: how many rows of each are
    training rows)."""
    root = registry.root
    if args.no_promote:
        print(
            f"added {version} to {root}, not promoted (current: {registry.current() or 'none'}); "
            f"promote it with: newstagger models promote {version} --registry {root}"
        )
        return 0
    if args.promote_if_better:
        return _promote_if_better(args, registry, version, dev, eval_data, (overlap or {}).get("--eval", 0))
    return _promote(args, registry, version)


def _promote(args: argparse.Namespace, registry: ModelRegistry, version: str, why: str = "") -> int:
    """Promote ``version``, or say why not (``why``: the gate's reason; or the heads or labels it
    would take away, see ``ModelRegistry.check_heads``) and how to promote it anyway."""
    root, current = registry.root, registry.current()
    lost: list[str] = []
    try:
        if why:  # refused by the gate: only which flag promoting it anyway needs
            registry.check_heads(version)
        else:  # the heads are checked under the registry's lock, against what is current then
            previous = registry.promote(version, allow_head_changes=args.allow_head_changes)
            print(f"promoted {version} to current in {root} (was: {previous or 'none'})")
            return 0
    except HeadsChanged as exc:
        lost, current = exc.lost, registry.current()
    flag = " --allow-head-changes" if lost else ""  # `models promote` would refuse it without
    print(
        f"newstagger train: refused to promote {version}: {why or '; '.join(lost)}.\n"
        f"  {version} stays in {root}, unpromoted; {current} is still current.\n"
        f"  To promote it anyway: newstagger models promote {version}{flag} --registry {root}",
        file=sys.stderr,
    )
    return EXIT_REFUSED


def _promote_if_better(
    args: argparse.Namespace,
    registry: ModelRegistry,
    version: str,
    dev: Sequence[Path] | RawData,
    eval_data: RawData | None,
    eval_overlap: int,
) -> int:
    from training.config import load_config
    from training.eval_set import load_eval_set
    from training.gate import compare_models, format_comparison
    from training.progress import Progress

    current_version = registry.current()
    # the rows to score are known once both models are read
    progress = Progress.to_stderr(total=1, quiet=args.quiet)
    progress.advance(
        0, f"quality gate: loading {version}" + (f" and {current_version}" if current_version else "")
    )
    new = registry.load(version)
    current = None
    if current_version is not None:
        try:
            current = registry.load(current_version)
        except ArtifactError as exc:
            print(f"warning: the current model does not load, nothing to protect: {exc}", file=sys.stderr)
    config = load_config(args.config)
    eval_set, described = load_eval_set(current, new, config, eval_data or (), dev, eval_overlap)
    if current is not None:
        progress.add_total(2 * len(eval_set.rows) - 1)
        progress.advance(
            0, f"quality gate: scoring {len(eval_set.rows)} rows with {current_version} and {version}"
        )
    try:
        decision = compare_models(
            current,
            new,
            eval_set,
            args.gate_metric,
            args.gate_tolerance,
            described,
            args.allow_head_changes,
            on_rows=progress.advance,
        )
    except ValueError as exc:
        raise NewstaggerError(f"cannot compare {version} with {current_version}: {exc}") from exc
    progress.finish("quality gate: done")
    print(format_comparison(decision))
    return _promote(args, registry, version, "" if decision.promote else decision.reason)
