"""Cross-validation: folds (grouped when the data says so) and out-of-fold scores, each fold's model
fitted in its own process."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from joblib import Parallel, cpu_count, delayed
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning

from service.core.errors import DataError
from training.config import TrainConfig
from training.data import Dataset
from training.fit import fit_model, score_rows, with_fixed_labels


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
    return model.labels, score_rows(model, [data.rows[i] for i in held])


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
    """Processes ``cross_validated_scores`` runs ``folds`` folds on: one per CPU this process may use.
    joblib's count honours a container's CPU limit (cgroup quota) and CPU set; ``os.cpu_count()``
    is the node's, so in a pod limited to 2 CPUs on a 16-CPU node it started 5 fold processes of
    ~360 MiB each (a 2 GiB memory limit was exceeded)."""
    return max(1, min(folds, int(cpu_count())))


def start_workers(folds: int) -> None:
    """Start the processes ``cross_validated_scores`` runs ``folds`` folds on, if they are not
    running yet. Each imports scikit-learn and newstagger first (about 10 s on a busy 2-core
    machine, against 2 s for 3 folds of 300 rows): timed in the first folds, that start would pass
    for the fits' own cost (``train --tune`` scales its estimates from it)."""
    workers = cv_workers(folds)
    Parallel(n_jobs=workers)(delayed(cv_workers)(folds) for _ in range(workers))


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
    data = with_fixed_labels(data)
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
