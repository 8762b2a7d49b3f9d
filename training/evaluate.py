"""Metrics per head, threshold tuning, and the text/JSON reports of ``newstagger evaluate``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from service.core.validation import quote
from service.model.article_model import articles_to_matrix
from service.model.artifact import LoadedModel
from service.model.manifest import HeadSpec
from training.config import ThresholdConfig
from training.data import Dataset

UNKNOWN_EXAMPLES = 5  # row ids shown for gold labels the model does not know


def indicator(labels: Sequence[tuple[str, ...]], label_set: Sequence[str]) -> NDArray[np.int8]:
    index = {label: j for j, label in enumerate(label_set)}
    Y = np.zeros((len(labels), len(label_set)), dtype=np.int8)
    for i, row in enumerate(labels):
        for label in row:
            if label in index:
                Y[i, index[label]] = 1
    return Y


def _best_cutoff(
    y: NDArray[np.int8], s: NDArray[np.float64], grid: NDArray[np.float64]
) -> tuple[float, float]:
    """The grid cut-off with the highest F1 of ``s >= t`` against ``y`` (lowest such t on ties)."""
    pred = s[None, :] >= grid[:, None]  # (grid, n)
    tp = (pred & (y[None, :] == 1)).sum(axis=1).astype(np.float64)
    denom = pred.sum(axis=1) + float(y.sum())
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    best = int(np.argmax(f1))
    return float(grid[best]), float(f1[best])


def tune_thresholds(Y: NDArray[np.int8], scores: NDArray[np.float64], cfg: ThresholdConfig) -> list[float]:
    """Per label, the score cut-off that maximises F1 on dev.

    A label with fewer than ``cfg.min_positives`` dev positives takes the fallback: with
    ``fallback = "global"`` one cut-off tuned on every label's scores pooled (micro-F1), so a rare
    label keeps a cut-off fitted to how the model scores (a fixed 0.5 silences most rare labels of
    a linear model); else ``cfg.default``. ``cfg.shrinkage`` = k pulls a tuned cut-off toward the
    global one with weight k / (k + positives), which steadies labels with few dev positives.
    Every tuned cut-off is then multiplied by ``cfg.scale`` (capped below 1).
    """
    n_labels = Y.shape[1]
    if not cfg.tune or n_labels == 0:
        return [cfg.default] * n_labels
    grid = np.linspace(cfg.grid_min, cfg.grid_max, cfg.grid_steps)
    fallback = cfg.default
    if cfg.fallback == "global" and Y.sum() > 0:
        fallback, _ = _best_cutoff(Y.ravel(), scores.ravel(), grid)
    thresholds = []
    for j in range(n_labels):
        y, s = Y[:, j], scores[:, j]
        positives = int(y.sum())
        if positives < max(1, cfg.min_positives):
            thresholds.append(round(fallback, 4))
            continue
        t, f1 = _best_cutoff(y, s, grid)
        if f1 < cfg.min_f1:
            thresholds.append(round(fallback, 4))
            continue
        if cfg.shrinkage > 0:
            w = cfg.shrinkage / (cfg.shrinkage + positives)
            t = w * fallback + (1 - w) * t
        thresholds.append(round(t, 4))
    return [round(min(t * cfg.scale, 0.999), 4) for t in thresholds]


def _per_label(labels: Sequence[str], p: Any, r: Any, f: Any, s: Any) -> dict[str, dict[str, float]]:
    return {
        label: {
            "precision": round(float(p[j]), 4),
            "recall": round(float(r[j]), 4),
            "f1": round(float(f[j]), 4),
            "support": int(s[j]),
        }
        for j, label in enumerate(labels)
    }


def unknown_gold(
    spec: HeadSpec, gold: Sequence[tuple[str, ...]], ids: Sequence[str] = ()
) -> dict[str, Any] | None:
    """Gold labels the model does not know ("Neutral" for `neutral`, a new topic): how many, which,
    and the first rows with one. The metrics count each as an error (the model never predicts it)."""
    known = set(spec.labels)
    counts = Counter(label for row in gold for label in row if label not in known)
    if not counts:
        return None
    rows = [i for i, row in enumerate(gold) if any(label not in known for label in row)]
    return {
        "count": sum(counts.values()),
        "rows": len(rows),
        "labels": dict(counts.most_common()),
        "examples": [ids[i] for i in rows[:UNKNOWN_EXAMPLES]] if ids else [],
    }


def label_prf(Y: NDArray[np.int8], P: NDArray[np.int8], average: str | None) -> Any:
    """Precision, recall, F1 and support over the label columns of indicator matrices ``Y`` (gold)
    and ``P`` (predicted). scikit-learn reads a single column (a head with one label) as a binary
    target of two classes: then only its positive class, the label, is scored."""
    if Y.shape[1] == 1:
        return precision_recall_fscore_support(Y[:, 0], P[:, 0], labels=[1], average=average, zero_division=0)
    return precision_recall_fscore_support(Y, P, average=average, zero_division=0)


def head_metrics(
    spec: HeadSpec, gold: Sequence[tuple[str, ...]], scores: NDArray[np.float64], ids: Sequence[str] = ()
) -> dict[str, Any]:
    unknown = unknown_gold(spec, gold, ids)
    # unknown gold labels are extra columns the model never predicts: each one is an error
    extra = list(unknown["labels"]) if unknown else []
    labels = list(spec.labels) + extra
    scores = np.hstack([scores, np.zeros((scores.shape[0], len(extra)))]) if extra else scores
    if spec.kind == "multi":
        Y = indicator(gold, labels)
        P = (scores[:, : len(spec.labels)] >= np.asarray(spec.thresholds)).astype(np.int8)
        P = np.hstack([P, np.zeros((P.shape[0], len(extra)), dtype=np.int8)])
        out: dict[str, Any] = {"kind": "multi", "n": len(gold)}
        if unknown:
            out["unknown_gold"] = unknown
        for avg in ("micro", "macro"):
            p, r, f, _ = label_prf(Y, P, avg)
            out[avg] = {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(f), 4),
            }
        p, r, f, s = label_prf(Y, P, None)
        present = (Y.sum(axis=0) > 0) | (P.sum(axis=0) > 0)  # labels the data or the model mention
        out["macro_present"] = {
            "f1": round(float(f[present].mean()) if present.any() else 0.0, 4),
            "labels": int(present.sum()),
        }
        out["per_label"] = _per_label(labels, p, r, f, s)
        return out
    y_true = [g[0] for g in gold]
    y_pred = [labels[int(j)] for j in np.argmax(scores[:, : len(spec.labels)], axis=1)]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "kind": "single",
        "n": len(gold),
        **({"unknown_gold": unknown} if unknown else {}),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(
            float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 4
        ),
        "per_label": _per_label(labels, p, r, f, s),
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def evaluate_model(
    loaded: LoadedModel,
    data: Dataset,
    batch_size: int = 1024,
    on_batch: Callable[[int], None] = lambda _: None,
) -> dict[str, Any]:
    """Metrics per head of ``loaded`` on ``data`` (heads missing from the data are skipped);
    ``on_batch(rows)`` after each batch is scored."""
    heads = [h for h in loaded.manifest.heads if h.name in data.heads]
    articles = data.articles()
    scores: dict[str, list[NDArray[np.float64]]] = {h.name: [] for h in heads}
    for start in range(0, len(articles), batch_size):
        X = articles_to_matrix(articles[start : start + batch_size])
        for name, block in loaded.model.scores(X, [h.name for h in heads]).items():
            scores[name].append(block)
        on_batch(len(X))
    ids = [a.id for a in articles]
    return {h.name: head_metrics(h, data.labels(h.name), np.vstack(scores[h.name]), ids) for h in heads}


def headline(metrics: dict[str, Any]) -> str:
    """One line per head: the figures people quote."""
    lines = []
    for head, m in metrics.items():
        if m["kind"] == "multi":
            present = m.get("macro_present", {})
            lines.append(
                f"{head}: micro-F1 {m['micro']['f1']:.4f}  macro-F1 {m['macro']['f1']:.4f}"
                f" (over the {present.get('labels', '?')} labels present: {present.get('f1', 0):.4f})"
                f"  (n={m['n']})"
            )
        else:
            lines.append(f"{head}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']})")
        unknown = m.get("unknown_gold")
        if unknown:
            which = ", ".join(f"{quote(label)} x{n}" for label, n in list(unknown["labels"].items())[:5])
            rows = f"; rows {', '.join(unknown['examples'])}" if unknown["examples"] else ""
            lines.append(
                f"  ! {unknown['count']} gold label(s) in {unknown['rows']} row(s) that the model does not "
                f"know, counted as errors: {which}{rows}"
            )
    return "\n".join(lines)


def format_report(metrics: dict[str, Any]) -> str:
    """The human-readable report: headline figures, per-label rows, confusion matrices."""
    out = [headline(metrics), ""]
    for head, m in metrics.items():
        out.append(f"== {head} ({m['kind']}-label)")
        if m["kind"] == "multi":
            for avg in ("micro", "macro"):
                a = m[avg]
                out.append(f"  {avg:<8} P {a['precision']:.4f}  R {a['recall']:.4f}  F1 {a['f1']:.4f}")
        else:
            out.append(f"  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
        out.append(f"  {'label':<28} {'P':>7} {'R':>7} {'F1':>7} {'support':>8}")
        for label, row in m["per_label"].items():
            out.append(
                f"  {label[:28]:<28} {row['precision']:>7.4f} {row['recall']:>7.4f}"
                f" {row['f1']:>7.4f} {row['support']:>8}"
            )
        if m["kind"] == "single":
            labels = m["confusion"]["labels"]
            out.append("  confusion (rows = gold, columns = predicted): " + " ".join(labels))
            for label, row in zip(labels, m["confusion"]["matrix"], strict=True):
                out.append(f"  {label[:20]:<20} " + " ".join(f"{v:>6}" for v in row))
        out.append("")
    return "\n".join(out)
