"""An artifact's manifest (``manifest.json``): what a model is -- heads, labels, thresholds,
versions, data, metrics, config -- sealed with a checksum of every other field, so that an edit
by hand is refused at load; ``read_manifest`` also refuses values out of range even if sealed
(``manifest_checks``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.model.errors import ArtifactError
from service.model.manifest_checks import check_manifest_values

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class HeadSpec:
    """A head as the manifest records it."""

    name: str
    kind: str  # "multi" | "single"
    labels: tuple[str, ...]
    thresholds: tuple[float, ...] = ()  # multi-label only, one per label
    target: str = ""  # "" | "target" | "title": what a target-aware head judges stance toward

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "labels": list(self.labels),
            "thresholds": list(self.thresholds),
            "target": self.target,
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> HeadSpec:
        kind = raw["kind"]
        if kind not in ("multi", "single"):
            raise ValueError(f"head kind must be 'multi' or 'single', not {kind!r}")
        labels = tuple(str(x) for x in raw["labels"])
        thresholds = tuple(float(x) for x in raw.get("thresholds", ()))
        if kind == "multi" and len(thresholds) != len(labels):
            raise ValueError(f"head {raw['name']!r}: {len(labels)} labels but {len(thresholds)} thresholds")
        return HeadSpec(str(raw["name"]), kind, labels, thresholds, str(raw.get("target", "")))


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    created_at: str
    heads: tuple[HeadSpec, ...]
    model_sha256: str
    format_version: int = FORMAT_VERSION
    versions: dict[str, str] = field(default_factory=dict)  # sklearn, newstagger, python, ...
    data: dict[str, Any] = field(default_factory=dict)  # training/dev files with sha256 and rows
    metrics: dict[str, Any] = field(default_factory=dict)  # dev metrics per head
    config: dict[str, Any] = field(default_factory=dict)  # the full training config, seed included
    manifest_sha256: str = ""  # of every other field (``manifest_digest``); set when written

    def head(self, name: str) -> HeadSpec:
        for spec in self.heads:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "heads": [h.to_json() for h in self.heads],
            "model_sha256": self.model_sha256,
            "versions": self.versions,
            "data": self.data,
            "metrics": self.metrics,
            "config": self.config,
            "manifest_sha256": self.manifest_sha256,
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Manifest:
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"unsupported format_version {raw.get('format_version')!r} (want {FORMAT_VERSION})"
            )
        return Manifest(
            name=str(raw["name"]),
            version=str(raw["version"]),
            created_at=str(raw["created_at"]),
            heads=tuple(HeadSpec.from_json(h) for h in raw["heads"]),
            model_sha256=str(raw["model_sha256"]),
            versions=dict(raw.get("versions", {})),
            data=dict(raw.get("data", {})),
            metrics=dict(raw.get("metrics", {})),
            config=dict(raw.get("config", {})),
            manifest_sha256=str(raw.get("manifest_sha256", "")),
        )


def manifest_digest(raw: dict[str, Any]) -> str:
    """The sha256 of a manifest's fields but ``manifest_sha256`` itself, in canonical JSON."""
    fields = {k: v for k, v in raw.items() if k != "manifest_sha256"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_manifest(path: Path, raw: dict[str, Any]) -> None:
    """Write ``raw`` as the manifest of the artifact at ``path``, sealed with its checksum (the
    one way to change a manifest on purpose; an edit by hand is refused at load)."""
    sealed = {**raw, "manifest_sha256": manifest_digest(raw)}
    (Path(path) / MANIFEST_FILE).write_text(json.dumps(sealed, indent=2) + "\n", encoding="utf-8")


def read_manifest(path: Path) -> Manifest:
    manifest_path = Path(path) / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: no {MANIFEST_FILE} (not a model artifact)")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
        manifest = Manifest.from_json(raw)
        check_manifest_values(raw)
        digest = manifest_digest(raw)  # UnicodeEncodeError (a ValueError) for a lone surrogate
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{manifest_path}: malformed manifest: {exc}") from exc
    if manifest.manifest_sha256 != digest:
        raise ArtifactError(
            f"{manifest_path}: manifest checksum mismatch (edited after it was written?)"
            if manifest.manifest_sha256
            else f"{manifest_path}: manifest has no checksum (written by an older newstagger: retrain)"
        )
    return manifest


def check_recorded_version(path: Path, version: str, manifest: Manifest) -> None:
    """Raise ArtifactError unless ``manifest`` (of the artifact at ``path``, which a registry
    calls ``version``) records that version."""
    if manifest.version != version:
        raise ArtifactError(
            f"{path}: the registry's version {version!r} holds model version {manifest.version!r} "
            f"(its manifest's): refused, it would be served as {manifest.version!r}; a version's "
            "folder must be named after the version its manifest records"
        )


def lost_heads(old: Manifest, new: Manifest) -> list[str]:
    """What callers of ``old`` lose with ``new``, one phrase each: a missing head, a head of
    another kind, labels no longer there. New heads and new labels take nothing away."""
    heads = {h.name: h for h in new.heads}
    lost = []
    for head in old.heads:
        other = heads.get(head.name)
        if other is None:
            lost.append(f"head {head.name!r} is missing")
        elif other.kind != head.kind:
            lost.append(f"head {head.name!r} is {other.kind}-label, not {head.kind}-label")
        else:
            gone = [label for label in head.labels if label not in other.labels]
            if gone:
                lost.append(f"head {head.name!r} lacks label(s) {', '.join(gone)}")
    return lost
