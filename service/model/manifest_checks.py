"""The values of a manifest that the service acts on or serves, checked before it is trusted.

A manifest's checksum proves only that it was sealed, not that what was sealed is sane (anyone
can re-seal one with ``write_manifest``), so ``read_manifest`` refuses, as a malformed manifest:

- a threshold that is not a number in [0, 1] (NaN or infinite included: a NaN cut-off would
  silently never assign its label, a negative one always would);
- a number in the metrics that is not finite (``GET /v1/model`` and ``GetModel`` serve them,
  and JSON has no NaN);
- a head name twice (results would list the head twice), a head without labels or with a label
  twice. (No heads at all loads -- a model file round-trips so -- but is not served:
  ``service.reloader.smoke_check``.)
"""

from __future__ import annotations

import math
from typing import Any


def check_manifest_values(raw: dict[str, Any]) -> None:
    """Raise ValueError naming the first value of ``raw`` (a manifest's JSON) that is out of range."""
    heads = raw.get("heads")
    if not isinstance(heads, list):
        raise ValueError(f"'heads' must be a list, not {heads!r}")
    names: set[Any] = set()
    for head in heads:
        if not isinstance(head, dict):
            raise ValueError(f"a head must be an object, not {head!r}")
        name, labels = head.get("name"), head.get("labels")
        if name in names:
            raise ValueError(f"head {name!r} is listed twice")
        names.add(name)
        if not isinstance(labels, list) or not labels or len(set(map(str, labels))) != len(labels):
            raise ValueError(
                f"head {name!r}: labels must be a non-empty list of distinct names, not {labels!r}"
            )
        for value in head.get("thresholds") or ():
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"head {head.get('name')!r}: threshold {value!r} is not a number in [0, 1]")
    where = _non_finite(raw.get("metrics"), "metrics")
    if where:
        raise ValueError(f"{where} is not a finite number")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _non_finite(value: Any, where: str) -> str:
    """Where in ``value`` a NaN or infinite number is ("" if nowhere)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]")
        if found:
            return found
    return ""
