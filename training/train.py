"""``newstagger train``: fit, tune thresholds by cross-validation, score dev, write a versioned artifact."""

from __future__ import annotations

import logging
import os
import platform
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from joblib import Parallel, delayed
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning

import service
from service.core.errors import DataError
from service.model.article_model import ArticleModel, articles_to_matrix
from service.model.artifact import HeadSpec, Manifest, save_artifact
from training.config import TrainConfig
from training.data import Dataset, Row, check_trainable, load_dataset, shared_rows
from training.evaluate import head_metrics, indicator, tune_thresholds
from training.pipeline import build_classifier, build_featurizer, featurizer_key
from training.progress import Progress
from training.report import model_card

logger = logging.getLogger(__name__)

STARTER_DIR = Path(__file__).parent / "starter"
#: The default model's config (``newstagger train`` with no --data and no --config).
STARTER_CONFIG = STARTER_DIR / "config.toml"


def fit_model(
    data: Dataset, config: TrainConfig, on_step: Callable[[str], None] = lambda _: None
) -> ArticleModel:
    """Fit every featurizer once and every head's classifier on ``data``."""
    articles = data.articles()
    X = articles_to_matrix(articles)
    featurizers: dict[str, Any] = {}
    matrices: dict[str, Any] = {}
    head_featurizer = {}
    for name, head in data.heads.items():
        key = featurizer_key(head)
        head_featurizer[name] = key
        if key not in featurizers:
            on_step(f"features '{key}'")
            featurizers[key] = build_featurizer(head, config)
            matrices[key] = featurizers[key].fit_transform(X)
    classifiers: dict[str, Any] = {}
    labels: dict[str, list[str]] = {}
    for name, head in data.heads.items():
        on_step(f"head '{name}' ({head.kind}-label)")
        gold = data.labels(name)
        label_set = list(head.labels) or sorted({label for row in gold for label in row})
        clf = build_classifier(head, config)
        if head.kind == "multi":
            Y = indicator(gold, label_set)
            clf.fit(matrices[head_featurizer[name]], Y)
        else:
            clf.fit(matrices[head_featurizer[name]], [g[0] for g in gold])
            label_set = [str(c) for c in clf.classes_]
        classifiers[name] = clf
        labels[name] = label_set
    return ArticleModel(featurizers, classifiers, head_featurizer, labels)


def _split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    rows = list(data.rows)
    random.Random(seed).shuffle(rows)  # noqa: S311 - a reproducible split, not security
    n_dev = max(1, int(len(rows) * fraction))
    dev, train = rows[:n_dev], rows[n_dev:]
    return replace(data, rows=tuple(train)), replace(data, rows=tuple(dev))


def _score_heads(model: ArticleModel, rows: Sequence[Row]) -> dict[str, Any]:
    X = articles_to_matrix([r.article for r in rows])
    return model.scores(X, list(model.classifiers))


def _with_fixed_labels(data: Dataset) -> Dataset:
    """``data`` whose multi-label heads name their full label set, so that every fold's model has
    the same columns (a rare label may be missing from a fold's training part)."""
    heads = {}
    for name, head in data.heads.items():
        if head.kind == "multi" and not head.labels:
            head = replace(head, labels=tuple(sorted({label for row in data.labels(name) for label in row})))
        heads[name] = head
    return replace(data, heads=heads)


def _fold_scores(
    data: Dataset, config: TrainConfig, held: NDArray[np.intp]
) -> tuple[dict[str, list[str]], dict[str, NDArray[np.float64]]]:
    """The label order of a model fitted on every row but ``held``, and its scores for them."""
    held_set = set(held.tolist())
    fit_rows = tuple(r for i, r in enumerate(data.rows) if i not in held_set)
    with warnings.catch_warnings():  # a label absent from this fold's part is predicted constant
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        # once per fold and label, in the middle of the progress lines; the final fit still says it
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        model = fit_model(replace(data, rows=fit_rows), config)
    return model.labels, _score_heads(model, [data.rows[i] for i in held])


def _fold_result(
    k: int, data: Dataset, config: TrainConfig, held: NDArray[np.intp]
) -> tuple[int, tuple[dict[str, list[str]], dict[str, NDArray[np.float64]]]]:
    return k, _fold_scores(data, config, held)


def assign_folds(
    n: int, folds: int, seed: int, groups: Sequence[str] | None = None
) -> list[NDArray[np.intp]]:
    """The held-out row indices of each of ``folds`` folds over ``n`` rows, shuffled with ``seed``.

    With ``groups`` (one value per row), rows sharing a value land in the same fold: the groups are
    shuffled, then dealt largest first to the fold with the fewest rows so far (sklearn's
    GroupKFold balancing, made reproducible by the seed).
    """
    if groups is None:
        if n < folds:
            raise DataError(
                f"{n} training rows: too few for {folds}-fold cross-validation (thresholds.cv_folds)"
            )
        return [np.sort(part) for part in np.array_split(np.random.RandomState(seed).permutation(n), folds)]
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} rows")
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    if len(members) < folds:
        raise DataError(
            f"{len(members)} groups: too few for {folds}-fold grouped cross-validation "
            "(each fold needs at least one group; lower thresholds.cv_folds or pick another group field)"
        )
    names = sorted(members)
    shuffled = [names[i] for i in np.random.RandomState(seed).permutation(len(names))]
    shuffled.sort(key=lambda g: -len(members[g]))  # stable: equal sizes keep the shuffled order
    sizes = [0] * folds
    held: list[list[int]] = [[] for _ in range(folds)]
    for group in shuffled:
        k = sizes.index(min(sizes))
        held[k].extend(members[group])
        sizes[k] += len(members[group])
    return [np.asarray(sorted(part), dtype=np.intp) for part in held]


