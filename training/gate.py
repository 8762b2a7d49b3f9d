"""The quality gate of ``newstagger train --promote-if-better``: is the new model not worse?

Both models are scored on the same evaluation set, and each head both models share is measured
**over the union of the two models' label sets** (a label only one model knows counts as never
predicted by the other), so a model that learned a new label gets credit for it and one that
lost a label pays for it.

The rule (documented in docs/retraining.md):

- ``score(model) = mean over shared heads of the head metric`` (default ``macro_f1``);
- promote iff ``score(new) >= score(current) - tolerance`` — a tie promotes;
- a head only the new model has is new capability: shown, not scored;
- a head only the current model has, or one whose kind (multi- or single-label) changed, would be
  lost by clients that ask for it: refuse (unless ``train --allow-head-changes``: shown, not scored);
- no current model (or one that no longer loads): promote — there is nothing to protect.

Which rows it gates on is chosen by ``training.eval_set`` (and the table prints it): rows neither
model was fitted or tuned on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import accuracy_score, f1_score

from service.model.article_model import articles_to_matrix
from service.model.artifact import LoadedModel
from service.model.manifest import HeadSpec
from training.data import Dataset
from training.evaluate import indicator, label_prf

#: metric name -> what it means per head kind
METRICS = {
    "macro_f1": "multi-label: macro-F1 over labels; single-label: macro-F1 over classes",
    "micro_f1": "multi-label: micro-F1; single-label: accuracy (= micro-F1 for one label per row)",
}
DEFAULT_METRIC = "macro_f1"
EPSILON = 1e-9  # float noise: two equal models must tie


@dataclass(frozen=True)
class HeadComparison:
    head: str
    status: str  # "shared" | "new head" | "dropped head" | "kind changed" | "not in eval data"
    current: float | None = None
    new: float | None = None
    labels_added: tuple[str, ...] = ()
    labels_removed: tuple[str, ...] = ()

    @property
    def delta(self) -> float | None:
        if self.current is None or self.new is None:
            return None
        return self.new - self.current


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    tolerance: float
    current_version: str
    new_version: str
    eval_rows: int = 0
    basis: str = ""  # which figure the gate is on, and why
    current_score: float | None = None
    new_score: float | None = None
    heads: tuple[HeadComparison, ...] = ()


def _head_scores(
    loaded: LoadedModel, data: Dataset, heads: Sequence[str], on_rows: Callable[[int], None]
) -> dict[str, NDArray[np.float64]]:
    articles = data.articles()
    blocks: dict[str, list[NDArray[np.float64]]] = {h: [] for h in heads}
    for start in range(0, len(articles), 1024):
        X = articles_to_matrix(articles[start : start + 1024])
        for name, block in loaded.model.scores(X, list(heads)).items():
            blocks[name].append(block)
        on_rows(X.shape[0])
    return {h: np.vstack(b) for h, b in blocks.items()}


def _multi_predictions(spec: HeadSpec, scores: NDArray[np.float64], labels: list[str]) -> NDArray[np.int8]:
    """Predictions over ``labels``; a label the model does not know is never predicted."""
    own = (scores >= np.asarray(spec.thresholds)).astype(np.int8)
    P = np.zeros((scores.shape[0], len(labels)), dtype=np.int8)
    for j, label in enumerate(spec.labels):
        P[:, labels.index(label)] = own[:, j]
    return P


def head_metric(
    spec: HeadSpec,
    gold: Sequence[tuple[str, ...]],
    scores: NDArray[np.float64],
    labels: list[str],
    metric: str,
) -> float:
    """``metric`` of one head, measured over ``labels`` (the union of both models' labels)."""
    if spec.kind == "multi":
        Y = indicator(gold, labels)
        P = _multi_predictions(spec, scores, labels)
        average = "macro" if metric == "macro_f1" else "micro"
        return float(label_prf(Y, P, average)[2])
    y_true = [g[0] for g in gold]
    y_pred = [spec.labels[int(j)] for j in np.argmax(scores, axis=1)]
    if metric == "micro_f1":
        return float(accuracy_score(y_true, y_pred))
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def compare_models(
    current: LoadedModel | None,
    new: LoadedModel,
    data: Dataset,
    metric: str = DEFAULT_METRIC,
    tolerance: float = 0.0,
    basis: str = "",
    allow_dropped_heads: bool = False,
    on_rows: Callable[[int], None] = lambda _: None,
) -> GateDecision:
    """Decide whether ``new`` may replace ``current`` (see the module docstring for the rule).

    ``allow_dropped_heads`` (``train --allow-head-changes``): a head only the current model has, or
    one of another kind in the new model, is shown, not refused. ``on_rows(n)``: n more rows
    scored, by one model or the other (2 x ``len(data.rows)`` in all, when there is a current
    model)."""
    if metric not in METRICS:
        raise ValueError(f"unknown gate metric {metric!r}; known: {', '.join(METRICS)}")
    if tolerance < 0:
        raise ValueError("the gate tolerance must be >= 0")
    base = GateDecision(
        False, "", metric, tolerance, "", new.manifest.version, eval_rows=len(data.rows), basis=basis
    )
    if current is None:
        return replace(base, promote=True, reason="no current model to compare with")
    cur_specs = {h.name: h for h in current.manifest.heads}
    new_specs = {h.name: h for h in new.manifest.heads}
    changed = {h for h in cur_specs if h in new_specs and cur_specs[h].kind != new_specs[h].kind}
    shared = [h for h in cur_specs if h in new_specs and h in data.heads and h not in changed]
    cur_scores = _head_scores(current, data, shared, on_rows)
    new_scores = _head_scores(new, data, shared, on_rows)
    rows: list[HeadComparison] = []
    for name in cur_specs:
        if name not in new_specs:
            rows.append(HeadComparison(name, "dropped head"))
        elif name in changed:
            rows.append(HeadComparison(name, "kind changed"))
        elif name not in data.heads:
            rows.append(HeadComparison(name, "not in eval data"))
        else:
            c, n = cur_specs[name], new_specs[name]
            labels = list(dict.fromkeys((*c.labels, *n.labels)))
            gold = data.labels(name)
            rows.append(
                HeadComparison(
                    name,
                    "shared",
                    head_metric(c, gold, cur_scores[name], labels, metric),
                    head_metric(n, gold, new_scores[name], labels, metric),
                    tuple(x for x in n.labels if x not in c.labels),
                    tuple(x for x in c.labels if x not in n.labels),
                )
            )
    rows.extend(HeadComparison(name, "new head") for name in new_specs if name not in cur_specs)
    base = replace(base, current_version=current.manifest.version, heads=tuple(rows))
    dropped = [r.head for r in rows if r.status == "dropped head"]
    if dropped and not allow_dropped_heads:
        return replace(base, reason=f"the new model drops head(s) {', '.join(dropped)}")
    if changed and not allow_dropped_heads:
        return replace(base, reason=f"the new model changes the kind of head(s) {', '.join(sorted(changed))}")
    scored = [r for r in rows if r.status == "shared"]
    if not scored:
        return replace(base, reason="no shared head is labelled in the evaluation data")
    cur = sum(r.current or 0.0 for r in scored) / len(scored)
    new_score = sum(r.new or 0.0 for r in scored) / len(scored)
    base = replace(base, current_score=cur, new_score=new_score)
    if new_score + tolerance + EPSILON >= cur:
        verdict = "better" if new_score > cur + EPSILON else "not worse (tie)"
        if new_score + EPSILON < cur:
            verdict = "worse, but within the tolerance"
        return replace(
            base, promote=True, reason=f"new {metric} {new_score:.4f} vs current {cur:.4f}: {verdict}"
        )
    return replace(
        base,
        reason=f"new {metric} {new_score:.4f} is worse than current {cur:.4f} "
        f"by {cur - new_score:.4f} (tolerance {tolerance:.4f})",
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_comparison(decision: GateDecision) -> str:
    """The table ``train --promote-if-better`` prints, whatever the outcome."""
    d = decision
    cur_head, new_head = f"current {d.current_version or '-'}", f"new {d.new_version}"
    w1, w2 = max(10, len(cur_head)), max(10, len(new_head))
    lines = [
        f"quality gate: {d.metric} on {d.eval_rows} evaluation rows, tolerance {d.tolerance:.4f}",
        *([f"  gates on: {d.basis}"] if d.basis else []),
        f"  {'head':<16} {cur_head:>{w1}} {new_head:>{w2}} {'delta':>8}  note",
    ]
    for r in d.heads:
        note = "" if r.status == "shared" else r.status
        changes = []
        if r.labels_added:
            changes.append("+" + ",".join(r.labels_added))
        if r.labels_removed:
            changes.append("-" + ",".join(r.labels_removed))
        if changes:
            note = ("labels " + " ".join(changes) + " " + note).strip()
        delta = "-" if r.delta is None else f"{r.delta:+.4f}"
        lines.append(
            f"  {r.head:<16} {_fmt(r.current):>{w1}} {_fmt(r.new):>{w2}} {delta:>8}  {note}".rstrip()
        )
    if d.current_score is not None and d.new_score is not None:
        lines.append(
            f"  {'mean (shared)':<16} {_fmt(d.current_score):>{w1}} {_fmt(d.new_score):>{w2}}"
            f" {d.new_score - d.current_score:>+8.4f}"
        )
    lines.append(f"  => {'PROMOTE' if d.promote else 'REFUSE'}: {d.reason}")
    return "\n".join(lines)
