"""``newstagger train``: fit, tune thresholds by cross-validation, score dev, write a versioned artifact."""

from __future__ import annotations

import logging
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

import service
from service.core.errors import DataError
from service.core.tagger import MAX_MODEL_TEXT_CHARS
from service.model.artifact import save_artifact
from service.model.manifest import HeadSpec, Manifest
from training.config import TrainConfig
from training.cv import cross_validated_scores
from training.data import Dataset, RawData, load_dataset
from training.evaluate import head_metrics, indicator, tune_thresholds
from training.fit import fit_model, score_rows, with_fixed_labels
from training.overlap import shared_ids
from training.progress import Progress
from training.report import model_card
from training.trainable import check_trainable

logger = logging.getLogger(__name__)

STARTER_DIR = Path(__file__).parent / "starter"
#: The default model's config (``newstagger train`` with no --data and no --config).
STARTER_CONFIG = STARTER_DIR / "config.toml"


def _split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    rows = list(data.rows)
    random.Random(seed).shuffle(rows)  # noqa: S311 - a reproducible split, not security
    n_dev = max(1, int(len(rows) * fraction))
    dev, train = rows[:n_dev], rows[n_dev:]
    return replace(data, rows=tuple(train)), replace(data, rows=tuple(dev))


def train_units(config: TrainConfig) -> int:
    """The units of work ``train`` reports progress in: each fold and the final fit (with
    cross-validation), else the fit and the tuning."""
    folds = config.thresholds.cv_folds
    return folds + 1 if folds > 1 else 2


