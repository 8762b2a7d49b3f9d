"""A model's topic and stance tags on real news nobody here wrote, labelled blind by the guide.

    newstagger train --out /tmp/default-model                 # the default model (or any model dir)
    python benchmarks/real_news.py --model /tmp/default-model --bodies train_bodies.csv
    python benchmarks/real_news.py --model M --bodies bodies.jsonl --split dev --show
    python benchmarks/real_news.py --model M --set reuters-bbc --datasets-dir DIR --split dev

The starter corpus was written for the project; these are the checks on real news. The texts are
not in the repository; the labels are (``benchmarks/real_news/*.json``): topics and stance by
``docs/labels.md``, from annotators who saw only the text and the guide, never a model's output.

``--set fnc1`` (the default): 600 of FNC-1's 1,683 training article bodies (2014-2015 web news:
viral claims, the Islamic State, hostages, Ebola, celebrity hoaxes; ``train_bodies.csv`` of
github.com/FakeNewsChallenge/fnc-1, or a JSONL of ``{"body_id", "text"}``). Two splits, by body
id: ``dev`` (even ids) may be used to compare models and choose among them; ``report`` (odd ids) is
scored to report a figure, never to choose. In each split the bodies (of 30 words or more) were
sampled in two strata: those the default model of 2026-11-29 gave a topic, and those it gave none
(160 + 240 of 163 + 644 in dev, 90 + 110 of 147 + 672 in report).

``--set reuters-bbc``: articles of Reuters-21578 (1987 business news: all of ModApte train) and BBC
News (2004-2005: its train and dev splits), read from the datasets dir of ``benchmarks/README.md``
("Datasets"). Two splits, each sampled in three strata per source by the default model of
2026-11-30 (commit bb4b3e9): articles of 30 words or more it gave a topic, those it gave none that
use at least two words of conflict vocabulary (``keyword_rule`` in the labels file), and the rest.
``report`` (320: Reuters and BBC's train split, 70 + 40 + 50 per source) is never used to choose;
``dev`` (295, drawn afterwards from the articles ``report`` left, BBC's dev split included) may be.
``--source reuters`` or ``bbc`` scores one source.

The script prints the figures on the sample and the same figures weighted by stratum size: an
estimate for all of the split's articles (on the sample, articles with a topic are over-represented),
then each topic's right, false and missed tags on the sample: where the errors are.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.core.tagger import Tagger  # noqa: E402
from service.core.types import Article  # noqa: E402
from service.model.artifact import load_artifact  # noqa: E402

LABELS = Path(__file__).parent / "real_news"
SETS = {"fnc1": LABELS / "fnc1_bodies_labels.json", "reuters-bbc": LABELS / "reuters_bbc_labels.json"}
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


def read_reuters_bbc(datasets_dir: Path) -> dict[str, str]:
    """Texts keyed "reuters:NEWID" and "bbc:class/NNN", from the JSONL layout of benchmarks/README.md
    ("Datasets"): each source's train.jsonl and dev.jsonl (for Reuters, all of ModApte train)."""
    texts: dict[str, str] = {}
    for source, folder, splits in (
        ("reuters", "reuters21578_modapte", ("train", "dev")),
        ("bbc", "bbc_news", ("train", "dev")),
    ):
        for split in splits:
            path = datasets_dir / folder / f"{split}.jsonl"
            if not path.is_file():
                raise SystemExit(f"no {path}: see benchmarks/README.md, 'Datasets', for the layout")
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        texts[f"{source}:{row['id']}"] = str(row["text"])
    return texts


