"""Model quality on public datasets: train with ``training.train.train()``, score on dev, one table.

    python benchmarks/quality.py --datasets-dir DIR --out benchmarks/results/quality.md
    NEWSTAGGER_DATASETS=DIR python benchmarks/quality.py --only semeval2016_task6

The datasets are not in the repository (their terms allow research use only): where to get them
and the layout DIR must have (``DIR/<dataset>/train.jsonl``, ``dev.jsonl``, ...) are in
``benchmarks/README.md`` ("Datasets").

Each dataset is trained on its ``train.jsonl`` with ``benchmarks/configs/<dataset>.toml`` (the same code
path as ``newstagger train --config ... --data ... --dev ...``), the artifact is written to a temp
dir, loaded back with the service's loader and scored on ``dev.jsonl``. Two datasets need a data
preparation step first (done into the temp dir; nothing is copied into the repo):

* FNC-1: each (headline, body_id, stance) pair is joined with ``bodies.jsonl`` into an article with
  ``title`` = headline and ``text`` = body.
* Reuters-21578: each document's topics are restricted to the configured 90 categories (the
  ``labels`` of the config's head); documents left without a topic stay in as negatives.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.model.article_model import articles_to_matrix  # noqa: E402
from service.model.artifact import load_artifact  # noqa: E402
from training.config import TrainConfig, load_config  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import head_metrics  # noqa: E402
from training.train import train  # noqa: E402

CONFIGS = REPO / "benchmarks" / "configs"
DATASETS = ("reuters21578_modapte", "bbc_news", "semeval2016_task6", "fnc1")
FNC_RELATED = ("agree", "disagree", "discuss")


@dataclass
class Result:
    dataset: str
    metrics: str
    train_seconds: float
    docs_per_second: float
    model_mb: float
    details: dict[str, Any]


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def prepare_fnc1(src: Path, tmp: Path, config: TrainConfig) -> tuple[Path, Path]:
    bodies = {str(b["body_id"]): b["text"] for b in _read_jsonl(src / "bodies.jsonl")}

    def join(name: str) -> Path:
        rows = [
            {"id": p["id"], "title": p["headline"], "text": bodies[str(p["body_id"])], "stance": p["stance"]}
            for p in _read_jsonl(src / f"{name}.jsonl")
        ]
        return _write_jsonl(tmp / f"fnc1-{name}.jsonl", rows)

    return join("train"), join("dev")


def prepare_reuters(src: Path, tmp: Path, config: TrainConfig) -> tuple[Path, Path]:
    allowed = {label for head in config.heads.values() for label in head.labels}
    if not allowed:
        allowed = set((src / "categories90.txt").read_text().split())

    def restrict(name: str) -> Path:
        rows = _read_jsonl(src / f"{name}.jsonl")
        for row in rows:
            row["labels"] = [label for label in row["labels"] if label in allowed]
        return _write_jsonl(tmp / f"reuters-{name}.jsonl", rows)

    return restrict("train"), restrict("dev")


def prepare_plain(src: Path, tmp: Path, config: TrainConfig) -> tuple[Path, Path]:
    return src / "train.jsonl", src / "dev.jsonl"


PREPARE: dict[str, Callable[[Path, Path, TrainConfig], tuple[Path, Path]]] = {
    "reuters21578_modapte": prepare_reuters,
    "bbc_news": prepare_plain,
    "semeval2016_task6": prepare_plain,
    "fnc1": prepare_fnc1,
}


def fnc_score(gold: Sequence[str], pred: Sequence[str]) -> float:
    """The official FNC-1 weighted score, as a share of the best possible score."""
    score = best = 0.0
    for g, p in zip(gold, pred, strict=True):
        g_related, p_related = g in FNC_RELATED, p in FNC_RELATED
        best += 1.0 if g_related else 0.25
        if g_related == p_related:
            score += 0.25
        if g_related and g == p:
            score += 0.75
    return score / best if best else 0.0


def f1_of(per_label: dict[str, Any], label: str) -> float:
    return float(per_label.get(label, {}).get("f1", 0.0))


def summarise(
    dataset: str, m: dict[str, Any], gold: list[str], pred: list[str]
) -> tuple[str, dict[str, Any]]:
    if dataset == "reuters21578_modapte":
        micro, macro = m["micro"]["f1"], m["macro"]["f1"]
        present = [v["f1"] for v in m["per_label"].values() if v["support"] > 0]
        macro_present = float(np.mean(present)) if present else 0.0
        return (
            f"micro-F1 {micro:.2%}, macro-F1 {macro_present:.2%} over the {len(present)} categories "
            f"with dev docs ({macro:.2%} over all {len(m['per_label'])})",
            {"micro_f1": micro, "macro_f1": macro_present, "macro_f1_all": macro},
        )
    if dataset == "bbc_news":
        return (
            f"accuracy {m['accuracy']:.2%}, macro-F1 {m['macro_f1']:.2%}",
            {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]},
        )
    if dataset == "semeval2016_task6":
        favg = (f1_of(m["per_label"], "FAVOR") + f1_of(m["per_label"], "AGAINST")) / 2
        return (
            f"F_avg {favg:.2%} (FAVOR {f1_of(m['per_label'], 'FAVOR'):.2%}, "
            f"AGAINST {f1_of(m['per_label'], 'AGAINST'):.2%})",
            {"f_avg": favg},
        )
    score = fnc_score(gold, pred)
    per = {c: f1_of(m["per_label"], c) for c in (*FNC_RELATED, "unrelated")}
    return (
        f"FNC score {score:.2%}; F1 "
        + ", ".join(f"{c} {v:.2%}" for c, v in per.items())
        + f"; macro-F1 {m['macro_f1']:.2%}",
        {"fnc_score": score, **{f"f1_{c}": v for c, v in per.items()}, "macro_f1": m["macro_f1"]},
    )


def run_dataset(dataset: str, datasets_dir: Path, tmp: Path) -> Result:
    config = load_config(CONFIGS / f"{dataset}.toml")
    train_path, dev_path = PREPARE[dataset](datasets_dir / dataset, tmp, config)
    out = tmp / f"model-{dataset}"
    started = time.perf_counter()
    manifest = train([train_path], out, config, [dev_path], version="bench")
    train_seconds = time.perf_counter() - started
    loaded = load_artifact(out)
    dev = load_dataset(
        [dev_path], config, heads={h.name: config_head(config, h.name, h) for h in manifest.heads}
    )
    X = articles_to_matrix(dev.articles())
    heads = [h.name for h in manifest.heads]
    loaded.model.scores(X[:64], heads)  # warm-up
    t0 = time.perf_counter()
    scores = {}
    for start in range(0, len(X), 512):
        for name, block in loaded.model.scores(X[start : start + 512], heads).items():
            scores.setdefault(name, []).append(block)
    predict_seconds = time.perf_counter() - t0
    spec = manifest.heads[0]
    S = np.vstack(scores[spec.name])
    gold_rows = dev.labels(spec.name)
    m = head_metrics(spec, gold_rows, S)
    gold = [g[0] if g else "" for g in gold_rows]
    pred = [spec.labels[int(j)] for j in np.argmax(S, axis=1)] if spec.kind == "single" else []
    text, details = summarise(dataset, m, gold, pred)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    return Result(dataset, text, train_seconds, len(X) / predict_seconds, size, details)


def config_head(config: TrainConfig, name: str, spec: Any) -> Any:
    from training.config import HeadConfig

    declared = config.heads.get(name, HeadConfig())
    return HeadConfig(spec.kind, spec.target, declared.require_labels, tuple(spec.labels))


def table(results: Sequence[Result]) -> str:
    lines = [
        "| dataset | dev metrics | train s | predict docs/s | model MB | config |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.dataset} | {r.metrics} | {r.train_seconds:.1f} | {r.docs_per_second:,.0f} | "
            f"{r.model_mb:.1f} | `benchmarks/configs/{r.dataset}.toml` |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from_env = os.environ.get("NEWSTAGGER_DATASETS")
    parser.add_argument(
        "--datasets-dir",
        type=Path,
        default=Path(from_env) if from_env else None,
        required=not from_env,
        help="Directory with one folder per dataset (default: $NEWSTAGGER_DATASETS); "
        "see benchmarks/README.md, Datasets.",
    )
    parser.add_argument("--out", type=Path, default=None, help="Write the Markdown table here.")
    parser.add_argument(
        "--only", action="append", choices=DATASETS, help="Run just this dataset (repeatable)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the raw figures as JSON.")
    args = parser.parse_args(argv)
    for dataset in args.only or DATASETS:
        if not (args.datasets_dir / dataset / "train.jsonl").is_file():
            parser.error(
                f"no {args.datasets_dir / dataset / 'train.jsonl'}: get the dataset and convert it as "
                "benchmarks/README.md (Datasets) describes, or pick others with --only"
            )
    results = []
    with tempfile.TemporaryDirectory(prefix="newstagger-quality-") as tmp:
        for dataset in args.only or DATASETS:
            print(f"== {dataset}", file=sys.stderr, flush=True)
            results.append(run_dataset(dataset, args.datasets_dir, Path(tmp)))
            print(f"   {results[-1].metrics}", file=sys.stderr, flush=True)
    text = (
        "# Model quality (dev splits)\n\n"
        "Trained on each dataset's `train.jsonl`, thresholds tuned and scored on its `dev.jsonl` "
        "(`python benchmarks/quality.py`). Machine: "
        f"{_machine()}.\n\n" + table(results) + "\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    r.dataset: {
                        **r.details,
                        "train_seconds": r.train_seconds,
                        "docs_per_second": r.docs_per_second,
                    }
                    for r in results
                },
                indent=2,
            )
        )
    return 0


def _machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} cores, Python {platform.python_version()}"


if __name__ == "__main__":
    raise SystemExit(main())
