"""Read a labelled data file into records (one dict per row, with its line number): JSON Lines, or
CSV with a header (a file named ``*.csv``). Every error names the file and the line."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from service.core.errors import DataError
from service.core.types import ARTICLE_FIELDS
from service.core.validation import quote

LABEL_SEPARATOR = "|"  # between the labels of a multi-label CSV cell
MAX_LINE_BYTES = 16 * 1024 * 1024  # a line (row) of a data file
NOT_UTF8_HINTS = (  # a file's first bytes -> what it is instead of UTF-8 text
    (b"\x1f\x8b", "this is a gzip file: decompress it first (gunzip)"),
    (b"\xff\xfe", "this looks like UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "this looks like UTF-16 text: save it as UTF-8"),
)


def not_utf8_hint(start: bytes) -> str:
    """What a file that is not UTF-8 is instead, from its first bytes ("; this is a gzip file: ..."),
    or ""."""
    return next((f"; {hint}" for magic, hint in NOT_UTF8_HINTS if start.startswith(magic)), "")


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refused at the first line over MAX_LINE_BYTES (before reading it whole:
    a file with no line break, e.g. a sparse or binary one, costs at most that much memory)."""
    lines: list[bytes] = []
    try:
        with path.open("rb") as fh:
            while line := fh.readline(MAX_LINE_BYTES + 1):
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    raise DataError(
                        f"{path}:{len(lines) + 1}: the line is over {MAX_LINE_BYTES:,} bytes (a row's "
                        "text is cut to the 100,000 characters the model reads; is this a data file?)"
                    )
                lines.append(line)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    return b"".join(lines)


def read_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    raw = _read_bounded(path)
    digest = hashlib.sha256(raw).hexdigest()
    records: list[tuple[int, dict[str, Any]]] = []
    for lineno, raw_line in enumerate(raw.split(b"\n"), start=1):
        try:
            raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            hint = not_utf8_hint(raw[:4])
            raise DataError(
                f"{path}:{lineno}: not valid UTF-8 (byte {exc.start + 1} of the line){hint}"
            ) from exc
    text = raw.decode("utf-8").lstrip("\ufeff")
    if is_csv(path):
        return _csv_records(path, text), digest
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_not_json)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from exc
        except ValueError as exc:  # from the hooks: a duplicate key, NaN or Infinity
            raise DataError(f"{path}:{lineno}: {exc}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        records.append((lineno, record))
    return records, digest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused if a key repeats (json.loads would keep the last value silently)."""
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise ValueError(f"field {quote(key)}: appears twice in one object (which value is meant?)")
        record[key] = value
    return record


def _not_json(constant: str) -> Any:
    raise ValueError(f"invalid JSON: {constant} is not a JSON value")


def is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _csv_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """CSV rows as records of their cells (strings), keyed by the header's column names. Every
    row needs exactly one cell per column; an empty base field (title, target...) is left out."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, [])
        for i, name in enumerate(header):
            if name.strip() and header.index(name) != i:
                raise DataError(f"{path}:1: column {name!r} appears twice in the header")
        nameless = [i for i, name in enumerate(header) if not name.strip()]  # e.g. a trailing comma
        records = []
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            if len(cells) != len(header):
                hint = (
                    "quote cells that contain commas"
                    if len(cells) > len(header)
                    else "every row needs a cell per column (an empty cell is fine)"
                )
                raise DataError(
                    f"{path}:{reader.line_num}: {len(cells)} cells, the header has {len(header)}; {hint}"
                )
            for i in nameless:
                if cells[i].strip():
                    raise DataError(
                        f"{path}:{reader.line_num}: a value in column {i + 1}, unnamed in the header"
                    )
            record = {
                k: v
                for k, v in zip(header, cells, strict=True)
                if k.strip() and (k not in ARTICLE_FIELDS or v)
            }
            records.append((reader.line_num, record))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: invalid CSV: {exc}") from exc
    return records


def looks_multi(path: Path, value: Any) -> bool:
    """A multi-label value: a list, or a CSV cell with a JSON list or labels separated by ``|``."""
    if isinstance(value, list):
        return True
    return is_csv(path) and isinstance(value, str) and (value.startswith("[") or LABEL_SEPARATOR in value)


def csv_labels(cell: str) -> Any:
    """A multi-label CSV cell: a JSON list, or labels separated by ``|`` ("" = none)."""
    if cell.startswith("["):
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(cell)
    return [label.strip() for label in cell.split(LABEL_SEPARATOR) if label.strip()]
