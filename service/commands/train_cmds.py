"""CLI command `train`: its options, what is refused before training, the training (what happens to
the new version in a registry: `service.commands.train_registry`)."""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.commands.train_registry import promote_new_version
from service.core.errors import ArtifactError, NewstaggerError
from service.settings import MODEL_DIR_HELP, default_model_dir

if TYPE_CHECKING:  # the model's modules (numpy, scikit-learn, skops) load only when training
    from service.model.registry import ModelRegistry

GATE_METRICS = ("macro_f1", "micro_f1")  # training.gate.METRICS (not imported: training loads lazily)


def _non_negative(value: str) -> float:
    number = float(value)
    if not 0 <= number < math.inf:  # a NaN tolerance refused every model, an infinite one none
        raise argparse.ArgumentTypeError(f"{value}: must be a finite number >= 0")
    return number


def _positive(value: str) -> float:
    number = float(value)
    if not 0 < number < math.inf:
        raise argparse.ArgumentTypeError(f"{value}: must be a finite number > 0")
    return number


def register(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="Train a model from labelled data (no data: the starter set).",
        description="Train a model from labelled JSONL/CSV data and write a versioned "
        "artifact. With no --data, trains the default model from the shipped starter set "
        "(with its config, training/starter/config.toml, unless --config is given).",
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
        help="Dev files, only scored: the dev score is reported beside the cross-validated estimate "
        "(with thresholds.cv_folds = 0 in the config: tuned on instead; default: no dev score).",
    )
    train.add_argument(
        "--allow-dev-overlap",
        action="store_true",
        help="Go on when more than 5%% of the --dev or --eval rows are also training rows (same "
        "id, or same title and text): warn and record the count (refused otherwise, before "
        "training: exit 2; 5%% or fewer are always warned about and recorded).",
    )
    train.add_argument(
        "--group-field",
        default=None,
        metavar="FIELD",
        help="Group the cross-validation folds by this row field (e.g. a story or body id): rows "
        "sharing a value never straddle folds. Every training row needs it; it is never a head. "
        "Overrides group_field in the config.",
    )
    train.add_argument(
        "--quiet", action="store_true", help="No progress on stderr (the results still go to stdout)."
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
        default=default_model_dir(),
        help=f"Add the model to this registry (ignored with --out). {MODEL_DIR_HELP}",
    )
    train.add_argument(
        "--version",
        default="",
        help="Model version: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "not already in the registry (default: UTC time + checksum).",
    )
    tune = train.add_argument_group("search for a configuration (see docs/retraining.md)")
    tune.add_argument(
        "--tune",
        action="store_true",
        help="Before training, search n-grams, stop words, classifier, C, class weights, thresholds and "
        "target-awareness by cross-validation on --data (starting from --config or the defaults), "
        "print each candidate, train with the best and write it as config.toml beside the model card.",
    )
    tune.add_argument(
        "--tune-budget-seconds",
        type=_positive,
        default=None,
        metavar="N",
        help="Seconds for the whole run (default 780): the search stops in time to leave about 30%% "
        "for the final training, which is not cut short.",
    )
    gate = train.add_argument_group("registry and quality gate (see docs/retraining.md)")
    when = gate.add_mutually_exclusive_group()
    when.add_argument(
        "--promote-if-better",
        action="store_true",
        help="Promote the new version only if it is not worse than the current one on the --eval (else "
        "--dev) rows, beyond --gate-tolerance; print the comparison either way; exit 3 when refused.",
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
        help="Evaluation set of the gate: rows neither model trained on (default: the --dev files; "
        "--promote-if-better needs one or the other).",
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
        help="How much worse (absolute, e.g. 0.01) the new model may be and still be promoted (default 0).",
    )
    gate.add_argument(
        "--allow-head-changes",
        action="store_true",
        help="Promote even if the new version lacks a head, a head's kind or a label that the current "
        "version has (refused otherwise: exit 3, the version stays unpromoted).",
    )
    train.set_defaults(handler=_train)


def _current_heads(registry: ModelRegistry) -> dict[str, str] | None:
    """The current version's heads and their kinds (None: no current version, or one that does not
    read, which the gate does not compare with)."""
    try:
        current = registry.current()
        return None if current is None else {h.name: h.kind for h in registry.manifest(current).heads}
    except ArtifactError:
        return None


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a Job's pod deleted) ends training as Ctrl-C does: joblib
    stops its cross-validation workers and no staging directory is left. Before, the process died
    at once and its two workers went on fitting, orphaned, for minutes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train(args: argparse.Namespace) -> int:
    with _sigterm_as_interrupt():
        return _train_now(args)


