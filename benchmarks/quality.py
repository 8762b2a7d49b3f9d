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
on) and ``test.jsonl`` (**test**). How each dataset is prepared and scored (its official
metrics): ``quality_datasets.py``.
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

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.quality_datasets import describe, official, prepare  # noqa: E402
from service.model.article_model import articles_to_matrix  # noqa: E402
from service.model.artifact import load_artifact  # noqa: E402
from training.config import HeadConfig, load_config  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import head_metrics  # noqa: E402
from training.train import train  # noqa: E402

CONFIGS = REPO / "benchmarks" / "configs"
DATASETS = ("reuters21578_modapte", "bbc_news", "semeval2016_task6", "fnc1")
GROUP_FIELDS = {"fnc1": "story"}  # grouped cross-validation (unless the config names a group field)


@dataclass
class Result:
    dataset: str
    columns: dict[str, tuple[int, dict[str, float]]]  # "cv"/"dev"/"test" -> (rows, official figures)
    train_seconds: float
    docs_per_second: float
    model_mb: float
    cv_note: str = ""


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
