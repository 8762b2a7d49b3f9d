"""In-process baseline: docs/s of ``Tagger.tag`` at several batch sizes, CPU time per document.

    python benchmarks/inprocess.py                 # 20,000-doc corpus, default model, ~5-10 min cold
    python benchmarks/inprocess.py --quick         # a small corpus and sample: about a minute cold
    python benchmarks/inprocess.py --corpus corpus.jsonl --json out.json

The corpus comes from ``../shared/bench/gen_corpus.py --seed 1234`` (generated into the system temp
dir unless ``--corpus`` names a file; a missing file is generated there). A model is trained on its
first ``--train-docs`` documents with the real ``training.train.train`` and the default
``TrainConfig`` (word + char n-grams, one-vs-rest logistic regression, thresholds tuned on the next
``--dev-docs``), and cached in the temp dir keyed by corpus, split and config. Then the same fixed
sample of unseen documents is tagged at each batch size, ``--repeats`` times; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    Split,
    generate_corpus,
    inprocess_baseline,
    load_model,
    markdown_table,
    read_corpus,
    to_articles,
    trained_model,
)
from service.core.tagger import Tagger  # noqa: E402
from training.config import load_config  # noqa: E402

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
        "--config", type=Path, default=None, help="training config TOML (default: the default TrainConfig)"
    )
    p.add_argument("--quick", action="store_true", help="a short run: " + json.dumps(QUICK))
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.corpus is None:
        corpus = generate_corpus(args.n)
    elif not args.corpus.exists():
        corpus = generate_corpus(args.n, args.corpus)
    else:
        corpus = args.corpus
    split = Split(args.train_docs, args.dev_docs)
    model_dir = trained_model(corpus, split, load_config(args.config))
    loaded = load_model(model_dir)
    sample = to_articles(split.sample(read_corpus(corpus), args.sample))
    tagger = Tagger(loaded)
    load_before = os.getloadavg()[0]
    rows = []
    for batch_size in args.batch_sizes:
        row = inprocess_baseline(tagger, sample, batch_size, args.repeats)
        rows.append(row)
        print(
            f"batch {batch_size:>4}: {row['docs_per_s']:8.1f} docs/s  {row['cpu_ms_per_doc']:6.2f} ms CPU/doc"
            f"  p50 {row['p50_batch_ms']:8.2f} ms/batch",
            file=sys.stderr,
        )
    words = sum(len(a.text.split()) for a in sample) / len(sample)
    f = loaded.manifest.config.get("features", {})
    config_name = "default TrainConfig" if args.config is None else args.config.name
    chars = f"char {f.get('char_ngram_min')}-{f.get('char_ngram_max')}" if f.get("use_char") else "no char"
    print(
        f"\nIn-process `Tagger.tag`, corpus {corpus.name} (seed 1234), model trained on {split.train} docs "
        f"({config_name}: word 1-{f.get('word_ngram_max')} + {chars} n-grams, topics head), "
        f"{len(sample)} unseen docs of {words:.0f} words on average, "
        f"median of {args.repeats} passes; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after (other processes compete "
        "for the CPUs when it is above the CPU count: trust CPU ms/doc over docs/s then).\n"
    )
    print(markdown_table(rows))
    if args.json:
        meta = {
            "corpus": str(corpus),
            "model": str(model_dir),
            "load_average": [load_before, os.getloadavg()[0]],
        }
        args.json.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
