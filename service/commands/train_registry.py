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
from service.model.errors import CurrentChanged, HeadsChanged

if TYPE_CHECKING:  # training and the model's modules load lazily
    from service.model.artifact import LoadedModel
    from service.model.registry import ModelRegistry
    from training.config import TrainConfig
    from training.data import RawData
    from training.gate import GateDecision

EXIT_REFUSED = 3  # the new version was not promoted: the gate refused it, or it takes heads away
#: How many times the gate compares again when another promote or rollback changed what is current
#: while it scored, before train gives up (exit 3): each comparison takes seconds, and a current
#: that changes faster than that is an operator at work whose choice it should not override.
GATE_ROUNDS = 3


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
    try:
        if why:  # refused by the gate: only which flag promoting it anyway needs
            registry.check_heads(version)
        else:  # the heads are checked under the registry's lock, against what is current then
            previous = registry.promote(version, allow_head_changes=args.allow_head_changes)
            print(f"promoted {version} to current in {registry.root} (was: {previous or 'none'})")
            return 0
    except HeadsChanged as exc:
        return _refused(registry, version, why, exc.lost)
    return _refused(registry, version, why, [])


def _refused(registry: ModelRegistry, version: str, why: str, lost: list[str]) -> int:
    """Say why ``version`` was not promoted (the gate's reason ``why``, or the heads or labels it
    would take away) and how to promote it anyway."""
    root = registry.root
    flag = " --allow-head-changes" if lost else ""  # `models promote` would refuse it without
    print(
        f"newstagger train: refused to promote {version}: {why or '; '.join(lost)}.\n"
        f"  {version} stays in {root}, unpromoted; {registry.current()} is still current.\n"
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
    """Compare ``version`` with the current version and promote it if the gate passes — over that
    very version: the pointer is switched only if it still names the version compared with when
    the registry's lock is taken (``promote(if_current=...)``). If another promote or rollback
    changed it meanwhile, compare again with the new current (the lock is never held while
    scoring, so a rollback never waits for a gate), at most ``GATE_ROUNDS`` times."""
    from training.config import load_config

    config = load_config(args.config)
    new = registry.load(version)
    compared = registry.current()
    for _ in range(GATE_ROUNDS):
        if compared == version:  # promoted by another command while the gate scored
            print(f"{version} is already current in {registry.root} (promoted meanwhile by another command)")
            return 0
        decision = _compare(args, registry, new, compared, config, dev, eval_data, eval_overlap)
        if decision.promote:
            try:  # over the version compared with, or not at all
                previous = registry.promote(
                    version, allow_head_changes=args.allow_head_changes, if_current=compared
                )
                print(f"promoted {version} to current in {registry.root} (was: {previous or 'none'})")
                return 0
            except HeadsChanged as exc:
                return _refused(registry, version, "", exc.lost)
            except CurrentChanged as exc:
                now = exc.current
        else:
            now = registry.current()
            if now == compared:
                return _promote(args, registry, version, decision.reason)
        print(
            f"newstagger train: {now or 'no version'} became current (was {compared or 'none'}: "
            f"another promote or rollback ran while the quality gate scored); comparing {version} "
            f"with {now or 'nothing'} again",
            file=sys.stderr,
        )
        compared = now
    print(
        f"newstagger train: refused to promote {version}: what is current changed {GATE_ROUNDS} "
        f"times while the quality gate scored (last to {compared or 'no version'}), so {version} "
        f"was never compared with {compared or 'it'}.\n"
        f"  {version} stays in {registry.root}, unpromoted; {compared or 'no version'} is current.\n"
        f"  Compare them once promotions stop (newstagger evaluate --model DIR --data EVAL, each);"
        f" to promote it anyway: newstagger models promote {version} --registry {registry.root}",
        file=sys.stderr,
    )
    return EXIT_REFUSED


def _compare(
    args: argparse.Namespace,
    registry: ModelRegistry,
    new: LoadedModel,
    current_version: str | None,
    config: TrainConfig,
    dev: Sequence[Path] | RawData,
    eval_data: RawData | None,
    eval_overlap: int,
) -> GateDecision:
    """The gate's decision on ``new`` against ``current_version`` (its table printed)."""
    from training.eval_set import load_eval_set
    from training.gate import compare_models, format_comparison
    from training.progress import Progress

    version = new.manifest.version
    # the rows to score are known once both models are read
    progress = Progress.to_stderr(total=1, quiet=args.quiet)
    progress.advance(
        0, f"quality gate: loading {version}" + (f" and {current_version}" if current_version else "")
    )
    current = None
    if current_version is not None:
        try:
            current = registry.load(current_version)
        except ArtifactError as exc:
            print(f"warning: the current model does not load, nothing to protect: {exc}", file=sys.stderr)
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
    return decision