def cv_workers(folds: int) -> int:
    """Processes ``cross_validated_scores`` runs ``folds`` folds on: one per CPU."""
    return min(folds, os.cpu_count() or 1)


def cross_validated_scores(
    data: Dataset,
    config: TrainConfig,
    folds: int,
    on_step: Callable[[str], None] = lambda _: None,
    groups: Sequence[str] | None = None,
    on_fold: Callable[[], None] = lambda: None,
) -> dict[str, NDArray[np.float64]]:
    """Out-of-fold scores per head for every row of ``data``: each row scored by a model fitted
    on the other ``folds - 1`` parts (the folds run in parallel, one process per CPU). Columns
    follow the full model's label order. With ``groups`` (one per row, e.g. ``data.groups()``)
    rows sharing a group never straddle folds (see ``assign_folds``). ``on_fold`` is called as
    each fold finishes."""
    data = _with_fixed_labels(data)
    n = len(data.rows)
    parts = assign_folds(n, folds, config.seed, groups)
    _check_folds(data, parts)
    workers = cv_workers(folds)
    on_step(f"cross-validation: {folds} folds on {workers} processes")
    results: list[Any] = [None] * folds
    jobs = Parallel(n_jobs=workers, return_as="generator_unordered")(
        delayed(_fold_result)(k, data, config, held) for k, held in enumerate(parts)
    )
    for k, result in jobs:
        results[k] = result
        on_fold()
    order = {
        name: list(head.labels) or sorted({g[0] for g in data.labels(name)})
        for name, head in data.heads.items()
    }
    out = {name: np.zeros((n, len(labels)), dtype=np.float64) for name, labels in order.items()}
    for held, (fold_labels, scores) in zip(parts, results, strict=True):
        for name, block in scores.items():
            columns = np.asarray([order[name].index(label) for label in fold_labels[name]], dtype=np.intp)
            out[name][np.ix_(held, columns)] = block
    return out


def _check_folds(data: Dataset, parts: Sequence[NDArray[np.intp]]) -> None:
    """Each fold's model must see two classes of every single-label head: refuse, before any
    fitting, a class so rare that holding out one fold leaves its head with one class."""
    for name, head in data.heads.items():
        if head.kind == "multi":
            continue
        gold = [g[0] for g in data.labels(name)]
        for held in parts:
            held_set = set(held.tolist())
            left = {label for i, label in enumerate(gold) if i not in held_set}
            if len(left) < 2:
                rare = sorted(set(gold) - left)
                raise DataError(
                    f"head {name!r}: class(es) {', '.join(map(repr, rare))} have too few training rows "
                    f"(or groups) for {len(parts)}-fold cross-validation: a fold without them leaves "
                    "one class. Add rows, or lower thresholds.cv_folds"
                )


def train_units(config: TrainConfig) -> int:
    """The units of work ``train`` reports progress in: each fold and the final fit (with
    cross-validation), else the fit and the tuning."""
    folds = config.thresholds.cv_folds
    return folds + 1 if folds > 1 else 2


def train(
    data_paths: Sequence[Path],
    out_dir: Path,
    config: TrainConfig,
    dev_paths: Sequence[Path] = (),
    head_names: Sequence[str] = (),
    version: str = "",
    progress: Progress | None = None,
) -> Manifest:
    """Train, tune, evaluate and save. Reports progress on ``progress`` (default: stderr, a bar on
    a terminal, plain lines otherwise). Returns the manifest.

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
    progress.advance(0, f"loading {', '.join(str(p) for p in data_paths)}")
    data = load_dataset(data_paths, config, head_names, group_field=config.group_field)
    check_trainable(data)
    dev = load_dataset(dev_paths, config, heads=data.heads) if dev_paths else None
    overlap = shared_rows(data, dev) if dev is not None else 0
    progress.advance(0, "loaded")

    def step(message: str) -> None:
        progress.note(f"{message} ({time.perf_counter() - started:.1f}s)")

    heads = ", ".join(f"{n} ({h.kind})" for n, h in data.heads.items())
    cv_info: dict[str, Any] = {}
    if folds > 1:
        data = _with_fixed_labels(data)
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
                check_trainable(fit_on)
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
        tune_scores = _score_heads(model, tune_on.rows)
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
            scored_scores = _score_heads(model, dev.rows)
    if scored is not None and scored_scores is not None:
        metrics["dev"] = {
            s.name: head_metrics(s, scored.labels(s.name), scored_scores[s.name]) for s in specs
        }
    if folds <= 1 and dev is None:
        progress.advance(0, "refitting on all training rows")
        model = fit_model(data, config)
    train_seconds = time.perf_counter() - started
    progress.advance(0, f"writing {out_dir}")
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
            # --dev rows that are also training rows (same id or text): the dev score flatters
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
