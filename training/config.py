"""Training configuration: every choice a user can make, with the defaults ``newstagger train`` uses.

Loaded from a TOML file (``--config``); anything not given keeps its default; every given option is
checked for its type and range on load (errors name the file, the section and the option). Example::

    seed = 7
    [heads.stance]
    kind = "single"
    target = "target"         # judge stance toward the row's `target` field ("title" for FNC-style)
    [features]
    char_ngram_max = 5

Every option's default keeps the behaviour of the default model (trained on the starter corpus),
except what its own config, ``training/starter/config.toml``, sets (cut-offs scaled by 0.85,
character 4-grams):
new knobs are off until a config turns them on.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from service.core.errors import DataError

#: The most labels a head may have unless its config raises ``max_labels``: training fits one
#: classifier per label in every cross-validation fold and once more, so time grows with labels x
#: rows (3,000 rows, 5 folds, 2 busy CPUs: 100 labels 33 s, 500 labels 2 min, 2,000 labels not one
#: fold in 60 s, ~8 min at that rate). Reuters-21578 (90-135 topics, 8,643 rows: 1-11 min) is
#: well under it.
MAX_LABELS = 500


@dataclass(frozen=True)
class HeadConfig:
    kind: str = ""  # "multi" | "single" | "" (infer from the data: list -> multi, string -> single)
    target: str = ""  # "" | "target" | "title": condition the head on that field
    require_labels: bool = False  # multi-label: an empty list is an error
    labels: tuple[str, ...] = ()  # fix the label set (else: every label seen in training)
    max_labels: int = MAX_LABELS  # more labels than this: refused before any fitting


@dataclass(frozen=True)
class FeatureConfig:
    word_ngram_max: int = 2
    word_min_df: int = 2
    word_max_features: int = 200_000
    word_max_df: float = 1.0  # drop words in more than this share of documents
    stop_words: str = ""  # "" | "english": drop English stop words (before n-grams are formed)
    title_repeat: int = 1  # count the headline's words this many times
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    char_max_features: int = 200_000
    use_char: bool = False  # character n-grams: ~5x the CPU per article, no better on the shift set
    # within-word character 4-grams computed with numpy (what use_char gives with char_ngram_min =
    # char_ngram_max = 4, at ~1/3 of its cost): ~1.2x the CPU per article; on in the default
    # model's config for its gain on real news (benchmarks/README.md, "real news")
    char4: bool = False
    sublinear_tf: bool = True
    # Target-aware heads (``[heads.X] target = ...``) only:
    target_interaction: bool = True  # per-target copies of the text n-grams (target id x n-gram)
    interaction_min_count: int = 20  # a target needs this many training rows to get its own block
    interaction_max_targets: int = 50  # at most this many blocks (the most frequent targets)
    target_ngrams: bool = True  # the target's own word n-grams as features
    pair_features: bool = True  # target-text cosine, word/n-gram overlap, refuting/hedging cues
    pair_weight: float = 1.0  # scale of the pair features relative to the TF-IDF blocks
    # The text's sentences closest to the target: their similarity, denial/negation/hedging cues
    # and n-grams (SentenceEvidence; FNC-style headline/body stance). Off: today's features.
    sentence_evidence: bool = False
    # how many of the closest sentences count as the evidence (FNC-1, grouped CV: 8 best of 1/3/5/8/12)
    evidence_sentences: int = 8


@dataclass(frozen=True)
class ClassifierConfig:
    model: str = "logreg"  # "logreg" | "linear_svc" (scores: squashed margins, or set calibration)
    C: float = 10.0
    class_weight: str = "balanced"  # "" | "balanced": weigh rare classes up (rare labels, minority stances)
    max_iter: int = 1000
    calibration: str = ""  # "" | "sigmoid" | "isotonic": CalibratedClassifierCV around the model
    calibration_cv: int = 3
    # Single-label heads: "" (one model) or a label to decide first -- a logistic regression (C =
    # gate_C) tells it from the rest, then the model above picks among the rest, fitted on those
    # rows only (FNC-1: "unrelated", then agree/disagree/discuss). Off: today's one model.
    gate_label: str = ""
    gate_C: float = 1.0
    # With gate_label: ``offset`` is added to the second stage's log-probability of
    # ``offset_label``, e.g. disagree + 1.2 favours a rare class balanced weights still under-predict.
    offset_label: str = ""
    offset: float = 0.0


@dataclass(frozen=True)
class ThresholdConfig:
    tune: bool = True
    # k > 1: cut-offs (and the reported estimate) come from k-fold cross-validated scores on the
    # training data, and --dev is only scored; 0 or 1: tuned on --dev (or a held-out share of train).
    cv_folds: int = 5
    default: float = 0.5  # the cut-off when not tuning (and the global one's fallback)
    min_positives: int = 3  # fewer dev positives than this: the label takes the fallback
    # a label whose best cut-off scores an F1 under this on the tuning rows has not been learnt:
    # it takes the fallback too (its best cut-off is often the one that fires on everything: on
    # Reuters, 3 such labels cost 1.2 points of micro-F1 on dev; the default model has none)
    min_f1: float = 0.1
    fallback: str = "global"  # "global": one cut-off tuned on all labels pooled | "default"
    shrinkage: float = 0.0  # pull a label's cut-off toward the global one: weight k/(k + positives)
    # every tuned cut-off times this: below 1 trades precision on data like the training set for
    # recall on news unlike it, whose positives score lower. The default model uses 0.85
    # (training/starter/config.toml: its articles were written for it, so all real news is unlike
    # them); a model of your own real articles should keep 1 (Reuters: 0.85 costs 1.5 points).
    scale: float = 1.0
    grid_min: float = 0.02
    grid_max: float = 0.98
    grid_steps: int = 49


@dataclass(frozen=True)
class TrainConfig:
    name: str = "newstagger"
    seed: int = 20240601
    heads: dict[str, HeadConfig] = field(default_factory=dict)  # declared heads (others are heads too)
    ignore_fields: tuple[str, ...] = ()
    # a row field (e.g. a story or body id) that groups the cross-validation folds: rows sharing a
    # value never straddle folds (near-duplicates would otherwise flatter the estimate); "" = none
    group_field: str = ""
    dev_fraction: float = 0.2  # without --dev, this share of train is held out for thresholds + metrics
    features: FeatureConfig = field(default_factory=FeatureConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_TYPES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_MIN_ONE = (lambda v: v >= 1, "at least 1")
_POSITIVE = (lambda v: v > 0, "above 0")
_NOT_NEGATIVE = (lambda v: v >= 0, "at least 0")
_SHARE = (lambda v: 0 <= v <= 1, "in [0, 1]")
#: The allowed range of each numeric option (option names are unique across sections).
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "max_labels": _MIN_ONE,
    "dev_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "word_ngram_max": _MIN_ONE,
    "word_min_df": _MIN_ONE,
    "word_max_features": _MIN_ONE,
    "word_max_df": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "title_repeat": _MIN_ONE,
    "char_ngram_min": _MIN_ONE,
    "char_ngram_max": _MIN_ONE,
    "char_max_features": _MIN_ONE,
    "interaction_min_count": _MIN_ONE,
    "interaction_max_targets": _NOT_NEGATIVE,
    "pair_weight": _NOT_NEGATIVE,
    "evidence_sentences": _MIN_ONE,
    "C": _POSITIVE,
    "max_iter": _MIN_ONE,
    "calibration_cv": (lambda v: v >= 2, "at least 2"),
    "gate_C": _POSITIVE,
    "cv_folds": (lambda v: v >= 0, "0 or 1 (tune on dev) or more (cross-validation)"),
    "default": _SHARE,
    "min_positives": _NOT_NEGATIVE,
    "min_f1": _SHARE,
    "shrinkage": _NOT_NEGATIVE,
    "scale": (lambda v: 0 < v <= 1.5, "in (0, 1.5]"),
    "grid_min": _SHARE,
    "grid_max": _SHARE,
    "grid_steps": (lambda v: v >= 2, "at least 2"),
}


def _value(value: Any, kind: Any, where: str, name: str) -> Any:
    """``value`` of option ``name`` as its type ``kind``, in its range, or a DataError naming it."""
    if kind in _TYPES:
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise DataError(f"{where}: {name} must be {_TYPES[kind]}, not {value!r}")
        check, allowed = _RANGES.get(name, (lambda _: True, ""))
        if not check(value):
            raise DataError(f"{where}: {name} must be {allowed}, not {value!r}")
        return float(value) if kind is float else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):  # tuple[str, ...]
        raise DataError(f"{where}: {name} must be a list of strings, not {value!r}")
    return tuple(value)


def _build(cls: Any, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: must be a table of options, not {raw!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DataError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    types = get_type_hints(cls)
    return cls(**{k: _value(v, types[k], where, k) for k, v in raw.items()})


def load_config(path: Path | None) -> TrainConfig:
    """The defaults, overridden by the TOML file at ``path`` if given. Every option is checked
    for its type and range here, with errors naming the file, the section and the option."""
    config = TrainConfig()
    if path is None:
        return config
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read config: {exc}") from exc
    sections = {"features": FeatureConfig, "classifier": ClassifierConfig, "thresholds": ThresholdConfig}
    types = get_type_hints(TrainConfig)
    updates: dict[str, Any] = {}
    for key, value in raw.items():
        if key in sections:
            updates[key] = _build(sections[key], value, f"{path} [{key}]")
        elif key == "heads":
            for name, head in value.items() if isinstance(value, dict) else [("NAME", value)]:
                if not isinstance(head, dict):
                    raise DataError(
                        f"{path} [heads]: {name} = {head!r}: a head is a table of options, "
                        f'e.g. [heads.{name}] kind = "single"'
                    )
            updates[key] = {n: _build(HeadConfig, v, f"{path} [heads.{n}]") for n, v in value.items()}
        elif key in types:
            updates[key] = _value(value, types[key], str(path), key)
        else:
            raise DataError(f"{path}: unknown option {key!r}")
    _check_choice(updates, path)
    for name, head in updates.get("heads", {}).items():
        if head.kind not in ("", "multi", "single") or head.target not in ("", "target", "title"):
            raise DataError(f"{path} [heads.{name}]: kind must be multi|single, target must be target|title")
    return replace(config, **updates)


def _check_choice(updates: dict[str, Any], path: Path) -> None:
    clf = updates.get("classifier")
    if clf is not None:
        if clf.model not in ("logreg", "linear_svc"):
            raise DataError(f"{path} [classifier]: model must be logreg|linear_svc, not {clf.model!r}")
        if clf.calibration not in ("", "sigmoid", "isotonic"):
            raise DataError(f"{path} [classifier]: calibration must be sigmoid|isotonic or empty")
        if clf.class_weight not in ("", "balanced"):
            raise DataError(f"{path} [classifier]: class_weight must be balanced or empty")
        if clf.offset_label and not clf.gate_label:
            raise DataError(f"{path} [classifier]: offset_label needs gate_label")
    thresholds = updates.get("thresholds")
    if thresholds is not None and thresholds.fallback not in ("global", "default"):
        raise DataError(f"{path} [thresholds]: fallback must be global|default")
    if thresholds is not None and not thresholds.grid_min < thresholds.grid_max:
        raise DataError(f"{path} [thresholds]: grid_min must be below grid_max")
    features = updates.get("features")
    if features is not None and features.stop_words not in ("", "english"):
        raise DataError(f"{path} [features]: stop_words must be english or empty")
    if features is not None and features.char_ngram_min > features.char_ngram_max:
        raise DataError(f"{path} [features]: char_ngram_min must not be above char_ngram_max")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def config_to_toml(config: TrainConfig | Mapping[str, Any], comment: str = "") -> str:
    """A training config (a TrainConfig, or the JSON form a manifest records) as the TOML file
    ``load_config`` reads back to an equal TrainConfig: tables one level deep, ``[heads.NAME]``."""
    raw = config.to_json() if isinstance(config, TrainConfig) else config
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for key, value in raw.items():
        if not isinstance(value, dict):
            continue
        if key == "heads":
            for name, head in value.items():
                bare = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
                lines += ["", f"[heads.{bare}]", *(f"{k} = {_toml_value(v)}" for k, v in head.items())]
        else:
            lines += ["", f"[{key}]", *(f"{k} = {_toml_value(v)}" for k, v in value.items())]
    return "\n".join(lines) + "\n"
