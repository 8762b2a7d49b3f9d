"""Versioned model artifacts: save atomically, load safely, verify provenance.

An artifact is a directory::

    model.skops      the fitted ArticleModel, in skops format (no pickle)
    manifest.json    format version, model version, heads/labels/thresholds, versions, checksums, metrics
    MODEL_CARD.md    the same facts for people

Loading refuses an artifact whose manifest is missing, malformed or edited after it was written
(``manifest_sha256`` covers every other field: heads, labels, thresholds, versions, metrics),
whose model file does not match the manifest's sha256, whose model file names a type that is
neither in ``TRUSTED_TYPES`` nor a plain value (``PLAIN_TYPES``) -- stricter than skops' own
defaults --, whose model file would unpack to far more than its size (``MAX_UNPACK_RATIO``), or
whose heads and labels differ from the model's own, or whose thresholds or metrics are out of
range even if sealed (``manifest_checks``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import skops.io as sio

from service.model.article_model import ArticleModel
from service.model.errors import ArtifactError
from service.model.manifest_checks import check_manifest_values

FORMAT_VERSION = 1
#: A model file may unpack to at most this many times its size plus UNPACK_ALLOWANCE bytes (skops
#: stores its arrays uncompressed: a real model unpacks to about its own size).
MAX_UNPACK_RATIO = 16
UNPACK_ALLOWANCE = 64 << 20
MODEL_FILE = "model.skops"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "MODEL_CARD.md"

#: Every type a newstagger model file may contain. Anything else is refused before it is loaded.
TRUSTED_TYPES: tuple[str, ...] = (
    "builtins.slice",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int64",
    "numpy.ndarray",
    "scipy.sparse._csr.csr_matrix",
    "scipy.sparse._csr.csr_array",
    "service.model.article_model.ArticleModel",
    "service.model.classifiers.GatedClassifier",
    "service.model.classifiers.SigmoidLinearSVC",
    "service.model.evidence.SentenceEvidence",
    "service.model.features.ColumnText",
    "service.model.features.CompactTfidfVectorizer",
    "service.model.features.GatedClassifier",  # models saved before it moved (features.__getattr__)
    "service.model.features.SentenceEvidence",  # ditto
    "service.model.features.SigmoidLinearSVC",  # ditto
    "service.model.features.TargetInteraction",
    "service.model.features.TargetTextPairs",
    "service.model.features.UniqueRows",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.multiclass.OneVsRestClassifier",
    "sklearn.multiclass._ConstantPredictor",
    "sklearn.pipeline.FeatureUnion",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.svm._classes.LinearSVC",
)


#: Plain values (containers, strings, numbers) that skops stores as data, never as code.
PLAIN_TYPES: frozenset[str] = frozenset(
    f"builtins.{name}"
    for name in (
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "int",
        "float",
        "complex",
        "bool",
        "NoneType",
    )
)


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


@dataclass(frozen=True)
class LoadedModel:
    """A verified artifact in memory: what the Tagger serves."""

    manifest: Manifest
    model: ArticleModel
    path: Path
    loaded_at: float  # unix time

    @property
    def head_names(self) -> frozenset[str]:
        return frozenset(h.name for h in self.manifest.heads)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def save_artifact(
    model: ArticleModel, manifest_fields: dict[str, Any], out_dir: Path, card: str | None = None
) -> Manifest:
    """Write an artifact to ``out_dir`` atomically: all of it appears at once, or nothing does.

    ``manifest_fields`` holds every Manifest field but ``model_sha256`` (computed here);
    ``version`` may be "" to derive one from the creation time and the model checksum.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mode 0o777 less the umask, like its files (mkdtemp's 0o700 would hide the version from a
    # service running as another user)
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        sio.dump(model, staging / MODEL_FILE)
        digest = sha256_file(staging / MODEL_FILE)
        fields = dict(manifest_fields)
        if not fields.get("version"):
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
            fields["version"] = f"{stamp}-{digest[:8]}"
        raw = Manifest(model_sha256=digest, **fields).to_json()
        write_manifest(staging, raw)
        manifest = Manifest.from_json({**raw, "manifest_sha256": manifest_digest(raw)})
        if card is not None:
            (staging / CARD_FILE).write_text(card.replace("{version}", manifest.version))
        if out_dir.exists():
            if any(out_dir.iterdir()):
                raise ArtifactError(f"{out_dir} exists and is not empty; choose a new --out")
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


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


def model_file_types(path: Path) -> set[str]:
    """Every type, function and class a skops file names, read from its schema without loading it.

    (skops itself trusts many scikit-learn and builtin types by default; newstagger trusts only
    ``TRUSTED_TYPES`` and plain values.)
    """
    with zipfile.ZipFile(path) as zf:
        unpacked = sum(info.file_size for info in zf.infolist())
        limit = MAX_UNPACK_RATIO * path.stat().st_size + UNPACK_ALLOWANCE
        if unpacked > limit:
            raise ArtifactError(f"{path}: unpacks to {unpacked} bytes, over the limit of {limit}")
        schema = json.loads(zf.read("schema.json"))
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            module, name = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(name, str):
                found.add(f"{module}.{name}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def check_against_model(manifest: Manifest, model: ArticleModel, model_path: Path) -> None:
    """Raise ArtifactError unless the manifest's heads and labels are the model's own."""
    missing = [h.name for h in manifest.heads if h.name not in model.classifiers]
    if missing:
        raise ArtifactError(f"{model_path}: manifest heads missing from the model: {', '.join(missing)}")
    for head in manifest.heads:
        if list(head.labels) != list(model.labels.get(head.name, ())):
            raise ArtifactError(
                f"{model_path}: the manifest's labels of head {head.name!r} are not the model's "
                f"(manifest {list(head.labels)}, model {list(model.labels.get(head.name, ()))})"
            )


def load_artifact(path: Path) -> LoadedModel:
    """Load and verify an artifact. Raises ArtifactError saying what is wrong."""
    path = Path(path)
    manifest = read_manifest(path)
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise ArtifactError(f"{path}: no {MODEL_FILE}")
    digest = sha256_file(model_path)
    if digest != manifest.model_sha256:
        raise ArtifactError(
            f"{model_path}: checksum mismatch (manifest {manifest.model_sha256[:12]}…, file {digest[:12]}…)"
        )
    try:
        named = model_file_types(model_path) | set(sio.get_untrusted_types(file=model_path))
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{model_path}: unreadable model file: {exc}") from exc
    untrusted = named - set(TRUSTED_TYPES) - PLAIN_TYPES
    if untrusted:
        raise ArtifactError(f"{model_path}: refusing untrusted types: {', '.join(sorted(untrusted))}")
    try:
        model = sio.load(model_path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise ArtifactError(f"{model_path}: cannot load model: {exc}") from exc
    if not isinstance(model, ArticleModel):
        raise ArtifactError(f"{model_path}: holds {type(model).__name__}, not an ArticleModel")
    check_against_model(manifest, model, model_path)
    for head in manifest.heads:
        model.scorer(head.name)  # compile now, not on the first request
    return LoadedModel(manifest=manifest, model=model, path=path, loaded_at=time.time())
