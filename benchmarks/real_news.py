"""A model's topic and stance tags on real news: 600 FNC-1 article bodies, labelled blind by the guide.

    newstagger train --out /tmp/default-model                 # the default model (or any model dir)
    python benchmarks/real_news.py --model /tmp/default-model --bodies train_bodies.csv
    python benchmarks/real_news.py --model M --bodies bodies.jsonl --split dev --show

The starter corpus was written for the project; this is the check on news nobody here wrote. The
bodies are FNC-1's 1,683 training article bodies (2014-2015 web news: viral claims, the Islamic
State, hostages, Ebola, celebrity hoaxes; ``train_bodies.csv`` of github.com/FakeNewsChallenge/fnc-1,
or a JSONL of ``{"body_id", "text"}``). They are not in the repository; the labels are
(``benchmarks/real_news/fnc1_bodies_labels.json``): topics and stance of 600 bodies, labelled by
``docs/labels.md`` by annotators who saw only the text and the guide, never a model's output.

Two splits, by body id: ``dev`` (even ids) may be used to compare models and choose among them;
``report`` (odd ids) is scored to report a figure, never to choose. In each split the bodies (of
30 words or more) were sampled in two strata: those the default model of 2026-11-29 gave a topic,
and those it gave none (160 + 240 of 163 + 644 in dev, 90 + 110 of 147 + 672 in report). The script
prints the figures on the sample and the same figures weighted by stratum size: an estimate for
all of that split's bodies (on the sample, articles with a topic are over-represented).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.core.tagger import Tagger  # noqa: E402
from service.core.types import Article  # noqa: E402
from service.model.artifact import load_artifact  # noqa: E402

LABELS = Path(__file__).parent / "real_news" / "fnc1_bodies_labels.json"
MAX_CHARS = 20_000


def read_bodies(path: Path) -> dict[str, str]:
    """body id -> text, from FNC-1's train_bodies.csv or a JSONL of {"body_id", "text"}."""
    if path.suffix == ".csv":
        csv.field_size_limit(10_000_000)
        with path.open(encoding="utf-8", newline="") as f:
            return {row["Body ID"]: row["articleBody"] for row in csv.DictReader(f)}
    with path.open(encoding="utf-8") as f:
        rows = (json.loads(line) for line in f if line.strip())
        return {str(r["body_id"]): str(r["text"]) for r in rows}


def score(model_dir: Path, bodies: dict[str, str], split: str, show: bool) -> dict[str, float]:
    doc = json.loads(LABELS.read_text(encoding="utf-8"))
    rows = [r for r in doc["rows"] if r["split"] == split]
    missing = [r["body_id"] for r in rows if r["body_id"] not in bodies]
    if missing:
        raise SystemExit(
            f"--bodies lacks {len(missing)} labelled bodies (e.g. {missing[0]}): not FNC-1's training bodies?"
        )
    sampled = {s: sum(r["stratum"] == s for r in rows) for s in ("tagged", "untagged")}
    weight = {s: doc["population"][split][s] / n for s, n in sampled.items()}
    tagger = Tagger(load_artifact(model_dir))
    results = tagger.tag([Article(r["body_id"], bodies[r["body_id"]][:MAX_CHARS]) for r in rows])
    counts = np.zeros((len(rows), 5))  # tp, fp, fn, stance right, unrelated tagged
    for i, (row, result) in enumerate(zip(rows, results, strict=True)):
        heads = {h.head: h for h in result.heads}
        predicted = {label.label for label in heads["topics"].labels}
        gold = set(row["topics"])
        stance = heads["stance"].labels[0].label if "stance" in heads else ""
        right, false_alarm = stance == row["stance"], bool(predicted) and not gold
        counts[i] = (len(predicted & gold), len(predicted - gold), len(gold - predicted), right, false_alarm)
        if show:
            got = f"{sorted(predicted)} {stance}"
            print(f"{row['body_id']:>5} gold {sorted(gold)} {row['stance']}; model {got}")
    w = np.asarray([weight[r["stratum"]] for r in rows])
    unrelated = np.asarray([not r["topics"] for r in rows])
    out: dict[str, float] = {"articles": len(rows)}
    for name, ww in (("sample", np.ones(len(rows))), ("weighted", w)):
        tp, fp, fn = (counts[:, :3] * ww[:, None]).sum(axis=0)
        out[f"{name}_precision"] = tp / max(tp + fp, 1e-9)
        out[f"{name}_recall"] = tp / max(tp + fn, 1e-9)
        out[f"{name}_micro_f1"] = 2 * tp / max(2 * tp + fp + fn, 1e-9)
        out[f"{name}_stance_accuracy"] = float((counts[:, 3] * ww).sum() / ww.sum())
        out[f"{name}_unrelated_tagged"] = float((counts[:, 4] * ww).sum() / max((unrelated * ww).sum(), 1e-9))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a model artifact directory")
    p.add_argument("--bodies", type=Path, required=True, help="train_bodies.csv or {body_id, text} JSONL")
    p.add_argument("--split", choices=("report", "dev"), default="report")
    p.add_argument("--show", action="store_true", help="print each article's gold and predicted tags")
    args = p.parse_args(argv)
    r: dict[str, Any] = score(args.model, read_bodies(args.bodies), args.split, args.show)
    print(f"{args.split}: {r['articles']} labelled FNC-1 bodies, model {args.model}")
    print("| figures | topic precision | topic recall | topic micro-F1 | unrelated tagged | stance acc |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("sample", "weighted"):
        keys = ("precision", "recall", "micro_f1", "unrelated_tagged", "stance_accuracy")
        cells = [r[f"{name}_{k}"] for k in keys]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
