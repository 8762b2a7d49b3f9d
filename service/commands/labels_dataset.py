"""The dataset ``newstagger labels collect`` writes: one training row per id, validated (an event
that is not a valid row raises DataError saying why), merged by id (a later row replaces an
earlier one) and written whole, sorted by id, atomically and durably.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from service.core.errors import DataError
from service.core.types import ARTICLE_FIELDS


def validate_event(value: bytes | None) -> dict[str, Any]:
    """The training row an event holds; raises DataError saying what is wrong."""
    if value is None:
        raise DataError("empty event (tombstone)")
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    rid = record.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int) or not str(rid).strip():
        raise DataError("field 'id': missing or not a string")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"id {rid!r}: field 'text': missing or empty")
    for key in ("title", "target"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise DataError(f"id {rid!r}: field {key!r}: must be a string")
    heads = {k: v for k, v in record.items() if k not in ARTICLE_FIELDS}
    if not heads:
        raise DataError(f"id {rid!r}: no label field (e.g. 'topics' or 'stance')")
    for key, labels in heads.items():
        ok = (isinstance(labels, str) and labels.strip()) or (
            isinstance(labels, list) and all(isinstance(x, str) and x.strip() for x in labels)
        )
        if not ok:
            raise DataError(f"id {rid!r}: field {key!r}: must be a label or a list of labels")
    return record


def load_rows(path: Path) -> dict[str, dict[str, Any]]:
    """An existing dataset, by id (a missing file is an empty dataset)."""
    rows: dict[str, dict[str, Any]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return rows
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = validate_event(line.encode("utf-8"))
        except DataError as exc:
            raise DataError(f"{path}:{lineno}: {exc} — not a dataset written by `labels collect`?") from exc
        merge(rows, record)
    return rows


def merge(rows: dict[str, dict[str, Any]], record: dict[str, Any]) -> bool:
    """Add ``record``; a row with the same id is replaced (and moves to the end). True if new."""
    key = str(record["id"])
    new = rows.pop(key, None) is None
    rows[key] = record
    return new


def write_rows(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows``, sorted by id, atomically and durably (temp file, fsync,
    rename, fsync dir). Sorted: events interleave differently across partitions from run to run,
    and training's split depends on row order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for key in sorted(rows):  # by id: the same rows always give the same file (and model)
                record = rows[key]
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
