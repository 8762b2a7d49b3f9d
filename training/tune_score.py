"""How ``newstagger train --tune`` scores a candidate from its out-of-fold scores.

The score of a head: single-label, macro-F1 of the out-of-fold predictions; multi-label, the mean of
micro- and macro-F1 (over the labels present), with cut-offs tuned on one half of the out-of-fold
scores and applied to the other (and the other way round), so that tuning is never scored on the
rows it was tuned on. A candidate's score is the mean over its heads (``training.tune``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import f1_score

from training.config import ThresholdConfig, TrainConfig
from training.data import Dataset
from training.evaluate import indicator, label_prf, tune_thresholds


def _label_order(data: Dataset, name: str) -> list[str]:
    """The column order of ``cross_validated_scores`` for head ``name``."""
    head = data.heads[name]
    if head.kind == "multi":
        return list(head.labels) or sorted({label for row in data.labels(name) for label in row})
    return sorted({g[0] for g in data.labels(name)})


def _multi_score(Y: NDArray[np.int8], S: NDArray[np.float64], cfg: ThresholdConfig, seed: int) -> float:
    """Mean of micro- and macro-F1 (labels present) with cut-offs cross-fitted on two halves."""
    halves = np.array_split(np.random.RandomState(seed).permutation(len(Y)), 2)
    P = np.zeros_like(Y)
    for fit, held in (halves, halves[::-1]):
        cut = np.asarray(tune_thresholds(Y[fit], S[fit], cfg))
        P[held] = (S[held] >= cut).astype(np.int8)
    present = (Y.sum(axis=0) > 0) | (P.sum(axis=0) > 0)
    if not present.any():
        return 0.0
    micro = label_prf(Y, P, "micro")[2]
    macro = label_prf(Y[:, present], P[:, present], "macro")[2]
    return float(micro + macro) / 2


def head_scores(data: Dataset, config: TrainConfig, oof: dict[str, NDArray[np.float64]]) -> dict[str, float]:
    """The score of each head of ``data`` from ``config``'s out-of-fold scores ``oof``."""
    out = {}
    for name, head in data.heads.items():
        labels = _label_order(data, name)
        if head.kind == "multi":
            out[name] = _multi_score(
                indicator(data.labels(name), labels), oof[name], config.thresholds, config.seed
            )
        else:
            gold = [g[0] for g in data.labels(name)]
            pred = [labels[int(j)] for j in np.argmax(oof[name], axis=1)]
            out[name] = float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
    return out
