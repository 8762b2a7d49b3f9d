"""The rows the quality gate (``training.gate``) judges on, and what its figure there means.

The score on rows neither model was fitted or tuned on: ``--eval``, else ``--dev`` (which training
only scores). Without either, the new model was fitted on every training row, so scoring it there
would flatter it: it is judged by its **cross-validated estimate** on those rows (out-of-fold
scores, recorded at training), the current model by its score on the same rows.
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
    train_paths: Sequence[Path] = (),
) -> tuple[Dataset, str, bool]:
    """The evaluation set of the gate and what the gate's figure on it means: ``eval_paths``, else
    ``dev_paths``, else ``train_paths``. Returns it, its description, and whether the new model is
    to be judged by its recorded cross-validated estimate on it (``compare_models(new_recorded=)``)
    rather than scored on it. Without CV (``thresholds.cv_folds`` <= 1), the last is the part of
    ``train_paths`` that training held out (same split, same seed).

    Only the heads both models share need labels in it (all of the new model's if there is no
    current model)."""
    shared = {h.name: h for h in new.manifest.heads}
    if current is not None:
        known = {h.name for h in current.manifest.heads}
        shared = {name: h for name, h in shared.items() if name in known} or shared
    heads = {name: HeadConfig(kind=h.kind, target=h.target) for name, h in shared.items()}
    cv = new.manifest.metrics.get("cv")
    if eval_paths:
        return (
            load_dataset(eval_paths, config, heads=heads),
            "--eval " + " ".join(map(str, eval_paths)) + ": held-out rows, neither fitted nor tuned on "
            "by training (the honest figure)",
            False,
        )
    if dev_paths:
        honest = (
            "dev rows training only scored, never fitted or tuned on (the honest figure)"
            if cv
            else "the new model's cut-offs were tuned on these rows (thresholds.cv_folds = 0), so this "
            "favours it: pass --eval for a fair gate"
        )
        return (
            load_dataset(dev_paths, config, heads=heads),
            f"--dev {' '.join(map(str, dev_paths))}: {honest}",
            False,
        )
    if cv:
        data = load_dataset(train_paths, config, heads=heads)
        return (
            data,
            f"no --eval or --dev: the new model's cross-validated estimate on its {len(data.rows)} training "
            "rows (out-of-fold scores: it was fitted on every one of them, so scoring it there would flatter "
            "it), the current model's score on the same rows (flattering it if it trained on them: the gate "
            "errs toward refusing); pass --eval for a like-for-like gate",
            True,
        )
    from training.train import _split  # the very split training made (same rows, same seed)

    _, held = _split(load_dataset(train_paths, config, heads=heads), config.dev_fraction, config.seed)
    return (
        held,
        f"the {config.dev_fraction:.0%} of the training data held out for tuning (seed {config.seed}); "
        "the new model was refit on it, so this favours the new model: pass --eval for a fair gate",
        False,
    )
