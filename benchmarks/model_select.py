"""Choose the default training configuration: candidates compared on quality and speed, one table.

    python benchmarks/model_select.py                      # every candidate, the shipped starter data
    python benchmarks/model_select.py --only default word13 --out table.md

Each candidate is trained on the starter ``train.jsonl`` with the real ``training.train.train``
(cut-offs from 5-fold cross-validation on train), then scored on

* ``cv``: the cross-validated estimate on train (what the choice is made on),
* ``dev``: ``dev.jsonl``, the same distribution as train, held out (scored, never tuned on),
* ``shift``: ``shift.jsonl``, the style-shifted evaluation set (other conflicts, other forms and
  phrasing, written apart from train): the project's own estimate of transfer to real news.

For the shift set the table also gives what a news editor checks: topic recall and precision, the
number of wrong topic labels, how many unrelated articles (no topic) got any topic, and stance
accuracy. Speed is CPU per article at batch 64 on dev + shift, the candidate and the reference
model (word 1-2-grams + logistic regression) taking turns, as a median ratio over ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import inprocess_baseline, reference_config  # noqa: E402
from service.core.tagger import Tagger  # noqa: E402
from service.model.article_model import articles_to_matrix  # noqa: E402
from service.model.artifact import LoadedModel, load_artifact  # noqa: E402
from training.config import HeadConfig, TrainConfig, load_config  # noqa: E402
from training.data import Dataset, load_dataset  # noqa: E402
from training.evaluate import evaluate_model, indicator  # noqa: E402
from training.train import STARTER_CONFIG, STARTER_DIR, train  # noqa: E402


def _features(**kw: Any) -> TrainConfig:
    """The reference configuration with some feature options changed."""
    base = reference_config()
    return replace(base, features=replace(base.features, **kw))


def _classifier(config: TrainConfig, **kw: Any) -> TrainConfig:
    return replace(config, classifier=replace(config.classifier, **kw))


def candidates() -> dict[str, TrainConfig]:
    word = _features(use_char=False)
    return {
        "default": load_config(STARTER_CONFIG),
        "word 1-2 (reference)": reference_config(),
        "word 1-2, balanced": _classifier(word, class_weight="balanced"),
        "word 1-2, stop words, balanced": _classifier(
            _features(use_char=False, stop_words="english"), class_weight="balanced"
        ),
        "word 1-2, title x2, balanced": _classifier(
            _features(use_char=False, title_repeat=2), class_weight="balanced"
        ),
        "word 1-2, balanced, C=3": _classifier(word, class_weight="balanced", C=3.0),
        "word 1-3, balanced": _classifier(
            _features(use_char=False, word_ngram_max=3), class_weight="balanced"
        ),
        "word 1-2 + char_wb 2-5 (old default)": _features(use_char=True),
    }


def editor_view(loaded: LoadedModel, data: Dataset) -> dict[str, Any]:
    """What a news editor checks on a set: topic recall/precision, wrong labels, unrelated articles
    that got a topic, stance accuracy. One scoring pass; the metrics are ``newstagger evaluate``'s."""
    metrics = evaluate_model(loaded, data)
    topics = next(h for h in loaded.manifest.heads if h.name == "topics")
    scores = loaded.model.scores(articles_to_matrix(data.articles()), ["topics"])["topics"]
    P = (scores >= np.asarray(topics.thresholds)).astype(np.int8)
    gold = data.labels("topics")
    Y = indicator(gold, topics.labels)
    tp, fp, fn = int((Y & P).sum()), int(((1 - Y) & P).sum()), int((Y & (1 - P)).sum())
    unrelated = [i for i, g in enumerate(gold) if not g]
    out = {
        "micro_f1": metrics["topics"]["micro"]["f1"],
        "macro_f1": metrics["topics"]["macro"]["f1"],
        "recall": tp / max(1, tp + fn),
        "precision": tp / max(1, tp + fp),
        "wrong": fp,
        "unrelated_tagged": int(P[unrelated].any(axis=1).sum()),
        "unrelated": len(unrelated),
        "n": len(gold),
        "positives": tp + fn,
        "negatives": int(Y.size) - (tp + fn),
    }
    if "stance" in metrics:
        out["stance"] = metrics["stance"]["accuracy"]
    return out


def cpu_ratio(model: LoadedModel, reference: LoadedModel, articles: list[Any], repeats: int) -> float:
    a, b = Tagger(model), Tagger(reference)
    ratios = []
    for k in range(repeats):  # alternate who goes first; 3 passes over every article each turn
        first, second = (a, b) if k % 2 == 0 else (b, a)
        one = inprocess_baseline(first, articles, 64, 3)["cpu_ms_per_doc"]
        two = inprocess_baseline(second, articles, 64, 3)["cpu_ms_per_doc"]
        ratios.append(one / two if first is a else two / one)
    return float(statistics.median(ratios))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, default=STARTER_DIR / "train.jsonl")
    p.add_argument("--dev", type=Path, default=STARTER_DIR / "dev.jsonl")
    p.add_argument("--shift", type=Path, default=STARTER_DIR / "shift.jsonl")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="candidates whose name starts so")
    p.add_argument("--repeats", type=int, default=5, help="speed passes (median ratio)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = p.parse_args(argv)
    chosen = {
        name: config
        for name, config in candidates().items()
        if args.only is None or any(name.startswith(prefix) for prefix in args.only)
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="model-select-") as tmp:
        ref_dir = Path(tmp) / "reference"
        train([args.train], ref_dir, reference_config(), [args.dev], version="reference")
        reference = load_artifact(ref_dir)
        heads = {h.name: HeadConfig(kind=h.kind, target=h.target) for h in reference.manifest.heads}
        dev = load_dataset([args.dev], TrainConfig(), heads=heads)
        shift = load_dataset([args.shift], TrainConfig(), heads=heads)
        sample = dev.articles() + shift.articles()
        for i, (name, config) in enumerate(chosen.items()):
            out = Path(tmp) / f"c{i}"
            print(f"== {name}", file=sys.stderr)
            if config == reference_config():  # the same training run: reuse it
                out = ref_dir
            else:
                train([args.train], out, config, [args.dev], version=f"c{i}")
            loaded = load_artifact(out)
            cv = loaded.manifest.metrics["cv"]
            rows.append(
                {
                    "name": name,
                    "cv_micro": cv["topics"]["micro"]["f1"],
                    "cv_stance": cv["stance"]["accuracy"],
                    "dev": editor_view(loaded, dev),
                    "shift": editor_view(loaded, shift),
                    "cpu": cpu_ratio(loaded, reference, sample, args.repeats),
                }
            )
            print(table(rows[-1:]), file=sys.stderr)
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| candidate | CV topics micro-F1 | CV stance acc | dev topics micro-F1 | dev stance acc "
        "| shift topics micro-F1 | shift recall | shift precision | shift wrong labels "
        "| shift unrelated tagged | shift stance acc | CPU/article vs reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, s = r["dev"], r["shift"]
        lines.append(
            f"| {r['name']} | {r['cv_micro']:.3f} | {r['cv_stance']:.3f} | {d['micro_f1']:.3f} "
            f"| {d.get('stance', float('nan')):.3f} | {s['micro_f1']:.3f} | {s['recall']:.3f} "
            f"| {s['precision']:.3f} | {s['wrong']} / {s['negatives']} "
            f"| {s['unrelated_tagged']} / {s['unrelated']} | {s.get('stance', float('nan')):.3f} "
            f"| {r['cpu']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
