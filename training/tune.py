"""``newstagger train --tune``: a small, budgeted search for a training configuration.

The search, scored by 3-fold cross-validation on the training rows only (``--dev`` plays no part):

1. Rung 0, on a random subsample of at most ``RUNG0_ROWS`` rows: start from the given config (the
   defaults without ``--config``), then go through the coordinates of ``training.search_space``
   in order (classifier, C, target-awareness, word and character n-grams, stop words, class
   weights, threshold strategy...), trying each other value of one coordinate with the others
   fixed, keeping it only if it beats the best so far by more than ``MIN_GAIN``. If that pass
   changed anything, a second pass goes through them again from the new best (a choice made
   early, such as C, is revisited once the later ones have moved; candidates already scored cost
   nothing).
2. Rung 1, when there are more rows: the ``FINALISTS`` best configurations again on up to
   ``RUNG1_ROWS`` rows, then the two-stage choices once more from the best of them (they turn on
   the rarest label, which rung 0 has few rows of); the best there wins.

A candidate's score is the mean over its heads of the head scores of ``training.tune_score``
(cut-offs are never scored on the rows they were tuned on). Everything is deterministic given the
seed; the budget (``--tune-budget-seconds``, for the whole run) decides only where the search stops:
a rung 0 candidate starts only if it is estimated to end within 40% of the budget, a rung 1
candidate within 70% and early enough for the final training to follow within the budget; a
candidate whose final training is estimated not to end within the budget is not kept (estimates
scale a candidate's fit time as rows ** ``GROWTH``, and to the final training on all rows with
character n-grams as rows ** ``CHAR_FINAL_GROWTH``; the final training is not cut short).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from service.core.errors import DataError
from training.config import TrainConfig
from training.cv import cross_validated_scores, cv_workers, start_workers
from training.data import Dataset, RawData, label_fields, load_dataset
from training.search_space import coordinates, describe
from training.trainable import check_trainable
from training.tune_score import head_scores

DEFAULT_BUDGET_SECONDS = 780.0  # the whole run: the search and the final training
RUNG_SHARE = (0.4, 0.7)  # rung 0 ends by this share of the budget, rung 1 by that; the rest is the final's
RUNG0_ROWS = 2000
RUNG1_ROWS = 8000
FOLDS = 3
SWEEPS = 2  # passes over the coordinates (a second one while the first changed something)
FINALISTS = 3
MIN_GAIN = 0.001
GROWTH = 0.7  # fit seconds grow about as rows ** GROWTH (vocabularies and distinct texts grow slower)
# ...except character n-grams of long texts past some thousands of rows: FNC-1 with them took 30 s
# per fit on 5,333 rows and 346 s on 30,105 (rows ** 1.42), against rows ** 0.65 from 1,333 to
# 5,333. The final training's estimate (all rows, where an overrun costs most) uses this for them.
CHAR_FINAL_GROWTH = 1.4
CHAR_COST = 8.0  # character n-grams multiply a fit's time by up to this (long texts: Reuters ~13)


@dataclass
class Candidate:
    change: str
    config: TrainConfig
    rung: int
    rows: int
    heads: dict[str, float] = field(default_factory=dict)
    score: float = float("nan")
    seconds: float = 0.0
    affordable: bool = True  # its final training is expected to end within the budget


@dataclass
class TuneResult:
    config: TrainConfig
    best: Candidate
    tried: list[Candidate]
    table: str
    overrun: str = ""  # why the run will end past its budget ("" if it should not)


def _fit_key(config: TrainConfig) -> str:
    """What the out-of-fold scores depend on (the thresholds do not: they are applied afterwards)."""
    return json.dumps({k: v for k, v in asdict(config).items() if k != "thresholds"}, sort_keys=True)


class _Search:
    def __init__(self, data: Dataset, budget: float, out: TextIO) -> None:
        self.data, self.budget, self.out = data, budget, out
        self.started = time.perf_counter()
        self.tried: list[Candidate] = []
        self.cache: dict[tuple[int, str], tuple[dict[str, NDArray[np.float64]], float]] = {}
        self.samples: dict[int, Dataset] = {}
        self.best: Candidate | None = None
        self.heads = list(data.heads)
        self.lines: list[str] = []  # the table rows printed so far

    def sample(self, rows: int, seed: int) -> Dataset:
        if rows not in self.samples:
            n = len(self.data.rows)
            keep = np.sort(np.random.RandomState(seed).permutation(n)[:rows]) if rows < n else np.arange(n)
            self.samples[rows] = replace(self.data, rows=tuple(self.data.rows[i] for i in keep))
        return self.samples[rows]

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def fits(self, estimate: float, share: float) -> bool:
        return self.elapsed() + estimate <= share * self.budget

    def evaluate(self, change: str, config: TrainConfig, rung: int, rows: int) -> Candidate:
        t0 = time.perf_counter()
        data = replace(self.sample(rows, config.seed), heads=config.heads)
        key = (rows, _fit_key(config))
        if key not in self.cache:
            folds = min(FOLDS, len(data.rows))
            scores = cross_validated_scores(data, config, folds, groups=data.groups())
            self.cache[key] = (scores, time.perf_counter() - t0)
        oof = self.cache[key][0]
        heads = head_scores(data, config, oof)
        cand = Candidate(change, config, rung, rows, heads, float(np.mean(list(heads.values()))))
        cand.seconds = time.perf_counter() - t0
        self.tried.append(cand)
        better = self.best is None or self.best.rung < rung or cand.score > self.best.score + MIN_GAIN
        final = self.final_seconds(cand)
        affordable = self.best is None or self.elapsed() + final <= self.budget
        cand.affordable = affordable
        if better and affordable:
            self.best = cand
        self.print_row(cand, better and affordable)
        if better and not affordable:
            print(
                f"      not kept: its final training would take about {final:.0f} s, beyond the budget",
                file=self.out,
            )
        return cand

    def final_seconds(self, cand: Candidate) -> float:
        """About how long ``train`` will take with ``cand``'s config on all rows, scaled from the
        candidate's own cross-validation: k folds on w processes run in ceil(k / w) rounds of fits
        on (k - 1) / k of the rows, then one fit on all of them."""
        seconds = self.cache[(cand.rows, _fit_key(cand.config))][1]
        per_fit = seconds / _rounds(FOLDS)  # one fit on (FOLDS - 1) / FOLDS of cand.rows

        growth = CHAR_FINAL_GROWTH if cand.config.features.use_char else GROWTH

        def fit(rows: float) -> float:
            return float(per_fit * (rows / (cand.rows * (FOLDS - 1) / FOLDS)) ** growth)

        n, k = len(self.data.rows), cand.config.thresholds.cv_folds
        return _rounds(k) * fit(n * (k - 1) / k) + fit(n)

    def header(self) -> str:
        heads = "".join(f" {h[:10]:>10}" for h in self.heads)
        return f"{'#':>3} {'rung':>4} {'rows':>6}  {'change':<38}{heads} {'mean':>7} {'s':>6} {'best':>7}"

    def row(self, n: int, c: Candidate, best: float, mark: bool) -> str:
        heads = "".join(f" {c.heads[h]:>10.4f}" for h in self.heads)
        return (
            f"{n:>3} {c.rung:>4} {c.rows:>6}  {c.change[:38]:<38}{heads} {c.score:>7.4f} {c.seconds:>6.1f}"
            f" {best:>7.4f}{' *' if mark else ''}"
        )

    def print_row(self, cand: Candidate, better: bool) -> None:
        assert self.best is not None  # noqa: S101 - set by evaluate before printing
        self.lines.append(self.row(len(self.tried), cand, self.best.score, better))
        print(self.lines[-1], file=self.out, flush=True)


def _rounds(folds: int) -> int:
    """Rounds of fits ``cross_validated_scores`` runs ``folds`` folds in."""
    return -(-folds // cv_workers(folds))


def _estimate(search: _Search, rows: int, config: TrainConfig) -> float:
    """Seconds the candidate will take: 0 if its fits are cached, else the time of its own earlier
    fit scaled by rows (rung 1), else that of the best so far, ``CHAR_COST`` times that if it turns
    character n-grams on (rung 0: a candidate differs from the best in one choice)."""
    key = _fit_key(config)
    if (rows, key) in search.cache:
        return 0.0
    own = [(r, t) for (r, k), (_, t) in search.cache.items() if k == key]
    if own:
        return float(own[-1][1] * (rows / own[-1][0]) ** GROWTH)
    assert search.best is not None  # noqa: S101 - the start is always evaluated first
    seconds = search.cache[(search.best.rows, _fit_key(search.best.config))][1]
    adds_char = config.features.use_char and not search.best.config.features.use_char
    return float(seconds * (rows / search.best.rows) ** GROWTH) * (CHAR_COST if adds_char else 1.0)


def _try(search: _Search, change: str, config: TrainConfig, rung: int, rows: int) -> Candidate | None:
    estimate = _estimate(search, rows, config)  # 0: scored from cached fits, nearly free
    # from rung 1 on, the final training must still fit after the candidate
    final = search.final_seconds(search.best) if rung > 0 and search.best is not None else 0.0
    if estimate > 0 and not (search.fits(estimate, RUNG_SHARE[rung]) and search.fits(estimate + final, 1.0)):
        print(f"      skipped {change!r}: it would not end within the budget", file=search.out)
        return None
    return search.evaluate(change, config, rung, rows)


def tune(
    data_paths: Sequence[Path] | RawData,
    config: TrainConfig,
    head_names: Sequence[str] = (),
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    out: TextIO | None = None,
) -> TuneResult:
    """Search for the configuration with the best cross-validated score on ``data_paths`` (files,
    or files already read), starting from ``config``; print one table row per candidate to ``out``.
    See the module docstring."""
    out = out or sys.stderr
    if budget_seconds <= 0:
        raise DataError(f"--tune-budget-seconds must be > 0, not {budget_seconds:g}")
    if config.thresholds.cv_folds < 2:
        raise DataError("--tune scores by cross-validation: thresholds.cv_folds must be at least 2")
    data = load_dataset(data_paths, config, head_names, group_field=config.group_field)
    check_trainable(data, config.thresholds.min_positives)
    if len(data.rows) < 2 * FOLDS:
        raise DataError(f"{len(data.rows)} training rows: too few to tune (at least {2 * FOLDS})")
    ignored = sorted(
        set(config.ignore_fields) | (label_fields(data_paths) - set(data.heads) - {config.group_field})
    )
    config = replace(config, heads=dict(data.heads), ignore_fields=tuple(ignored))
    search = _Search(data, budget_seconds, out)
    rung0 = min(len(data.rows), RUNG0_ROWS)
    print(
        f"tuning on {len(data.rows)} training rows ({FOLDS}-fold cross-validation; rung 0 on {rung0} rows), "
        f"budget {budget_seconds:g} s; heads: " + ", ".join(f"{n} ({h.kind})" for n, h in data.heads.items()),
        file=out,
    )
    print(search.header(), file=out, flush=True)
    start_workers(FOLDS)  # in the budget, not in the first candidate's time that estimates scale from
    search.evaluate(
        "start: " + ("the given config" if config != _defaults(config) else "defaults"), config, 0, rung0
    )
    coords = coordinates(data)
    for _ in range(SWEEPS):
        assert search.best is not None  # noqa: S101 - the start was evaluated
        before = search.best.config
        for _, alternatives in coords:
            for change, candidate in alternatives(search.best.config):
                _try(search, change, candidate, 0, rung0)
        if search.best.config == before:
            break
    rung1 = min(len(data.rows), RUNG1_ROWS)
    if rung1 > rung0:
        finalists = _finalists(search.tried)
        for cand in finalists:
            _try(search, f"finalist: {cand.change}", cand.config, 1, rung1)
        # the rarest label has few rows in rung 0 (FNC-1's disagree: ~35 of 2,000): its choices again
        two_stages = dict(coords).get("two stages")
        assert search.best is not None  # noqa: S101
        for change, candidate in two_stages(search.best.config) if two_stages else []:
            _try(search, change, candidate, 1, rung1)
    assert search.best is not None  # noqa: S101
    table = "\n".join([search.header(), *search.lines])
    print(f"chosen ({search.elapsed():.0f} s): {describe(search.best.config)}", file=out, flush=True)
    took, final = search.elapsed(), search.final_seconds(search.best)
    overrun = f"the search took {took:.0f} s, the final training will take about {final:.0f} s more"
    overrun = overrun if took + final > budget_seconds else ""
    return TuneResult(search.best.config, search.best, search.tried, table, overrun)


def _defaults(config: TrainConfig) -> TrainConfig:
    return replace(TrainConfig(), heads=config.heads, ignore_fields=config.ignore_fields)


def _finalists(tried: list[Candidate]) -> list[Candidate]:
    """The best ``FINALISTS`` distinct configurations of rung 0 whose final training fits the
    budget, best first."""
    out: list[Candidate] = []
    for cand in sorted((c for c in tried if c.rung == 0 and c.affordable), key=lambda c: -c.score):
        if all(cand.config != o.config for o in out):
            out.append(cand)
    return out[:FINALISTS]
