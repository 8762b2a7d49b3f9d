"""What ``newstagger train --tune`` searches (``training.tune`` does the searching): the
coordinates, each a function from the current best config to its alternatives, in search order:

classifier (logreg C=10 | linear_svc C=0.5), C (logreg 1/10/100, linear_svc 0.1/0.5/2),
target-awareness of each single-label head (none | the rows' ``target`` | their ``title``; offered
only when every row has that field), its per-target blocks, pair features and sentence evidence,
with exactly one single-label head also two stages (its majority label told from the rest first,
then the rest; optionally its rarest label's log-probability + 1.2), word n-grams (up to 1/2/3),
English stop words (kept | dropped), character n-grams (off | on: 2-5 by default), class weights
(balanced | none), and for multi-label heads the threshold strategy (fixed 0.5 | per label with a
global fallback | the same with shrinkage 5 toward the global cut-off).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from training.config import TrainConfig
from training.data import Dataset

RARE_OFFSET = 1.2  # two stages: the rarest class's log-probability offset tried (FNC-1's disagree)
DEFAULT_C = {"logreg": 10.0, "linear_svc": 0.5}
C_GRID = {"logreg": (1.0, 10.0, 100.0), "linear_svc": (0.1, 0.5, 2.0)}
THRESHOLD_STRATEGIES: dict[str, dict[str, Any]] = {
    "fixed 0.5": {"tune": False, "default": 0.5},
    "per label, global fallback": {"tune": True, "fallback": "global", "shrinkage": 0.0},
    "per label, shrinkage 5": {"tune": True, "fallback": "global", "shrinkage": 5.0, "min_positives": 1},
}


Alternatives = Callable[[TrainConfig], list[tuple[str, TrainConfig]]]


def _set(config: TrainConfig, section: str, **values: Any) -> TrainConfig:
    return replace(config, **{section: replace(getattr(config, section), **values)})


def _options(section: str, name: str, values: Sequence[Any], label: str = "") -> Alternatives:
    """Each of ``values`` for ``section.name`` but the current one; the change reads ``label``
    formatted with the value, else ``name=value``."""

    def alternatives(c: TrainConfig) -> list[tuple[str, TrainConfig]]:
        now = getattr(getattr(c, section), name)
        changes = [label.format(v) if label else f"{name}={str(v).lower() or 'none'}" for v in values]
        return [
            (change, _set(c, section, **{name: v}))
            for change, v in zip(changes, values, strict=True)
            if v != now
        ]

    return alternatives


def coordinates(data: Dataset) -> list[tuple[str, Alternatives]]:
    """The search space, in search order: (name, current config -> [(change, config)])."""

    def classifier(c: TrainConfig) -> list[tuple[str, TrainConfig]]:
        other = "linear_svc" if c.classifier.model == "logreg" else "logreg"
        return [(f"{other} C={DEFAULT_C[other]:g}", _set(c, "classifier", model=other, C=DEFAULT_C[other]))]

    def strength(c: TrainConfig) -> list[tuple[str, TrainConfig]]:
        return _options("classifier", "C", C_GRID[c.classifier.model], "C={:g}")(c)

    def target(name: str, choices: Sequence[str]) -> Alternatives:
        def alternatives(c: TrainConfig) -> list[tuple[str, TrainConfig]]:
            head = c.heads[name]
            return [
                (
                    f"{name}: target={f or 'none'}",
                    replace(c, heads={**c.heads, name: replace(head, target=f)}),
                )
                for f in ("", *choices)
                if f != head.target
            ]

        return alternatives

    def when_targeted(alternatives: Alternatives) -> Alternatives:
        return lambda c: alternatives(c) if any(h.target for h in c.heads.values()) else []

    articles = data.articles()
    present = [f for f in ("target", "title") if articles and all(getattr(a, f) for a in articles)]
    singles = [name for name, head in data.heads.items() if head.kind == "single"] if present else []
    coords: list[tuple[str, Alternatives]] = [("classifier", classifier), ("C", strength)]
    coords += [(f"{name} target", target(name, present)) for name in singles]
    if singles:
        for flag in ("target_interaction", "pair_features"):
            coords.append((flag, when_targeted(_options("features", flag, (True, False)))))
        evidence = _options("features", "sentence_evidence", (False, True))
        coords.append(("sentence evidence", when_targeted(evidence)))
    if len(singles) == 1:
        coords.append(("two stages", when_targeted(_two_stages(data, singles[0]))))
    coords += [
        ("word n-grams", _options("features", "word_ngram_max", (1, 2, 3), "word 1-{}")),
        ("stop words", _options("features", "stop_words", ("", "english"))),
        ("char n-grams", _options("features", "use_char", (False, True))),
        ("class weights", _options("classifier", "class_weight", ("balanced", ""))),
    ]
    if any(h.kind == "multi" for h in data.heads.values()):

        def thresholds(c: TrainConfig) -> list[tuple[str, TrainConfig]]:
            options = [
                (f"thresholds: {k}", _set(c, "thresholds", **v)) for k, v in THRESHOLD_STRATEGIES.items()
            ]
            return [(change, option) for change, option in options if option != c]

        coords.append(("thresholds", thresholds))
    return coords


def _two_stages(data: Dataset, name: str) -> Alternatives:
    """One head's majority label told from the rest first (``classifier.gate_label``), then the
    rest; optionally its rarest label favoured (``offset``), which balanced weights under-predict."""
    counts = Counter(g[0] for g in data.labels(name)).most_common()
    majority, rarest = counts[0][0], counts[-1][0]

    def alternatives(c: TrainConfig) -> list[tuple[str, TrainConfig]]:
        options = [
            ("one stage", _set(c, "classifier", gate_label="", offset_label="", offset=0.0)),
            (
                f"two stages ({majority} first)",
                _set(c, "classifier", gate_label=majority, offset_label="", offset=0.0),
            ),
            (
                f"two stages, {rarest} +{RARE_OFFSET:g}",
                _set(c, "classifier", gate_label=majority, offset_label=rarest, offset=RARE_OFFSET),
            ),
        ]
        return [(change, option) for change, option in options if option != c] if len(counts) > 2 else []

    return alternatives


def describe(config: TrainConfig) -> str:
    """The tuned choices in one line."""
    f, c, t = config.features, config.classifier, config.thresholds
    targets = ", ".join(f"{n} on {h.target}" for n, h in config.heads.items() if h.target) or "none"
    return (
        f"{c.model} C={c.C:g} class_weight={c.class_weight or 'none'}; word 1-{f.word_ngram_max}"
        f"{' without English stop words' if f.stop_words else ''}"
        f"{f', char {f.char_ngram_min}-{f.char_ngram_max}' if f.use_char else ''}; target-aware: {targets}"
        + (
            f" (interaction {f.target_interaction}, pairs {f.pair_features})".lower()
            if targets != "none"
            else ""
        )
        + (", sentence evidence" if f.sentence_evidence and targets != "none" else "")
        + (f"; two stages: {c.gate_label} first" if c.gate_label else "")
        + (f", {c.offset_label} +{c.offset:g}" if c.gate_label and c.offset_label else "")
        + f"; thresholds: {'per label' if t.tune else f'fixed {t.default:g}'}"
        + (f", shrinkage {t.shrinkage:g}" if t.tune and t.shrinkage else "")
    )