def _train_now(args: argparse.Namespace) -> int:
    if args.out and (args.promote_if_better or args.no_promote):
        raise NewstaggerError("--promote-if-better and --no-promote work on a --registry, not with --out")
    if args.tune_budget_seconds is not None and not args.tune:
        raise NewstaggerError("--tune-budget-seconds needs --tune")
    if args.eval and not args.promote_if_better:
        raise NewstaggerError("--eval is the quality gate's evaluation set: it needs --promote-if-better")
    if args.promote_if_better and not (args.eval or args.dev or args.data is None):
        raise NewstaggerError(
            "--promote-if-better needs rows neither model trained on to compare them: pass --eval FILE "
            "(or --dev FILE). On the training rows the current model, which has usually trained on them, "
            "would score in-sample against the new model's cross-validated estimate: even the same model "
            "would be refused. Without a gate: --no-promote, then `newstagger models promote VERSION`"
        )
    # the options are checked before the heavy imports: a refused command answers at once
    from service.model.artifact import check_destination
    from service.model.registry import ModelRegistry, check_version_name
    from training.config import load_config
    from training.data import load_dataset, read_data
    from training.eval_set import check_eval_rows
    from training.overlap import check_overlap
    from training.progress import Progress
    from training.report import figures
    from training.train import STARTER_CONFIG, STARTER_DIR, train, train_units
    from training.trainable import check_trainable

    registry = None if args.out else ModelRegistry(args.registry)
    # the version's name is checked before any training: a bad one would write outside the
    # registry, or fail once the model is trained
    if args.version and registry is not None:
        registry.check_new_version(args.version)
    elif args.version:
        check_version_name(args.version)
    config = load_config(args.config or (STARTER_CONFIG if args.data is None else None))
    if args.group_field is not None:
        config = replace(config, group_field=args.group_field)
    data, dev = args.data, args.dev
    if data is None:
        data, dev = [STARTER_DIR / "train.jsonl"], dev or [STARTER_DIR / "dev.jsonl"]
    # every file is read once, and checked before any training: the rows read here are the rows
    # --tune searches on, training fits on and the gate scores (--eval)
    data_read = read_data(data)
    dev_read = read_data(dev) if dev else None
    trained = load_dataset(data_read, config, args.heads, group_field=config.group_field)
    check_trainable(trained, config.thresholds.min_positives)
    held_out = {"--dev": load_dataset(dev_read, config, heads=trained.heads)} if dev_read else {}
    eval_data = read_data(args.eval) if args.eval else None
    if eval_data is not None and registry is not None:
        held_out["--eval"] = check_eval_rows(eval_data, config, trained.heads, _current_heads(registry))
    overlap = check_overlap(trained, held_out, args.allow_dev_overlap)
    for role, count in overlap.items():
        if count:
            print(
                f"warning: {count} of the {len(held_out[role].rows)} {role} rows are also training "
                "rows (same id, or same title and text): figures on them are not held out",
                file=sys.stderr,
            )
    # training validates the rows again (--tune may change a head's target), sharing their texts
    del trained, held_out
    # Without --version the version is known only once the model is saved: write it under a
    # hidden name unique to this run (a crashed or concurrent run cannot block it; the registry
    # ignores hidden names), then rename it into place. Whatever happens, no staging is left.
    pending = f".pending-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    out = args.out if registry is None else registry.new_version_dir(args.version or pending)
    check_destination(out)
    progress = Progress.to_stderr(total=train_units(config), quiet=args.quiet)
    tuned = None
    if args.tune:
        from training.tune import DEFAULT_BUDGET_SECONDS, tune

        budget = args.tune_budget_seconds or DEFAULT_BUDGET_SECONDS
        tuned = tune(data_read, config, args.heads, budget, io.StringIO() if args.quiet else None)
        config = tuned.config
        if tuned.overrun:
            print(f"warning: --tune-budget-seconds {budget:g} is too small: {tuned.overrun}", file=sys.stderr)
    try:
        shown = "" if registry is None or args.version else f"a new version in {registry.root}"
        manifest = train(data_read, out, config, dev_read or (), args.heads, args.version, progress, shown)
        if tuned is not None:
            from training.report import record_choice

            record_choice(out, tuned, budget)
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
    print(figures(manifest.data, manifest.metrics))
    print(f"model {manifest.name} {manifest.version} written to {out}")
    if registry is None:
        return 0
    return promote_new_version(args, registry, manifest.version, dev_read or (), eval_data, overlap)
