"""In-process baseline: docs/s of ``Tagger.tag`` at several batch sizes, CPU time per document,
for the default model and the reference model (word 1-2-grams + logistic regression) in one run.

    python benchmarks/inprocess.py                 # 20,000-doc corpus: ~5 min cold, ~2 min cached
    python benchmarks/inprocess.py --quick         # a small corpus and sample: about a minute cold
    python benchmarks/inprocess.py --corpus corpus.jsonl --json out.json
    python benchmarks/inprocess.py --config my.toml   # compare another training config instead
    python benchmarks/inprocess.py --pipeline      # also the default model through scikit-learn's
                                                   # own featurizer pipeline (not compiled)

The corpus comes from ``benchmarks/gen_corpus.py --seed 1234`` (generated into the system temp
dir unless ``--corpus`` names a file; a missing file is generated there). Both models are trained
on its first ``--train-docs`` documents with the real ``training.train.train`` (topics head), and
cached in the temp dir keyed by corpus, split and config. Then the same fixed sample of unseen
documents is tagged at each batch size, ``--repeats`` times, the two models taking turns within
each repeat so that both see the same machine load; medians are reported, and the ratio of the
default model's CPU per document to the reference model's (target: at most 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    Split,
    generate_corpus,
    inprocess_baseline,
    load_model,
    markdown_table,
    read_corpus,
    reference_config,
    to_articles,
    trained_model,
)
from service.core.tagger import Tagger  # noqa: E402
from training.config import load_config  # noqa: E402
from training.train import STARTER_CONFIG  # noqa: E402

QUICK = {"n": 3000, "train_docs": 1000, "dev_docs": 250, "sample": 256, "repeats": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="corpus size (documents)")
    p.add_argument("--corpus", type=Path, default=None, help="corpus JSONL (generated there if missing)")
    p.add_argument("--train-docs", type=int, default=4000, help="documents the model is trained on")
    p.add_argument("--dev-docs", type=int, default=1000, help="documents thresholds are tuned on")
    p.add_argument("--sample", type=int, default=1024, help="unseen documents tagged per pass")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per batch size (median)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64, 512])
    p.add_argument(
        "--config",
        type=Path,
        default=STARTER_CONFIG,
        help="training config TOML (default: the shipped default model's, training/starter/config.toml)",
    )
    p.add_argument("--quick", action="store_true", help="a short run: " + json.dumps(QUICK))
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument(
        "--pipeline",
        action="store_true",
        help="also time the default model featurized by scikit-learn's own pipeline, not the compiled "
        "one (service/model/fast_features.py), and print that ratio",
    )
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def _describe(loaded: Any) -> str:
    f = loaded.manifest.config.get("features", {})
    chars = f"+ char {f.get('char_ngram_min')}-{f.get('char_ngram_max')}" if f.get("use_char") else "no char"
    chars += " + within-word char 4-grams" if f.get("char4") else ""
    title = f", headline x{f.get('title_repeat')}" if f.get("title_repeat", 1) != 1 else ""
    weights = loaded.manifest.config.get("classifier", {}).get("class_weight") or "unweighted"
    return f"word 1-{f.get('word_ngram_max')} {chars}{title}, {weights} logistic regression"


def measure(taggers: dict[str, Tagger], sample: list[Any], batch_size: int, repeats: int) -> dict[str, Any]:
    """Every model at one batch size, taking turns in each repeat; medians and per-repeat ratios."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in taggers}
    for _ in range(repeats):
        for name, tagger in taggers.items():
            runs[name].append(inprocess_baseline(tagger, sample, batch_size, 1))
    out: dict[str, Any] = {"batch_size": batch_size}
    for name, rows in runs.items():
        out[name] = {
            "batch_size": batch_size,
            "docs": len(sample),
            "repeats": repeats,
            "docs_per_s": statistics.median(r["docs_per_s"] for r in rows),
            "cpu_ms_per_doc": statistics.median(r["cpu_ms_per_doc"] for r in rows),
            "p50_batch_ms": statistics.median(r["p50_batch_ms"] for r in rows),
            "runs_docs_per_s": [round(r["docs_per_s"], 1) for r in rows],
        }
    ratios = [
        d["cpu_ms_per_doc"] / r["cpu_ms_per_doc"]
        for d, r in zip(runs["default"], runs["reference"], strict=True)
    ]
    out["cpu_ratio"] = statistics.median(ratios)
    out["cpu_ratio_runs"] = [round(x, 2) for x in ratios]
    if "pipeline" in runs:
        compiled = [
            d["cpu_ms_per_doc"] / p["cpu_ms_per_doc"]
            for d, p in zip(runs["default"], runs["pipeline"], strict=True)
        ]
        out["compiled_ratio"] = statistics.median(compiled)
        out["compiled_ratio_runs"] = [round(x, 2) for x in compiled]
    return out


