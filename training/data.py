"""Load and validate labelled data (JSONL or CSV).

A row has ``id``, ``text``, optional ``title`` and ``target``, and one field per head: a list of
labels (multi-label head) or one label (single-label head). In CSV a multi-label cell is a JSON
list or labels separated by ``|`` (empty = no labels); see docs/retraining.md. Heads come from the data or the
config, never from code. Every error names the file, the line and the field.
A group field (``--group-field`` / ``group_field``, e.g. a story id) is kept on each row to group
cross-validation folds; it is never a head.
Several files merge in order; a later file wins for the same id. Within one file ids are unique.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from service.core.errors import DataError
from service.core.tagger import MAX_MODEL_TEXT_CHARS
from service.core.types import ARTICLE_FIELDS, Article
from service.core.validation import MAX_HEAD_NAME_BYTES, lone_surrogate, quote, utf8_size
from training.config import HeadConfig, TrainConfig
from training.records import csv_labels, is_csv, looks_multi, read_records

LOOKS_LIKE_A_LIST = re.compile(r"[^,;|]+(?:[,;|][^,;|]+)+")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_LABEL_BYTES = 1024  # a label is a name (in the manifest, every result, the metrics), not a text
SHOWN_LABELS = 5  # labels an error message quotes (each cut to QUOTE_CHARS), then "and N more"


def quote_labels(labels: Sequence[str], shown: int = SHOWN_LABELS) -> str:
    """The first ``shown`` of ``labels`` quoted and cut short, and how many more: an error message
    stays a few lines however many or long the labels are."""
    text = ", ".join(quote(label) for label in labels[:shown])
    return text + (f" and {len(labels) - shown:,} more" if len(labels) > shown else "")


def _name_problem(name: str, head: bool) -> str:
    """Why ``name`` cannot name a head (``head``) or a label ("" if it can): the manifest stores
    it as UTF-8, and callers ask for a head by name (at most MAX_HEAD_NAME_BYTES bytes, one line)."""
    if lone_surrogate(name) is not None:
        return "holds a lone surrogate (no UTF-8 can hold it)"
    if not name.strip():
        return "is blank"
    if head and (size := len(name.encode("utf-8"))) > MAX_HEAD_NAME_BYTES:
        return f"is {size} bytes; callers can name a head of at most {MAX_HEAD_NAME_BYTES}"
    if not head and (size := utf8_size(name, MAX_LABEL_BYTES)) > MAX_LABEL_BYTES:
        return f"is {size} bytes, over the limit of {MAX_LABEL_BYTES} (is the field a text, not a label?)"
    if head and CONTROL.search(name):
        return "holds a control character (a line break, a tab...)"
    return ""


@dataclass(frozen=True)
class Row:
    article: Article
    labels: dict[str, tuple[str, ...]]  # head -> labels (a single-label head has exactly one)
    group: str = ""  # the row's value of the dataset's group field ("" without one)


@dataclass(frozen=True)
class Dataset:
    rows: tuple[Row, ...]
    heads: dict[str, HeadConfig]  # every head, kind resolved
    files: tuple[dict[str, Any], ...]  # path, sha256, rows
    group_field: str = ""  # the field Row.group comes from ("" = rows are not grouped)
    cut_texts: int = 0  # rows whose text was cut to the MAX_MODEL_TEXT_CHARS the model reads

    def groups(self) -> list[str] | None:
        """Each row's group (for grouped cross-validation), or None if the rows are not grouped."""
        return [r.group for r in self.rows] if self.group_field else None

    def articles(self) -> list[Article]:
        return [r.article for r in self.rows]

    def labels(self, head: str) -> list[tuple[str, ...]]:
        return [r.labels[head] for r in self.rows]


