"""``newstagger train``: fit, tune thresholds on dev, evaluate, write a versioned artifact."""

from __future__ import annotations

import logging
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

import service
from service.model.article_model import ArticleModel, articles_to_matrix
from service.model.artifact import HeadSpec, Manifest, save_artifact
from training.config import TrainConfig
from training.data import Dataset, Row, load_dataset
from training.evaluate import head_metrics, indicator, tune_thresholds
from training.pipeline import build_classifier, build_featurizer, featurizer_key
from training.report import model_card

logger = logging.getLogger(__name__)

STARTER_DIR = Path(__file__).parent / "starter"


def _progress(step: int, total: int, message: str, started: float) -> None:
    print(f"[{step}/{total}] {message} ({time.perf_counter() - started:.1f}s)", file=sys.stderr, flush=True)


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


def train(
    data_paths: Sequence[Path],
    out_dir: Path,
    config: TrainConfig,
    dev_paths: Sequence[Path] = (),
    head_names: Sequence[str] = (),
    version: str = "",
) -> Manifest:
    """Train, tune, evaluate and save. Prints progress to stderr. Returns the manifest."""
    started = time.perf_counter()
    np.random.seed(config.seed)
    total = 5
    _progress(1, total, f"loading {', '.join(str(p) for p in data_paths)}", started)
    data = load_dataset(data_paths, config, head_names)
    if dev_paths:
        dev = load_dataset(dev_paths, config, heads=data.heads)
        fit_on, tune_on = data, dev
    else:
        fit_on, tune_on = _split(data, config.dev_fraction, config.seed)
        dev = tune_on
    print(
        f"      {len(data.rows)} training rows, {len(dev.rows)} dev rows; heads: "
        + ", ".join(f"{n} ({h.kind})" for n, h in data.heads.items()),
        file=sys.stderr,
    )
    _progress(2, total, "fitting", started)
    model = fit_model(fit_on, config, lambda m: print(f"      fitting {m}", file=sys.stderr, flush=True))
    _progress(3, total, "tuning thresholds and evaluating on dev", started)
    dev_scores = _score_heads(model, tune_on.rows)
    specs = []
    for name, head in data.heads.items():
        labels = tuple(model.labels[name])
        thresholds: tuple[float, ...] = ()
        if head.kind == "multi":
            Y = indicator(tune_on.labels(name), labels)
            thresholds = tuple(tune_thresholds(Y, dev_scores[name], config.thresholds))
        specs.append(HeadSpec(name, head.kind, labels, thresholds, head.target))
    metrics = {s.name: head_metrics(s, tune_on.labels(s.name), dev_scores[s.name]) for s in specs}
    if not dev_paths:
        _progress(4, total, "refitting on all training rows", started)
        model = fit_model(data, config)
    train_seconds = time.perf_counter() - started
    _progress(total, total, f"writing {out_dir}", started)
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
            if dev_paths
            else f"{config.dev_fraction:.0%} of train held out (seed {config.seed})",
            "train_rows": len(data.rows),
            "dev_rows": len(dev.rows),
        },
        "metrics": {"dev": metrics, "train_seconds": round(train_seconds, 2)},
        "config": config.to_json(),
    }
    card = model_card(fields)
    manifest = save_artifact(model, fields, out_dir, card)
    _progress(total, total, f"done: model {manifest.name} {manifest.version}", started)
    return manifest
