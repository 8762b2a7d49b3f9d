"""Rows of the ``--dev`` or ``--eval`` data that are also training rows.

A row counts as shared when it has the id of a training row (ids name articles across files: a
later training file replaces a row of the same id), or the same title and text once normalized
(Unicode NFKC, case folded, runs of whitespace as one space): a copy re-exported with another id,
or re-cased, is still an article the model was fitted on. Title and text together, not the text
alone: feeds whose bodies are a shared stub ("Read more on our site.") tell articles apart by the
title. The keys are hashed (a 16-byte digest per training row), so the check costs one pass over
each set.

Scored on such rows, the dev figure flatters the model and the quality gate judges partly
in-sample. Real corpora repeat a few articles (Reuters-21578 has 3 of its 960 dev rows in train):
up to ``MAX_SHARED`` of a set is warned about and recorded; more means a wrong file, and
``newstagger train`` refuses it before it trains unless ``--allow-dev-overlap``.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping

from service.core.errors import DataError
from service.core.types import Article
from training.data import Dataset

SHOWN_IDS = 5  # ids named in the message
MAX_SHARED = 0.05  # share of a held-out set's rows that may be training rows without --allow-dev-overlap


def _normalized(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def content_key(article: Article) -> bytes:
    """A digest of the article's normalized title and text."""
    joined = f"{_normalized(article.title)}\x00{_normalized(article.text)}"
    return hashlib.blake2b(joined.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def shared_ids(train: Dataset, other: Dataset) -> list[str]:
    """The ids of ``other``'s rows that are also training rows (same id, or same normalized title
    and text), in ``other``'s order."""
    ids = {r.article.id for r in train.rows}
    keys = {content_key(r.article) for r in train.rows}
    return [r.article.id for r in other.rows if r.article.id in ids or content_key(r.article) in keys]


def describe(role: str, shared: list[str], total: int) -> str:
    """E.g. "2 of the 3 --dev rows are also training rows (same id, or same title and text): ids
    'a', 'b"'."""
    shown = ", ".join(repr(i) for i in shared[:SHOWN_IDS])
    more = f" and {len(shared) - SHOWN_IDS} more" if len(shared) > SHOWN_IDS else ""
    return (
        f"{len(shared)} of the {total} {role} rows are also training rows (same id, or same title "
        f"and text): ids {shown}{more}"
    )


def check_overlap(train: Dataset, others: Mapping[str, Dataset], allow: bool) -> dict[str, int]:
    """How many rows of each of ``others`` (role, e.g. "--dev" -> its rows) are training rows.

    Raise DataError naming them if more than ``MAX_SHARED`` of a set's rows are shared, unless
    ``allow`` (``--allow-dev-overlap``)."""
    found = {role: shared_ids(train, data) for role, data in others.items()}
    problems = [
        describe(role, ids, len(others[role].rows))
        for role, ids in found.items()
        if len(ids) > MAX_SHARED * len(others[role].rows)
    ]
    if problems and not allow:
        raise DataError(
            "; ".join(problems)
            + f". More than {MAX_SHARED:.0%} shared looks like a wrong file: scored on them, the "
            "figures flatter the model and the quality gate judges on rows the new model was "
            "fitted on. Pass held-out files, or --allow-dev-overlap to go on (the count is then "
            "recorded)"
        )
    return {role: len(ids) for role, ids in found.items()}
