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
whose heads and labels differ from the model's own, or whose manifest is refused by
``service.model.manifest.read_manifest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import skops.io as sio

from service.model.article_model import ArticleModel
from service.model.errors import ArtifactError
from service.model.manifest import (
    Manifest,
    check_recorded_version,
    manifest_digest,
    read_manifest,
    write_manifest,
)

#: A model file may unpack to at most this many times its size plus UNPACK_ALLOWANCE bytes (skops
#: stores its arrays uncompressed: a real model unpacks to about its own size).
MAX_UNPACK_RATIO = 16
UNPACK_ALLOWANCE = 64 << 20
MODEL_FILE = "model.skops"
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
    "service.model.ngrams.ByteNgramTfidf",
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


def check_new_artifact_dir(out_dir: Path) -> None:
    """Raise ArtifactError unless ``out_dir`` is free for a new artifact: absent or an empty
    directory (``train --out`` checks it before training, ``save_artifact`` again at the end)."""
    if out_dir.is_dir():
        if any(out_dir.iterdir()):
            raise ArtifactError(f"{out_dir} exists and is not empty; choose a new --out")
    elif out_dir.exists():
        raise ArtifactError(f"{out_dir} is a file, not a directory; choose a new --out")


def save_artifact(
    model: ArticleModel, manifest_fields: dict[str, Any], out_dir: Path, card: str | None = None
) -> Manifest:
    """Write an artifact to ``out_dir`` atomically: all of it appears at once, or nothing does.

    ``manifest_fields`` holds every Manifest field but ``model_sha256`` (computed here);
    ``version`` may be "" to derive one from the creation time and the model checksum.
    """
    out_dir = Path(out_dir)
    # mode 0o777 less the umask, like its files (mkdtemp's 0o700 would hide the version from a
    # service running as another user)
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
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
            check_new_artifact_dir(out_dir)
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):  # a full disk names no file: say where
            why = exc.strerror or exc
            raise ArtifactError(f"cannot write a model under {out_dir.parent}: {why}") from exc
        raise
    return manifest


def check_destination(out_dir: Path) -> None:
    """Raise ArtifactError unless ``save_artifact`` could write ``out_dir``: new or an empty
    directory, under a writable directory. ``train`` checks before fitting, so that a used
    ``--out`` or a read-only registry is not found only once the model is trained."""
    out_dir = Path(out_dir)
    check_new_artifact_dir(out_dir)
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # save_artifact creates the missing ones
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=parent))
    except OSError as exc:
        raise ArtifactError(f"cannot write a model under {parent}: {exc.strerror or exc}") from exc


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


def load_artifact(path: Path, version: str = "") -> LoadedModel:
    """Load and verify an artifact. ``version`` is the name a registry knows it by, which its
    manifest must record ("": any). Raises ArtifactError saying what is wrong."""
    path = Path(path)
    manifest = read_manifest(path)
    if version:
        check_recorded_version(path, version, manifest)
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