def labelled(name: str, split: str, source: str = "") -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The labelled rows of one set's split (of one ``source`` of reuters-bbc, if given), each with
    its text's ``key`` and its ``stratum``, and each stratum's population (how many articles of the
    split it stands for)."""
    doc = json.loads(SETS[name].read_text(encoding="utf-8"))
    if name == "fnc1":
        rows = [dict(r, key=r["body_id"]) for r in doc["rows"] if r["split"] == split]
        return rows, doc["population"][split]
    rows = [
        dict(r, key=f"{r['source']}:{r['id']}", stratum=f"{r['source']} {r['stratum']}")
        for r in doc["rows"]
        if r["split"] == split and source in ("", r["source"])
    ]
    population = {
        f"{src} {s}": n for src, sizes in doc["population"][split].items() for s, n in sizes.items()
    }
    return rows, population


def score(
    model_dir: Path, texts: dict[str, str], rows: list[dict[str, Any]], population: dict[str, int], show: bool
) -> dict[str, Any]:
    """The figures on the sample and weighted by stratum, and ``per_label``: each topic's
    [right, false, missed] counts on the sample (unweighted), the errors to read first."""
    missing = [r["key"] for r in rows if r["key"] not in texts]
    if missing:
        raise SystemExit(
            f"the texts lack {len(missing)} labelled articles (e.g. {missing[0]}): "
            "not the files the labels are of?"
        )
    weight = {s: population[s] / n for s, n in Counter(r["stratum"] for r in rows).items()}
    tagger = Tagger(load_artifact(model_dir))
    results = tagger.tag([Article(r["key"], texts[r["key"]][:MAX_CHARS]) for r in rows])
    counts = np.zeros((len(rows), 5))  # tp, fp, fn, stance right, unrelated tagged
    per_label: dict[str, list[int]] = {}
    for i, (row, result) in enumerate(zip(rows, results, strict=True)):
        heads = {h.head: h for h in result.heads}
        predicted = {label.label for label in heads["topics"].labels}
        gold = set(row["topics"])
        stance = heads["stance"].labels[0].label if "stance" in heads else ""
        right, false_alarm = stance == row["stance"], bool(predicted) and not gold
        outcomes = (predicted & gold, predicted - gold, gold - predicted)  # right, false, missed
        counts[i] = (*(len(labels) for labels in outcomes), right, false_alarm)
        for kind, labels in enumerate(outcomes):
            for label in labels:
                per_label.setdefault(label, [0, 0, 0])[kind] += 1
        if show:
            got = f"{sorted(predicted)} {stance}"
            print(f"{row['key']:>10} gold {sorted(gold)} {row['stance']}; model {got}")
    w = np.asarray([weight[r["stratum"]] for r in rows])
    unrelated = np.asarray([not r["topics"] for r in rows])
    out: dict[str, Any] = {"articles": len(rows), "per_label": dict(sorted(per_label.items()))}
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
    p.add_argument("--set", choices=tuple(SETS), default="fnc1", help="which labelled articles")
    p.add_argument("--bodies", type=Path, help="fnc1: train_bodies.csv or {body_id, text} JSONL")
    p.add_argument(
        "--datasets-dir",
        type=Path,
        default=os.environ.get("NEWSTAGGER_DATASETS"),
        help="reuters-bbc: the datasets dir of benchmarks/README.md [env NEWSTAGGER_DATASETS]",
    )
    p.add_argument("--split", choices=("report", "dev"), default="report", help="dev may be chosen on")
    p.add_argument("--source", choices=("reuters", "bbc"), help="reuters-bbc: score one source only")
    p.add_argument("--show", action="store_true", help="print each article's gold and predicted tags")
    args = p.parse_args(argv)
    if args.set == "fnc1":
        if args.bodies is None or args.source:
            p.error("--set fnc1 needs --bodies (and has no --source)")
        texts = read_bodies(args.bodies)
    else:
        if args.datasets_dir is None:
            p.error("--set reuters-bbc needs --datasets-dir")
        texts = read_reuters_bbc(Path(args.datasets_dir))
    rows, population = labelled(args.set, args.split, args.source or "")
    r = score(args.model, texts, rows, population, args.show)
    which = f"{args.set} {args.split}" + (f" {args.source}" if args.source else "")
    print(f"{which}: {r['articles']} labelled articles, model {args.model}")
    print("| figures | topic precision | topic recall | topic micro-F1 | unrelated tagged | stance acc |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("sample", "weighted"):
        keys = ("precision", "recall", "micro_f1", "unrelated_tagged", "stance_accuracy")
        cells = [r[f"{name}_{k}"] for k in keys]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print("\n| topic (sample) | right | false | missed |\n|---|---:|---:|---:|")
    for label, (right, false, missed) in r["per_label"].items():
        print(f"| {label} | {right} | {false} | {missed} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
