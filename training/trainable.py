"""What ``train`` (and ``train --tune``) refuses before any fitting: a head a classifier cannot
learn, and a head with more labels than its ``max_labels`` (training time grows with labels x rows:
see ``training.config.MAX_LABELS``)."""

from __future__ import annotations

from collections import Counter

from service.core.errors import DataError
from service.core.validation import quote
from training.data import Dataset, quote_labels


def check_trainable(data: Dataset, min_positives: int = 3) -> None:
    """Refuse, before any fitting, a head a classifier cannot learn: a single-label head needs two
    classes; a multi-label head needs a label, and with one label, rows without it (a binary
    tagger). Refuse a head with more labels than its ``max_labels``, naming the rarest
    (``min_positives``: the rows a label needs for a cut-off of its own, ``thresholds.min_positives``)."""
    files = ", ".join(f["path"] for f in data.files)
    for name, head in data.heads.items():
        gold = data.labels(name)
        labels = list(head.labels) or sorted({label for row in gold for label in row})
        if len(labels) > head.max_labels:
            rows = Counter(label for row in gold for label in row)
            where = "in its configured labels" if head.labels else f"in the training data ({files})"
            raise DataError(_too_many(name, labels, rows, head.max_labels, where, min_positives))
        if head.kind == "single" and len(labels) < 2:
            raise DataError(
                f"head {name!r} has one class ({quote(labels[0])}) in the training data ({files}): "
                "a classifier needs at least two"
            )
        if head.kind == "multi" and not labels:
            raise DataError(f"head {name!r} has no labels in any row of the training data ({files})")
        if head.kind == "multi" and len(labels) == 1 and all(gold):
            raise DataError(
                f"head {name!r} has one label ({quote(labels[0])}) and every training row has it "
                f"({files}): a classifier needs rows without it too"
            )


def _too_many(
    name: str, labels: list[str], rows: Counter[str], limit: int, where: str, min_positives: int
) -> str:
    """The refusal of head ``name``'s ``labels`` (``rows``: how many training rows have each)."""
    rarest = sorted(labels, key=lambda label: (rows[label], label))
    rare = sum(1 for label in labels if rows[label] < min_positives)
    return (
        f"head {name!r} has {len(labels):,} distinct labels {where}, over the limit of {limit:,}: "
        "training fits one classifier per label in every cross-validation fold and once more, so "
        f"its time grows with labels x rows. {rare:,} of them are on fewer than {min_positives} "
        f"rows (too few for a cut-off of their own); the rarest: {quote_labels(rarest)}. Merge or "
        "drop rare labels, leave the head out (--heads the others, or ignore_fields in the config), "
        f"or raise the limit in the config: [heads.{name}] max_labels = {len(labels)}"
    )
