"""How much the real-news figures move with the training data alone, and whether extra rows help by
more than that.

    python benchmarks/real_news_spread.py --bodies train_bodies.csv --datasets-dir DIR
    python benchmarks/real_news_spread.py --bodies train_bodies.csv --datasets-dir DIR --add new.jsonl

The default model's recipe (``training/starter/config.toml``, or ``--config``) is trained on the
training file (``--train``, default the starter ``train.jsonl``) and on ``--subsets`` random subsets
of it (each row kept with probability ``--fraction``, drawn by ``random.Random(--seed + k)`` for
subset k), and each model is scored on the dev splits of both labelled real-news sets of
``benchmarks/real_news.py`` (weighted topic micro-F1). The spread over the training sets is how far
two models can differ by their training rows alone; the bootstrap intervals of a single comparison
do not include it. With ``--add``, every training set is trained again with those rows appended,
and each set's gain in the mean of the two figures is printed: a batch of new training articles
that helps only on some training sets is noise. About 20 s of training per model on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import real_news  # noqa: E402

from training.config import load_config  # noqa: E402
from training.progress import Progress  # noqa: E402
from training.train import STARTER_CONFIG, STARTER_DIR, train, train_units  # noqa: E402

SETS = ("fnc1", "reuters-bbc")


def jsonl_lines(path: Path) -> list[str]:
    """The non-blank lines of a JSON Lines file, each ending in a newline."""
    return [line + "\n" for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_sets(
    lines: Sequence[str], subsets: int, fraction: float, seed: int
) -> list[tuple[str, list[str]]]:
    """The whole file and ``subsets`` random subsets of its lines, each line kept with probability
    ``fraction`` (subset k drawn by ``random.Random(seed + k)``, so a run can be repeated)."""
    out = [("all", list(lines))]
    for k in range(1, subsets + 1):
        rng = random.Random(seed + k)
        out.append((f"subset {k}", [line for line in lines if rng.random() < fraction]))
    return out


def summary(base: Sequence[float], added: Sequence[float] = ()) -> str:
    """One line: the spread of the mean figure over the training sets, and with ``added`` (the same
    sets with extra rows) the mean gain and how many sets gained."""
    line = f"spread of the mean over {len(base)} training sets: {min(base):.3f}-{max(base):.3f}"
    if added:
        gains = [a - b for a, b in zip(added, base, strict=True)]
        line += (
            f"; with the added rows: mean gain {statistics.mean(gains):+.4f}, "
            f"up on {sum(g > 0 for g in gains)} of {len(gains)}"
        )
    return line


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--bodies", type=Path, required=True, help="FNC-1 train_bodies.csv or {body_id, text} JSONL"
    )
    p.add_argument(
        "--datasets-dir",
        type=Path,
        default=os.environ.get("NEWSTAGGER_DATASETS"),
        help="the datasets dir of benchmarks/README.md, for Reuters/BBC [env NEWSTAGGER_DATASETS]",
    )
    p.add_argument("--train", type=Path, default=STARTER_DIR / "train.jsonl")
    p.add_argument("--config", type=Path, default=STARTER_CONFIG)
    p.add_argument("--add", type=Path, help="JSONL rows to append to every training set")
    p.add_argument("--subsets", type=int, default=5)
    p.add_argument("--fraction", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=200)
    args = p.parse_args(argv)
    if args.datasets_dir is None:
        p.error("--datasets-dir is required (or NEWSTAGGER_DATASETS)")
    if not 0.0 < args.fraction <= 1.0 or args.subsets < 0:
        p.error("--fraction must be in (0, 1] and --subsets >= 0")
    texts = {
        "fnc1": real_news.read_bodies(args.bodies),
        "reuters-bbc": real_news.read_reuters_bbc(args.datasets_dir),
    }
    labelled = {name: real_news.labelled(name, "dev") for name in SETS}
    config = load_config(args.config)
    extra = jsonl_lines(args.add) if args.add else []
    lines = jsonl_lines(args.train)
    variants: list[tuple[str, list[str]]] = [("", [])] + ([("+ added", extra)] if extra else [])
    means: dict[str, list[float]] = {name: [] for name, _ in variants}
    print(
        "| training set | rows | model | FNC-1 dev | Reuters/BBC dev | mean |\n|---|---:|---|---:|---:|---:|"
    )
    with tempfile.TemporaryDirectory(prefix="real-news-spread-") as tmp:
        for i, (name, rows) in enumerate(training_sets(lines, args.subsets, args.fraction, args.seed)):
            for variant, added in variants:
                tag = f"{i}-added" if added else str(i)
                data = Path(tmp) / f"train-{tag}.jsonl"
                data.write_text("".join(rows + added), encoding="utf-8")
                out = Path(tmp) / f"model-{tag}"
                print(f"== {name} {variant}".rstrip(), file=sys.stderr, flush=True)
                train([data], out, config, progress=Progress.to_stderr(train_units(config), quiet=True))
                f1 = [real_news.score(out, texts[s], *labelled[s], False)["weighted_micro_f1"] for s in SETS]
                means[variant].append(statistics.mean(f1))
                print(
                    f"| {name} | {len(rows) + len(added)} | {variant or 'as is'} | {f1[0]:.3f} | {f1[1]:.3f} "
                    f"| {means[variant][-1]:.3f} |",
                    flush=True,
                )
    print("\n" + summary(means[""], means.get("+ added", [])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