def uncompiled(loaded: Any) -> Any:
    """The model with each featurizer's own ``transform`` in place of the compiled one that
    ``ArticleModel.featurizer`` builds on first use."""
    model = loaded.model
    model.__dict__["_featurizers"] = {name: f.transform for name, f in model.featurizers.items()}
    return loaded


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.corpus is None:
        corpus = generate_corpus(args.n)
    elif not args.corpus.exists():
        corpus = generate_corpus(args.n, args.corpus)
    else:
        corpus = args.corpus
    split = Split(args.train_docs, args.dev_docs)
    configs = {"reference": reference_config(), "default": load_config(args.config)}
    loaded = {name: load_model(trained_model(corpus, split, config)) for name, config in configs.items()}
    taggers = {name: Tagger(model) for name, model in loaded.items()}
    if args.pipeline:
        taggers["pipeline"] = Tagger(uncompiled(load_model(trained_model(corpus, split, configs["default"]))))
    sample = to_articles(split.sample(read_corpus(corpus), args.sample))
    load_before = os.getloadavg()[0]
    results = []
    for batch_size in args.batch_sizes:
        row = measure(taggers, sample, batch_size, args.repeats)
        results.append(row)
        print(
            f"batch {batch_size:>4}: "
            + "  ".join(f"{n} {row[n]['cpu_ms_per_doc']:6.2f} ms CPU/doc" for n in taggers)
            + f"  ratio {row['cpu_ratio']:.2f}x"
            + (f"  compiled/pipeline {row['compiled_ratio']:.2f}x" if "compiled_ratio" in row else ""),
            file=sys.stderr,
        )
    words = sum(len(a.text.split()) for a in sample) / len(sample)
    default_name = args.config.name
    print(
        f"\nIn-process `Tagger.tag`, corpus {corpus.name} (seed 1234), models trained on {split.train} docs "
        f"(topics head): reference = {_describe(loaded['reference'])}, {default_name} = "
        f"{_describe(loaded['default'])}; {len(sample)} unseen docs of {words:.0f} words on average, "
        f"median of {args.repeats} passes, the models taking turns; {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after "
        "(other processes compete for the CPUs when it is above the CPU count: trust CPU ms/doc and the "
        "ratio over docs/s then).\n"
    )
    for name in taggers:
        print(f"{name}:\n\n{markdown_table([r[name] for r in results])}\n")
    print("| batch size | default / reference CPU per doc (median) | per repeat |\n|---:|---:|---|")
    for r in results:
        print(
            f"| {r['batch_size']} | **{r['cpu_ratio']:.2f}x** | {', '.join(map(str, r['cpu_ratio_runs']))} |"
        )
    if args.pipeline:
        print(
            "\n| batch size | default, compiled / scikit-learn pipeline CPU per doc (median) | per repeat |"
        )
        print("|---:|---:|---|")
        for r in results:
            runs = ", ".join(map(str, r["compiled_ratio_runs"]))
            print(f"| {r['batch_size']} | **{r['compiled_ratio']:.2f}x** | {runs} |")
    if args.json:
        meta = {"corpus": str(corpus), "load_average": [load_before, os.getloadavg()[0]]}
        args.json.write_text(json.dumps({**meta, "rows": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
