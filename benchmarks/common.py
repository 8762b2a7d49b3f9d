"""Shared benchmark helpers: the corpus, a cached model trained on it, and the in-process baseline.

Every transport benchmark (gRPC, Kafka) reports its figures as a ratio of the in-process
baseline measured *in the same run, on the same machine*::

    from benchmarks.common import inprocess_baseline
    base = inprocess_baseline(tagger, articles, batch_size=64, repeats=5)
    print(base["docs_per_s"], base["cpu_ms_per_doc"], base["p50_batch_ms"])

Corpus: ``benchmarks/gen_corpus.py --n N --seed 1234`` (deterministic: the same seed gives the
same bytes). Model: the real ``training.train.train`` (default ``TrainConfig`` unless told
otherwise) on the first documents of the corpus, cached in the system temp dir under a key of the
corpus bytes, the training split and the config, so reruns start measuring at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `service` and `training` importable
    sys.path.insert(0, str(REPO))

from benchmarks import gen_corpus  # noqa: E402
from service.core.tagger import Tagger  # noqa: E402
from service.core.types import Article  # noqa: E402
from service.model.artifact import LoadedModel, load_artifact, sha256_file  # noqa: E402

CORPUS_SEED = 1234
CACHE_DIR = Path(tempfile.gettempdir()) / "newstagger-bench-cache"


def cache_dir() -> Path:
    path = Path(os.environ.get("NEWSTAGGER_BENCH_CACHE", CACHE_DIR))
    path.mkdir(parents=True, exist_ok=True)
    return path


def generate_corpus(n: int, out: Path | None = None, seed: int = CORPUS_SEED) -> Path:
    """The benchmark corpus of ``n`` documents (JSONL: id, text, topics); generated once per
    (n, seed) into the cache unless ``out`` is given. Written atomically."""
    path = Path(out) if out is not None else cache_dir() / f"corpus-n{n}-s{seed}.jsonl"
    if path.is_file() and out is None:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    gen_corpus.main(["--n", str(n), "--seed", str(seed), "--out", str(partial)])
    os.replace(partial, path)
    return path


def read_corpus(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def to_articles(docs: Sequence[dict[str, Any]]) -> list[Article]:
    return [Article(str(d["id"]), d["text"], d.get("title") or "") for d in docs]


@dataclass(frozen=True)
class Split:
    """How the corpus is used: train on [0, train), tune on [train, train+dev), measure the rest."""

    train: int
    dev: int

    def sample(self, docs: Sequence[dict[str, Any]], size: int) -> list[dict[str, Any]]:
        """A fixed sample the model never saw: the first ``size`` documents after train and dev."""
        rest = list(docs[self.train + self.dev :])
        if len(rest) < size:
            raise ValueError(
                f"corpus has {len(docs)} documents: too few for {self.train} train + {self.dev} dev "
                f"+ a sample of {size}"
            )
        return rest[:size]


def _code_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([*(REPO / "service" / "model").glob("*.py"), *(REPO / "training").glob("*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def trained_model(corpus: Path, split: Split, config: Any = None, log: Any = sys.stderr) -> Path:
    """An artifact trained with the real ``training.train.train`` on ``corpus`` (topics head), from
    the cache when the corpus bytes, the split, the config and the code versions are unchanged."""
    import sklearn

    import service
    from training.config import TrainConfig
    from training.train import train

    config = config if config is not None else TrainConfig()
    docs = read_corpus(corpus)
    if len(docs) < split.train + split.dev:
        raise ValueError(f"{corpus}: {len(docs)} documents, need {split.train} + {split.dev}")
    key_src = json.dumps(
        {
            "corpus": sha256_file(corpus),
            "split": [split.train, split.dev],
            "config": config.to_json(),
            "newstagger": service.__version__,
            "sklearn": sklearn.__version__,
            # the model and training code itself: a cached artifact an older loader wrote may be
            # refused by today's (the manifest checksum was one such change)
            "code": _code_digest(),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    model_dir = cache_dir() / f"model-{key}"
    if (model_dir / "manifest.json").is_file():
        print(f"model: cached {model_dir}", file=log)
        return model_dir
    work = Path(tempfile.mkdtemp(prefix="train-", dir=cache_dir()))
    try:
        train_file, dev_file = work / "train.jsonl", work / "dev.jsonl"
        for path, part in (
            (train_file, docs[: split.train]),
            (dev_file, docs[split.train : split.train + split.dev]),
        ):
            path.write_text("".join(json.dumps(d) + "\n" for d in part), encoding="utf-8")
        print(f"model: training on {split.train} documents (dev {split.dev}) -> {model_dir}", file=log)
        started = time.perf_counter()
        train([train_file], work / "model", config, [dev_file], head_names=("topics",), version="bench")
        print(f"model: trained in {time.perf_counter() - started:.1f}s", file=log)
        shutil.rmtree(model_dir, ignore_errors=True)  # an incomplete earlier attempt
        os.replace(work / "model", model_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return model_dir


def load_model(model_dir: Path) -> LoadedModel:
    return load_artifact(model_dir)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def inprocess_baseline(
    tagger: Tagger, articles: Sequence[Article], batch_size: int, repeats: int = 5
) -> dict[str, Any]:
    """Throughput of ``tagger.tag`` over ``articles`` in batches of ``batch_size``.

    One untimed warm-up batch, then ``repeats`` timed passes over every article. Returns medians
    over the passes: ``docs_per_s`` (wall clock), ``cpu_ms_per_doc`` (``time.process_time``, so
    all threads of this process) and ``p50_batch_ms`` (the median latency of one ``tag`` call),
    plus the per-pass figures.
    """
    if batch_size < 1 or repeats < 1 or not articles:
        raise ValueError("need batch_size >= 1, repeats >= 1 and some articles")
    batches = [list(articles[i : i + batch_size]) for i in range(0, len(articles), batch_size)]
    tagger.tag(batches[0])  # warm-up: first-call costs are not throughput
    rates, cpus, p50s = [], [], []
    for _ in range(repeats):
        latencies = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for batch in batches:
            t0 = time.perf_counter()
            tagger.tag(batch)
            latencies.append(time.perf_counter() - t0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rates.append(len(articles) / wall)
        cpus.append(cpu / len(articles) * 1000)
        p50s.append(_median(latencies) * 1000)
    return {
        "batch_size": batch_size,
        "docs": len(articles),
        "repeats": repeats,
        "docs_per_s": _median(rates),
        "cpu_ms_per_doc": _median(cpus),
        "p50_batch_ms": _median(p50s),
        "runs_docs_per_s": [round(r, 1) for r in rates],
    }


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The in-process baseline rows as a Markdown table."""
    lines = [
        "| batch size | docs/s (median) | CPU ms/doc | p50 latency per batch (ms) | runs (docs/s) |",
        "|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        runs = ", ".join(f"{x:.0f}" for x in r["runs_docs_per_s"])
        lines.append(
            f"| {r['batch_size']} | {r['docs_per_s']:.0f} | {r['cpu_ms_per_doc']:.2f} "
            f"| {r['p50_batch_ms']:.2f} | {runs} |"
        )
    return "\n".join(lines)


def reference_config() -> Any:
    """The reference model every speed target is stated against: TF-IDF word 1-2-grams (200k
    features, sublinear tf) and one-vs-rest logistic regression -- fixed here, whatever the
    defaults become."""
    from training.config import ClassifierConfig, FeatureConfig, TrainConfig

    features = FeatureConfig(
        word_ngram_max=2,
        word_min_df=2,
        word_max_features=200_000,
        use_char=False,
        title_repeat=1,
        stop_words="",
    )
    return TrainConfig(
        features=features, classifier=ClassifierConfig(model="logreg", C=10.0, class_weight="")
    )
