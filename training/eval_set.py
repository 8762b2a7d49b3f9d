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
from training.data import Dataset, RawData, load_dataset


def load_eval_set(
    current: LoadedModel | None,
    new: LoadedModel,
    config: TrainConfig,
    eval_paths: Sequence[Path] | RawData = (),
    dev_paths: Sequence[Path] | RawData = (),
    eval_overlap: int = 0,
) -> tuple[Dataset, str]:
    """The evaluation set of the gate, ``eval_paths`` else ``dev_paths`` (each read already, or files),
    and what the gate's figure on it means (``eval_overlap``: how many --eval rows are training rows,
    warned about by ``train``, refused above 5% unless --allow-dev-overlap; the --dev rows' count
    is in the new model's manifest).

    Only the heads the gate scores need labels in it (``gate_heads``)."""
    if not eval_paths and not dev_paths:
        raise ValueError("the quality gate needs --eval or --dev rows (neither model trained on them)")
    heads = gate_heads(
        {h.name: HeadConfig(kind=h.kind, target=h.target) for h in new.manifest.heads},
        None if current is None else {h.name: h.kind for h in current.manifest.heads},
    )
    if eval_paths:
        held_out = "held-out rows, neither fitted nor tuned on by training (the honest figure)"
        described = f"--eval {_names(eval_paths)}: {_flattered(eval_overlap) or held_out}"
        return load_dataset(eval_paths, config, heads=heads), described
    honest = (
        "dev rows training only scored, never fitted or tuned on (the honest figure)"
        if new.manifest.metrics.get("cv")
        else "the new model's cut-offs were tuned on these rows (thresholds.cv_folds = 0), so this "
        "favours it: pass --eval for a fair gate"
    )
    honest = _flattered(new.manifest.data.get("dev_overlap", 0)) or honest
    return load_dataset(dev_paths, config, heads=heads), f"--dev {_names(dev_paths)}: {honest}"


def _names(data: Sequence[Path] | RawData) -> str:
    return " ".join(data.paths if isinstance(data, RawData) else map(str, data))


def _flattered(overlap: object) -> str:
    if not isinstance(overlap, int) or overlap <= 0:
        return ""
    return (
        f"WARNING: {overlap} of these rows are also training rows, so the new model is partly "
        "judged in-sample and favoured"
    )


def gate_heads(new: dict[str, HeadConfig], current: dict[str, str] | None) -> dict[str, HeadConfig]:
    """The heads the gate scores, which the evaluation rows must label: those of the ``new`` model
    that the ``current`` one (head -> kind) has too, with the same kind (all of the new model's if
    none, or if there is no current model)."""
    if current is None:
        return new
    return {name: h for name, h in new.items() if current.get(name) == h.kind} or new


def check_eval_rows(
    eval_data: RawData,
    config: TrainConfig,
    new: dict[str, HeadConfig],
    current: dict[str, str] | None,
) -> Dataset:
    """The ``--eval`` rows, validated before any training for the heads the gate will score: those
    the training data gives the new model (``new``, see ``gate_heads``) that the current model
    (``current``: its heads and kinds, if it has one) has too. Raise DataError if the gate could not
    use a row."""
    return load_dataset(eval_data, config, heads=gate_heads(new, current))