def _refuse_hidden_lists(records: list[tuple[Path, int, dict[str, Any]]], name: str, kind: str) -> None:
    """A label of an undeclared head that looks like several labels ("a;b") would silently train
    one label per combination: refuse it and say how to write several labels."""
    for path, lineno, record in records:
        value = record.get(name)
        if kind == "multi" and isinstance(value, str) and is_csv(path):
            value = csv_labels(value)
        for label in value if isinstance(value, list) else [value]:
            if isinstance(label, str) and LOOKS_LIKE_A_LIST.fullmatch(label):
                raise DataError(
                    f"{path}:{lineno}: field {name!r}: {quote(label)} looks like several labels. For a "
                    "multi-label head write a JSON list (JSONL, or a CSV cell) or separate labels with "
                    f"'|' (CSV); if it is one label, declare the head: [heads.{name}] kind = \"{kind}\""
                )


def _infer_heads(
    records: list[tuple[Path, int, dict[str, Any]]],
    config: TrainConfig,
    head_names: Sequence[str],
    group_field: str,
) -> dict[str, HeadConfig]:
    """Every label field is a head (``--heads`` picks some; ``ignore_fields`` leaves some out);
    the config may declare a head's kind and more. An undeclared kind is inferred from all rows
    of all files first: a list (or a CSV cell with ``|`` or a JSON list) anywhere makes it multi."""
    selected = set(head_names)  # `--heads` picks heads: other label fields are left out
    declared = {n: h for n, h in config.heads.items() if not selected or n in selected}
    for name in head_names:
        declared.setdefault(name, HeadConfig())
    if group_field in declared:
        raise DataError(f"field {group_field!r} cannot be both a head and the group field")
    skip = {*ARTICLE_FIELDS, *config.ignore_fields, group_field}
    found: dict[str, str] = {}  # label field -> "multi" | "single", in order of first appearance
    for path, lineno, record in records:
        for key, value in record.items():
            if key in skip or (selected and key not in selected):
                continue
            if key not in found and (problem := _name_problem(key, head=True)):
                raise DataError(
                    f"{path}:{lineno}: field {quote(key)} cannot be a head: its name {problem} "
                    "(rename the field, or list it in the config's ignore_fields)"
                )
            multi = found.get(key) == "multi" or looks_multi(path, value)
            found[key] = "multi" if multi else "single"
    heads: dict[str, HeadConfig] = {}
    for name, kind in found.items():
        head = declared.get(name, HeadConfig())
        if not head.kind:
            _refuse_hidden_lists(records, name, kind)
        heads[name] = replace(head, kind=head.kind or kind)
    missing = sorted(set(declared) - set(heads))
    if missing:
        raise DataError(f"head(s) {', '.join(missing)} declared but found in no row")
    if not heads:
        raise DataError("no label fields found: rows need at least one head (e.g. 'topics' or 'stance')")
    return heads