def train(
    data_paths: Sequence[Path] | RawData,
    out_dir: Path,
    config: TrainConfig,
    dev_paths: Sequence[Path] | RawData = (),
    head_names: Sequence[str] = (),
    version: str = "",
    progress: Progress | None = None,
    shown_as: str = "",
) -> Manifest:
    """Train, tune, evaluate and save. Reports progress on ``progress`` (default: stderr, a bar on
    a terminal, plain lines otherwise), naming the destination ``shown_as`` (default: ``out_dir``).
    Returns the manifest. ``data_paths`` and ``dev_paths`` may be files already read
    (``read_data``): they are validated under ``config`` here, not read again.

    With ``config.thresholds.cv_folds`` = k > 1 (the default), the cut-offs and the reported
    estimate come from k-fold cross-validation on the training data (grouped by
    ``config.group_field`` if set), the model is fitted on all of it, and the dev data (if any) is
    only scored: the dev figures are an honest held-out estimate. With k <= 1, the cut-offs are
    tuned on the dev data (or on a held-out share of the training data, and the model is then
    refitted on all of it), and the dev figures are optimistic.
    """
    started = time.perf_counter()
    np.random.seed(config.seed)
    folds = config.thresholds.cv_folds
    progress = progress or Progress.to_stderr(total=train_units(config))
    shown = data_paths.paths if isinstance(data_paths, RawData) else [str(p) for p in data_paths]
    progress.advance(0, f"loading {', '.join(shown)}")
    data = load_dataset(data_paths, config, head_names, group_field=config.group_field)
    check_trainable(data, config.thresholds.min_positives)
    dev = load_dataset(dev_paths, config, heads=data.heads) if dev_paths else None
    overlap = len(shared_ids(data, dev)) if dev is not None else 0
    progress.advance(0, "loaded")
    for name, loaded in (("training", data), ("dev", dev)):
        if loaded is not None and loaded.cut_texts:
            progress.note(
                f"{loaded.cut_texts} {name} row(s) with a text over {MAX_MODEL_TEXT_CHARS:,} characters: "
                f"the model reads (and learns from) the first {MAX_MODEL_TEXT_CHARS:,}, as when it serves"
            )

    def step(message: str) -> None:
        progress.note(f"{message} ({time.perf_counter() - started:.1f}s)")

    heads = ", ".join(f"{n} ({h.kind})" for n, h in data.heads.items())
    cv_info: dict[str, Any] = {}
    if folds > 1:
        data = with_fixed_labels(data)
        groups = data.groups()
        cv_info = {"folds": folds, "rows": len(data.rows)}
        if groups is not None:
            cv_info |= {"group_field": data.group_field, "groups": len(set(groups))}
        grouped = f", grouped by {data.group_field!r} ({cv_info['groups']} groups)" if groups else ""
        progress.note(
            f"{len(data.rows)} training rows, cut-offs from {folds}-fold cross-validation{grouped}; "
            + (f"{len(dev.rows)} dev rows, scored only" if dev else "no dev data")
            + f"; heads: {heads}"
        )
        progress.advance(0, f"{folds}-fold cross-validation on the training data")
        tune_on = data
        tune_scores = cross_validated_scores(
            data, config, folds, step, groups, on_fold=lambda: progress.advance(1, "cross-validation")
        )
        progress.advance(0, "fitting on all training rows")
        model = fit_model(data, config, lambda m: step(f"fitting {m}"))
    else:
        fit_on, tune_on = (data, dev) if dev else _split(data, config.dev_fraction, config.seed)
        if not dev:
            try:
                check_trainable(fit_on, config.thresholds.min_positives)
            except DataError as exc:
                raise DataError(
                    f"with {config.dev_fraction:.0%} of the rows held out for cut-offs (no --dev, "
                    f"thresholds.cv_folds {folds}): {exc}"
                ) from None
        progress.note(
            f"{len(fit_on.rows)} training rows, {len(tune_on.rows)} rows for cut-offs and metrics; "
            f"heads: {heads}"
            + (
                f"; no cross-validation, so {config.group_field!r} groups nothing"
                if config.group_field
                else ""
            )
        )
        progress.advance(0, "fitting")
        model = fit_model(fit_on, config, lambda m: step(f"fitting {m}"))
        progress.advance(1, "tuning thresholds on the held-out rows")
        tune_scores = score_rows(model, tune_on.rows)
    specs = []
    for name, head in data.heads.items():
        labels = tuple(model.labels[name])
        thresholds: tuple[float, ...] = ()
        if head.kind == "multi":
            Y = indicator(tune_on.labels(name), labels)
            thresholds = tuple(tune_thresholds(Y, tune_scores[name], config.thresholds))
        specs.append(HeadSpec(name, head.kind, labels, thresholds, head.target))
    metrics: dict[str, Any] = {}
    progress.advance(1, f"scoring {len(dev.rows)} dev rows" if dev is not None and folds > 1 else "scoring")
    # the rows the "dev" figures are computed on, and their scores
    scored, scored_scores = (tune_on, tune_scores) if folds <= 1 else (dev, None)
    if folds > 1:
        metrics["cv"] = {s.name: head_metrics(s, data.labels(s.name), tune_scores[s.name]) for s in specs}
        if dev is not None:
            scored_scores = score_rows(model, dev.rows)
    if scored is not None and scored_scores is not None:
        metrics["dev"] = {
            s.name: head_metrics(s, scored.labels(s.name), scored_scores[s.name]) for s in specs
        }
    if folds <= 1 and dev is None:
        progress.advance(0, "refitting on all training rows")
        model = fit_model(data, config)
    train_seconds = time.perf_counter() - started
    progress.advance(0, f"writing {shown_as or out_dir}")
    fields = {
        "name": config.name,
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "heads": tuple(specs),
        "versions": {
            "newstagger": service.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "data": {
            "train": list(data.files),
            "dev": list(dev.files)
            if dev is not None
            else (
                "none" if folds > 1 else f"{config.dev_fraction:.0%} of train held out (seed {config.seed})"
            ),
            "train_rows": len(data.rows),
            "dev_rows": len(scored.rows) if scored is not None else 0,
            # --dev rows that are also training rows (training.overlap): the dev score flatters
            **({"dev_overlap": overlap} if overlap else {}),
            "thresholds": f"{folds}-fold cross-validation on the training rows"
            + (f", grouped by {data.group_field!r}" if "group_field" in cv_info else "")
            if folds > 1
            else "tuned on the dev rows",
            **({"cv": cv_info} if cv_info else {}),
        },
        "metrics": {**metrics, "train_seconds": round(train_seconds, 2)},
        "config": config.to_json(),
    }
    card = model_card(fields)
    manifest = save_artifact(model, fields, out_dir, card)
    progress.finish(f"done: model {manifest.name} {manifest.version}")
    return manifest
