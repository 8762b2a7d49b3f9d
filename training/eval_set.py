"""The rows the quality gate (``training.gate``) judges on, and what its figure there means.

Rows neither model was fitted or tuned on: ``--eval``, else ``--dev`` (which training only
scores). There is no fair figure on the training rows: the current model has usually trained on
them (scored in-sample, it flatters itself), the new model certainly has, and its cross-validated
estimate there is out-of-fold where the current model's score is not. So ``train`` refuses
``--promote-if-better`` without either, before it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from service.model.artifact import LoadedModel
from training.config import HeadConfig, TrainConfig
from training.data import Dataset, load_dataset


def load_eval_set(
    current: LoadedModel | None,
    new: LoadedModel,
    config: TrainConfig,
    eval_paths: Sequence[Path] = (),
    dev_paths: Sequence[Path] = (),
) -> tuple[Dataset, str]:
    """The evaluation set of the gate, ``eval_paths`` else ``dev_paths``, and what the gate's
    figure on it means.

    Only the heads both models share need labels in it (all of the new model's if there is no
    current model)."""
    if not eval_paths and not dev_paths:
        raise ValueError("the quality gate needs --eval or --dev rows (neither model trained on them)")
    shared = {h.name: h for h in new.manifest.heads}
    if current is not None:
        known = {h.name for h in current.manifest.heads}
        shared = {name: h for name, h in shared.items() if name in known} or shared
    heads = {name: HeadConfig(kind=h.kind, target=h.target) for name, h in shared.items()}
    if eval_paths:
        return (
            load_dataset(eval_paths, config, heads=heads),
            "--eval " + " ".join(map(str, eval_paths)) + ": held-out rows, neither fitted nor tuned on "
            "by training (the honest figure)",
        )
    honest = (
        "dev rows training only scored, never fitted or tuned on (the honest figure)"
        if new.manifest.metrics.get("cv")
        else "the new model's cut-offs were tuned on these rows (thresholds.cv_folds = 0), so this "
        "favours it: pass --eval for a fair gate"
    )
    return load_dataset(dev_paths, config, heads=heads), f"--dev {' '.join(map(str, dev_paths))}: {honest}"