def _group(where: str, record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise DataError(
            f"{where}: field {field!r}: missing or not a string/number "
            "(the group field of cross-validation: every training row needs one)"
        )
    return str(value)


def _row(
    path: Path, lineno: int, record: dict[str, Any], heads: dict[str, HeadConfig], group_field: str = ""
) -> Row:
    where = f"{path}:{lineno}"
    rid = record.get("id")
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        raise DataError(f"{where}: field 'id': missing")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise DataError(f"{where}: field 'id': must be a string")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: field 'text': missing or empty")
    for key in ("title", "target"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise DataError(f"{where}: field {key!r}: must be a string")
    labels: dict[str, tuple[str, ...]] = {}
    for name, head in heads.items():
        if head.target and not record.get(head.target):
            raise DataError(
                f"{where}: field {head.target!r}: head {name!r} is conditioned on it, but it is empty"
            )
        value = record.get(name)
        if is_csv(path) and isinstance(value, str) and (head.kind == "multi" or looks_multi(path, value)):
            value = csv_labels(value)  # a cell of labels (a column declared multi needs no '|')
        if value is None:
            raise DataError(f"{where}: field {name!r}: missing (every row needs every head)")
        if head.kind == "multi":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise DataError(
                    f"{where}: field {name!r}: must be a list of label strings (a multi-label head)"
                )
            if head.require_labels and not value:
                raise DataError(f"{where}: field {name!r}: empty label list, but the head requires labels")
            labels[name] = tuple(dict.fromkeys(value))
        else:
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if not isinstance(value, str) or not value:
                raise DataError(f"{where}: field {name!r}: must be one non-empty label")
            labels[name] = (value,)
        for label in labels[name]:
            if problem := _name_problem(label, head=False):
                raise DataError(f"{where}: field {name!r}: label {quote(label)} {problem}")
        if head.labels:
            unknown = [v for v in labels[name] if v not in head.labels]
            if unknown:
                raise DataError(
                    f"{where}: field {name!r}: label(s) {quote_labels(unknown)} not in the configured "
                    f"set of {len(head.labels):,} ([heads.{name}] labels in the config)"
                )
    text = text[:MAX_MODEL_TEXT_CHARS]  # what the served model reads of it (service.core.tagger)
    article = Article(str(rid), text, record.get("title") or "", record.get("target") or "")
    return Row(article, labels, _group(where, record, group_field) if group_field else "")


def label_fields(data: Sequence[Path] | RawData) -> set[str]:
    """Every field other than id/title/text/target that some row of ``data`` has."""
    records = data.records if isinstance(data, RawData) else read_data(data).records
    return {k for _, _, record in records for k in record if k not in ARTICLE_FIELDS}


@dataclass(frozen=True)
class RawData:
    """Data files as read, not yet validated: every record with its file and line, and each file's
    path, sha256 and row count. Read once, it can be validated for one set of heads and loaded for
    another (the gate's ``--eval`` rows: before training, and when the gate scores them)."""

    records: tuple[tuple[Path, int, dict[str, Any]], ...]
    files: tuple[dict[str, Any], ...]

    @property
    def paths(self) -> list[str]:
        return [f["path"] for f in self.files]


def read_data(paths: Sequence[Path]) -> RawData:
    """Read ``paths`` (ids unique within each file; every file has rows)."""
    if not paths:
        raise DataError("no data files given")
    records: list[tuple[Path, int, dict[str, Any]]] = []
    files = []
    for path in paths:
        path = Path(path)
        recs, digest = read_records(path)
        seen: dict[str, int] = {}
        for lineno, record in recs:
            rid = str(record.get("id", ""))
            if rid and rid in seen:
                raise DataError(
                    f"{path}:{lineno}: field 'id': duplicate id {rid!r} (first on line {seen[rid]})"
                )
            seen[rid] = lineno
            records.append((path, lineno, record))
        if not recs:
            raise DataError(f"{path}: no rows")
        files.append({"path": str(path), "sha256": digest, "rows": len(recs)})
    return RawData(tuple(records), tuple(files))


def load_dataset(
    paths: Sequence[Path] | RawData,
    config: TrainConfig,
    head_names: Sequence[str] = (),
    heads: dict[str, HeadConfig] | None = None,
    group_field: str = "",
) -> Dataset:
    """Read (unless ``paths`` is already read), validate and merge the files (later files win for
    the same id).

    ``heads`` fixes the heads (e.g. the dev set must have the training set's heads).
    ``group_field`` names a field every row must have, kept as ``Row.group`` (never a head).
    """
    raw = paths if isinstance(paths, RawData) else read_data(paths)
    records = list(raw.records)
    if heads is None:
        heads = _infer_heads(records, config, head_names, group_field)
    merged: dict[str, Row] = {}
    long_texts: set[str] = set()
    for path, lineno, record in records:
        row = _row(path, lineno, record, heads, group_field)
        merged.pop(row.article.id, None)  # a later file's row replaces, and moves to the end
        merged[row.article.id] = row
        long_texts.discard(row.article.id)
        if len(record["text"]) > MAX_MODEL_TEXT_CHARS:
            long_texts.add(row.article.id)
    return Dataset(tuple(merged.values()), heads, raw.files, group_field, len(long_texts))
