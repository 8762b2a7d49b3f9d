"""Model quality on public datasets: cross-validated estimate, dev and (optionally) test, one table.

    python benchmarks/quality.py --datasets-dir DIR --out benchmarks/results/quality.md
    python benchmarks/quality.py --datasets-dir DIR --test-dir TESTDIR     # + a test column
    NEWSTAGGER_DATASETS=DIR python benchmarks/quality.py --only semeval2016_task6

The datasets are not in the repository (their terms allow research use only): where to get them
and the layout DIR must have (``DIR/<dataset>/train.jsonl``, ``dev.jsonl``, ...) are in
``benchmarks/README.md`` ("Datasets"). ``--test-dir`` has the same layout with ``test.jsonl``
(FNC-1: and the test ``bodies.jsonl``); score it once, at the end, never to choose anything.

Each dataset is trained on its ``train.jsonl`` with ``benchmarks/configs/<dataset>.toml`` through
``training.train.train()`` (what ``newstagger train --config ... --data ... --dev ...`` runs):
cut-offs and the **CV** column from k-fold cross-validation on train; the artifact is written to a
temp dir, loaded back with the service's loader and scored on ``dev.jsonl`` (**dev**, never tuned
on) and ``test.jsonl`` (**test**). Data preparation, into the temp dir only:

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

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.model.article_model import articles_to_matrix  # noqa: E402
from service.model.artifact import load_artifact  # noqa: E402
from training.config import HeadConfig, TrainConfig, load_config  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import head_metrics  # noqa: E402
from training.train import train  # noqa: E402

CONFIGS = REPO / "benchmarks" / "configs"
DATASETS = ("reuters21578_modapte", "bbc_news", "semeval2016_task6", "fnc1")
FNC_RELATED = ("agree", "disagree", "discuss")
GROUP_FIELDS = {"fnc1": "story"}  # grouped cross-validation (unless the config names a group field)


@dataclass
class Result:
    dataset: str
    columns: dict[str, tuple[int, dict[str, float]]]  # "cv"/"dev"/"test" -> (rows, official figures)
    train_seconds: float
    docs_per_second: float
    model_mb: float
    cv_note: str = ""


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


def run_dataset(dataset: str, datasets_dir: Path, tmp: Path, test_dir: Path | None) -> Result:
    config = load_config(CONFIGS / f"{dataset}.toml")
    if not config.group_field and dataset in GROUP_FIELDS:
        config = replace(config, group_field=GROUP_FIELDS[dataset])
    src = datasets_dir / dataset
    train_path = prepare(dataset, src / "train.jsonl", tmp, config, datasets_dir)
    dev_path = prepare(dataset, src / "dev.jsonl", tmp, config, datasets_dir)
    out = tmp / f"model-{dataset}"
    started = time.perf_counter()
    manifest = train([train_path], out, config, [dev_path], version="bench")
    train_seconds = time.perf_counter() - started
    loaded = load_artifact(out)
    spec = manifest.heads[0]
    heads = {spec.name: HeadConfig(spec.kind, spec.target, labels=tuple(spec.labels))}
    columns = {"cv": (manifest.data["train_rows"], official(dataset, manifest.metrics["cv"][spec.name]))}
    splits = {"dev": dev_path}
    if test_dir is not None:
        splits["test"] = prepare(dataset, test_dir / dataset / "test.jsonl", tmp, config, datasets_dir)
    docs_per_second = 0.0
    for name, path in splits.items():
        data = load_dataset([path], config, heads=heads)
        X = articles_to_matrix(data.articles())
        loaded.model.scores(X[:64], [spec.name])  # warm-up
        t0 = time.perf_counter()
        blocks = [loaded.model.scores(X[i : i + 512], [spec.name])[spec.name] for i in range(0, len(X), 512)]
        if name == "dev":
            docs_per_second = len(X) / (time.perf_counter() - t0)
        m = head_metrics(spec, data.labels(spec.name), np.vstack(blocks))
        columns[name] = (len(data.rows), official(dataset, m))
    cv = manifest.data.get("cv", {})
    grouped = f", grouped by {cv['group_field']} ({cv['groups']} groups)" if cv.get("group_field") else ""
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    return Result(
        dataset, columns, train_seconds, docs_per_second, size, f"{cv.get('folds', '?')}-fold{grouped}"
    )


def table(results: Sequence[Result], with_test: bool) -> str:
    kinds = ("cv", "dev", "test") if with_test else ("cv", "dev")
    titles = {"cv": "CV estimate (train)", "dev": "dev (scored only)", "test": "test"}
    lines = [
        "| dataset | " + " | ".join(titles[k] for k in kinds) + " | train s | predict docs/s | model MB |",
        "|---|" + "---|" * len(kinds) + "---:|---:|---:|",
    ]
    for r in results:
        cells = []
        for k in kinds:
            rows, figures = r.columns[k]
            note = f"; {r.cv_note}" if k == "cv" else ""
            cells.append(f"{describe(figures)} (n={rows:,}{note})")
        lines.append(
            f"| {r.dataset} | "
            + " | ".join(cells)
            + f" | {r.train_seconds:.1f} | {r.docs_per_second:,.0f} | "
            f"{r.model_mb:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    from_env = os.environ.get("NEWSTAGGER_DATASETS")
    parser.add_argument(
        "--datasets-dir",
        type=Path,
        default=Path(from_env) if from_env else None,
        required=not from_env,
        help="Directory with one folder per dataset (default: $NEWSTAGGER_DATASETS); "
        "see benchmarks/README.md, Datasets.",
    )
    parser.add_argument(
        "--test-dir",
        type=Path,
        default=None,
        help="Directory laid out like --datasets-dir with DATASET/test.jsonl: adds a test column.",
    )
    parser.add_argument("--out", type=Path, default=None, help="Write the Markdown table here.")
    parser.add_argument(
        "--only", action="append", choices=DATASETS, help="Run just this dataset (repeatable)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the raw figures as JSON.")
    args = parser.parse_args(argv)
    chosen = args.only or DATASETS
    needed = [args.datasets_dir / d / f for d in chosen for f in ("train.jsonl", "dev.jsonl")]
    if args.test_dir is not None:
        needed += [args.test_dir / d / "test.jsonl" for d in chosen]
    for path in needed:
        if not path.is_file():
            parser.error(
                f"no {path}: get the dataset and convert it as benchmarks/README.md (Datasets) "
                "describes, or pick others with --only"
            )
    results = []
    with tempfile.TemporaryDirectory(prefix="newstagger-quality-") as tmp:
        for dataset in chosen:
            print(f"== {dataset}", file=sys.stderr, flush=True)
            results.append(run_dataset(dataset, args.datasets_dir, Path(tmp), args.test_dir))
            for kind, (rows, figures) in results[-1].columns.items():
                print(f"   {kind} ({rows} rows): {describe(figures)}", file=sys.stderr, flush=True)
    text = (
        "# Model quality\n\n"
        "`python benchmarks/quality.py`: trained on each dataset's `train.jsonl` with "
        "`benchmarks/configs/<dataset>.toml`; **CV** = out-of-fold estimate on train (what the cut-offs "
        "were tuned on), **dev** = `dev.jsonl`, scored only"
        + (", **test** = `test.jsonl`, scored only" if args.test_dir else "")
        + f". Machine: {os.cpu_count()} cores, Python {platform.python_version()}.\n\n"
        + table(results, args.test_dir is not None)
        + "\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        raw = {
            r.dataset: {
                **{k: {"rows": rows, **figures} for k, (rows, figures) in r.columns.items()},
                "cv_folds": r.cv_note,
                "train_seconds": r.train_seconds,
                "docs_per_second": r.docs_per_second,
                "model_mb": r.model_mb,
            }
            for r in results
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
