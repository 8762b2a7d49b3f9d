"""Deterministic synthetic benchmark corpus: news-shaped documents for measuring speed, not quality.

    python benchmarks/gen_corpus.py --n 20000 --seed 1234 --out corpus.jsonl

JSON Lines with ``id``, ``title``, ``text`` and ``topics``. Documents have 150-800 words (mean
about 475, like a wire article), in sentences of 8-30 words and paragraphs of 2-5 sentences, drawn
from a Zipfian vocabulary of 30,000 pronounceable pseudo-words; each has 1-3 of 8 topic labels,
and each topic favours its own slice of the vocabulary, so a classifier has something to learn.
The same ``--n`` and ``--seed`` give the same bytes on every machine and Python 3.11+.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from pathlib import Path

VOCABULARY = 30_000
TOPICS = 8
TOPIC_WORDS = 400  # each topic's own words, drawn instead of the background with TOPIC_SHARE
TOPIC_SHARE = 0.15
MIN_WORDS, MAX_WORDS, MEAN_WORDS = 150, 800, 475

_ONSETS = ("", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "s", "l", "k", "m")


def vocabulary(size: int = VOCABULARY) -> list[str]:
    """``size`` distinct pseudo-words, shortest first (frequent words are short, as in English)."""
    syllables = ["".join(p) for p in itertools.product(_ONSETS, _VOWELS, _CODAS)]
    syllables = sorted(set(syllables), key=lambda s: (len(s), s))
    words: list[str] = []
    seen: set[str] = set()
    for n in itertools.count(1):
        for combo in itertools.product(syllables, repeat=n):
            word = "".join(combo)
            if len(word) > 1 and word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == size:
                    return words
    raise AssertionError("unreachable")


def _zipf_cumulative(n: int, s: float = 1.05) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, n + 1)))


def generate(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not security
    words = vocabulary()
    background = _zipf_cumulative(len(words))
    topic_vocab = [rng.sample(words[200:], TOPIC_WORDS) for _ in range(TOPICS)]
    topic_cum = _zipf_cumulative(TOPIC_WORDS, 0.8)
    docs = []
    for i in range(n):
        topics = sorted(rng.sample(range(TOPICS), rng.choice((1, 1, 2, 2, 3))))
        length = min(MAX_WORDS, max(MIN_WORDS, round(rng.gammavariate(6.0, MEAN_WORDS / 6.0))))
        body = rng.choices(words, cum_weights=background, k=length)
        for j in range(length):
            if rng.random() < TOPIC_SHARE:
                body[j] = rng.choices(topic_vocab[rng.choice(topics)], cum_weights=topic_cum)[0]
        docs.append(
            {
                "id": f"bench-{i:06d}",
                "title": " ".join(
                    rng.choices(words, cum_weights=background, k=rng.randint(5, 12))
                ).capitalize(),
                "text": _paragraphs(body, rng),
                "topics": [f"topic_{t}" for t in topics],
            }
        )
    return docs


def _paragraphs(body: list[str], rng: random.Random) -> str:
    sentences, start = [], 0
    while start < len(body):
        end = min(len(body), start + rng.randint(8, 30))
        sentences.append(" ".join(body[start:end]).capitalize() + ".")
        start = end
    paragraphs, start = [], 0
    while start < len(sentences):
        end = start + rng.randint(2, 5)
        paragraphs.append(" ".join(sentences[start:end]))
        start = end
    return "\n\n".join(paragraphs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="number of documents")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", type=Path, default=None, help="output file (default: stdout)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in generate(args.n, args.seed))
    if args.out is None:
        sys.stdout.write(lines)
    else:
        args.out.write_text(lines, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
