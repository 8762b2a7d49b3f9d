"""What ``quality.py`` knows of each public dataset: how a split is prepared into the shape
``newstagger train`` reads, and the dataset's official figures from ``head_metrics`` output.

Data preparation, into the temp dir only:

* FNC-1: each (headline, body_id, stance) pair is joined with ``bodies.jsonl`` into an article with
  ``title`` = headline and ``text`` = body, and gets ``story``: the connected component of its body
  in the headline-body graph of related pairs (how the dev split's stories are defined). The
  cross-validation folds are grouped by it (``--group-field story``), so no story straddles folds.
* Reuters-21578: each document's topics are restricted to the configured 90 categories (the
  ``labels`` of the config's head); documents left without a topic stay in as negatives.

Official metrics: Reuters micro- and macro-F1 over the 90 categories; SemEval-2016 F_avg (mean F1
of FAVOR and AGAINST); FNC-1 score (% of the maximum, official weighting) and disagree F1; BBC
accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.config import TrainConfig

FNC_RELATED = ("agree", "disagree", "discuss")


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def fnc_stories(pairs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """body_id -> story: connected components of the headline-body graph over related pairs,
    named by their smallest body id (a body with no related pair is a story of its own)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for p in pairs:
        find(f"b:{p['body_id']}")
        if p["stance"] in FNC_RELATED:
            a, b = find(f"b:{p['body_id']}"), find(f"h:{p['headline']}")
            if a != b:
                parent[b] = a
    members: dict[str, list[str]] = {}
    for node in list(parent):
        if node.startswith("b:"):
            members.setdefault(find(node), []).append(node[2:])
    return {body: f"story-{min(bodies, key=_natural)}" for bodies in members.values() for body in bodies}


def _natural(body_id: str) -> tuple[int, str]:
    return (int(body_id), "") if body_id.isdigit() else (0, body_id)


def prepare(dataset: str, split: Path, tmp: Path, config: TrainConfig, datasets_dir: Path) -> Path:
    """``split`` in the shape ``newstagger train`` reads (written into ``tmp`` if it has to change)."""
    if dataset not in ("fnc1", "reuters21578_modapte"):
        return split
    rows = _read_jsonl(split)
    if dataset == "fnc1":
        bodies: dict[str, str] = {}
        for folder in dict.fromkeys((datasets_dir / dataset, split.parent)):
            if (folder / "bodies.jsonl").is_file():
                bodies.update({str(b["body_id"]): b["text"] for b in _read_jsonl(folder / "bodies.jsonl")})
        stories = fnc_stories(rows)
        rows = [
            {
                "id": p["id"],
                "title": p["headline"],
                "text": bodies[str(p["body_id"])],
                "stance": p["stance"],
                "story": stories[str(p["body_id"])],
            }
            for p in rows
        ]
    else:
        allowed = {label for head in config.heads.values() for label in head.labels}
        if not allowed:
            allowed = set((datasets_dir / dataset / "categories90.txt").read_text().split())
        for row in rows:
            row["labels"] = [label for label in row["labels"] if label in allowed]
    return _write_jsonl(tmp / f"{dataset}-{split.parent.name}-{split.stem}.jsonl", rows)


def fnc_score(confusion: dict[str, Any]) -> float:
    """The official FNC-1 weighted score, as a share of the best possible, from a confusion matrix
    (rows gold, columns predicted): +0.25 for related/unrelated right, +0.75 more for the exact
    related class."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    score = best = 0.0
    for g, row in zip(labels, matrix, strict=True):
        for p, count in zip(labels, row, strict=True):
            g_related, p_related = g in FNC_RELATED, p in FNC_RELATED
            best += count * (1.0 if g_related else 0.25)
            score += count * (
                (0.25 if g_related == p_related else 0.0) + (0.75 if g_related and g == p else 0.0)
            )
    return score / best if best else 0.0


def _f1(m: dict[str, Any], label: str) -> float:
    return float(m["per_label"].get(label, {}).get("f1", 0.0))


def official(dataset: str, m: dict[str, Any]) -> dict[str, float]:
    """The dataset's official figures from ``head_metrics`` output (fractions, not %)."""
    if dataset == "reuters21578_modapte":
        figures = {"micro_f1": m["micro"]["f1"], "macro_f1": m["macro"]["f1"]}
        present = [v["f1"] for v in m["per_label"].values() if v["support"] > 0]
        if len(present) < len(m["per_label"]):  # a split without all 90 (dev): also over those it has
            figures |= {"macro_f1_present": float(np.mean(present)), "categories_present": len(present)}
        return figures
    if dataset == "bbc_news":
        return {"accuracy": m["accuracy"]}
    if dataset == "semeval2016_task6":
        return {"f_avg": (_f1(m, "FAVOR") + _f1(m, "AGAINST")) / 2}
    return {"fnc_score": fnc_score(m["confusion"]), "disagree_f1": _f1(m, "disagree")}


def describe(figures: dict[str, float]) -> str:
    if "categories_present" in figures:
        rest = {k: v for k, v in figures.items() if k not in ("macro_f1_present", "categories_present")}
        return (
            f"{describe(rest)} ({figures['macro_f1_present']:.2%} over the "
            f"{figures['categories_present']:.0f} categories it has)"
        )
    names = {
        "micro_f1": "micro-F1",
        "macro_f1": "macro-F1",
        "accuracy": "accuracy",
        "f_avg": "F_avg",
        "fnc_score": "FNC score",
        "disagree_f1": "disagree F1",
    }
    return ", ".join(f"{names[k]} {v:.2%}" for k, v in figures.items())
