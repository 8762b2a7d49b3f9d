"""newstagger as a V2 model: tensors in, tensors out, independent of the transport.

Inputs (BYTES, one element per article, UTF-8): ``text`` (required), ``title`` and ``target``
(optional, same length as ``text``). Outputs, per head ``H`` with ``L`` labels, each of shape
``[N, L]`` for ``N`` articles, every row ordered by score, highest first:

- ``H_labels`` (BYTES): the label names;
- ``H_scores`` (FP32): their scores in [0, 1];
- ``H_assigned`` (BOOL): whether the label is assigned (over its tuned threshold; for a
  single-label head exactly the first).

Requesting only some outputs runs only their heads. The model metadata declares all of this.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.core.errors import InvalidRequest
from service.core.types import Article, TagOptions, TagResult
from service.core.validation import cut, quote
from service.dispatch import Dispatcher
from service.model.artifact import LoadedModel

PLATFORM = "newstagger_sklearn"
INPUTS = ("text", "title", "target")
KINDS = (("labels", "BYTES"), ("scores", "FP32"), ("assigned", "BOOL"))


@dataclass(frozen=True, slots=True)
class Tensor:
    """One output tensor: ``data`` is a numpy array of the tensor's shape (BYTES as ``object``)."""

    name: str
    datatype: str
    data: NDArray[Any]


def output_names(loaded: LoadedModel) -> dict[str, tuple[str, str, str]]:
    """Output name -> (head, kind, datatype), in the model's head order."""
    return {f"{h.name}_{kind}": (h.name, kind, dtype) for h in loaded.manifest.heads for kind, dtype in KINDS}


def model_metadata(loaded: LoadedModel) -> dict[str, Any]:
    manifest = loaded.manifest
    sizes = {h.name: len(h.labels) for h in manifest.heads}
    return {
        "name": manifest.name,
        "versions": [manifest.version],
        "platform": PLATFORM,
        "inputs": [{"name": name, "datatype": "BYTES", "shape": [-1]} for name in INPUTS],
        "outputs": [
            {"name": name, "datatype": dtype, "shape": [-1, sizes[head]]}
            for name, (head, _kind, dtype) in output_names(loaded).items()
        ],
    }


def listed(names: Sequence[str], most: int = 5) -> str:
    """Caller-given names for an error message: the first ``most``, each cut short, and how many
    more (so a request cannot make its error message huge)."""
    shown = ", ".join(cut(name, 32) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def model_label(name: str, version: str | None) -> str:
    """A requested model (and version) for an error message, each cut short."""
    return quote(name) + (f" version {quote(version)}" if version else "")


def to_articles(inputs: Mapping[str, Sequence[str]], max_articles: int) -> list[Article]:
    """The articles of one request, from its decoded BYTES inputs."""
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise InvalidRequest(f"unknown input(s) {listed(unknown)}; the model takes {', '.join(INPUTS)}")
    texts = inputs.get("text")
    if texts is None:
        raise InvalidRequest("the input tensor 'text' (BYTES, one element per article) is required")
    if len(texts) > max_articles:
        raise InvalidRequest(f"{len(texts)} articles in one request; the limit is {max_articles}")
    extra = {name: inputs[name] for name in ("title", "target") if name in inputs}
    for name, values in extra.items():
        if len(values) != len(texts):
            raise InvalidRequest(f"input '{name}' has {len(values)} elements; 'text' has {len(texts)}")
    return [
        Article(
            id=str(i),
            text=text,
            title=extra["title"][i] if "title" in extra else "",
            target=extra["target"][i] if "target" in extra else "",
        )
        for i, text in enumerate(texts)
    ]


def options_for(loaded: LoadedModel, requested: Sequence[str]) -> tuple[TagOptions, list[str]]:
    """The options that compute ``requested`` outputs (all when empty) and their names in the
    order asked, each once (a name asked twice is answered once)."""
    known = output_names(loaded)
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise InvalidRequest(f"unknown output(s) {listed(unknown)}; see the model metadata")
    names = list(dict.fromkeys(requested)) or list(known)
    heads = {known[name][0] for name in names}
    order = tuple(h.name for h in loaded.manifest.heads if h.name in heads)
    return TagOptions(heads=order if requested else ()), names


def to_outputs(loaded: LoadedModel, names: Sequence[str], results: Sequence[TagResult]) -> list[Tensor]:
    known = output_names(loaded)
    columns: dict[str, tuple[list[list[str]], list[list[float]], list[list[bool]]]] = {}
    for result in results:
        for verdict in result.heads:
            labels, scores, assigned = columns.setdefault(verdict.head, ([], [], []))
            chosen = {s.label for s in verdict.labels}
            labels.append([s.label for s in verdict.scores])
            scores.append([s.score for s in verdict.scores])
            assigned.append([s.label in chosen for s in verdict.scores])
    tensors = []
    for name in names:
        head, kind, dtype = known[name]
        width = len(loaded.manifest.head(head).labels)
        labels, scores, assigned = columns.get(head, ([], [], []))
        if kind == "labels":
            data: NDArray[Any] = np.array(labels, dtype=object).reshape(len(results), width)
        elif kind == "scores":
            # float64 holds the core's rounded scores exactly for JSON; encoders send FP32
            data = np.array(scores, dtype=np.float64).reshape(len(results), width)
        else:
            data = np.array(assigned, dtype=np.bool_).reshape(len(results), width)
        tensors.append(Tensor(name, dtype, data))
    return tensors


def _elements(shape: Sequence[int], limit: int) -> int:
    """The product of ``shape`` (non-negative), or a number over ``limit`` as soon as it is
    clear it exceeds it: exact, never overflowing, and cheap however large the dimensions."""
    if 0 in shape:
        return 0
    product = 1
    for dim in shape:
        product *= dim
        if product > limit:
            break
    return product


def shape_dims(name: str, shape: Any) -> list[int]:
    """``shape`` (of input ``name``) as a list of dimensions; InvalidRequest unless it is a list
    of non-negative integers."""
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRequest(f"input {quote(name)}: shape must be a list of non-negative integers")
    return list(shape)


def declared_count(name: str, shape: Any, max_articles: int) -> int:
    """The number of elements (articles) ``shape`` declares for input ``name``; InvalidRequest if
    it is over ``max_articles``. Checked before any element is decoded, so a request's size in
    articles costs nothing to refuse, however many tiny elements it carries."""
    count = _elements(shape_dims(name, shape), max_articles)
    if count > max_articles:
        raise InvalidRequest(
            f"input {quote(name)} has shape {cut(str(list(shape)))}: more articles than one request "
            f"may carry; the limit is {max_articles}"
        )
    return count


def check_shape(name: str, shape: Any, count: int) -> None:
    """Raise InvalidRequest unless ``shape`` (of input ``name``) is a list of non-negative
    integers whose product is ``count``, the number of elements the request carries."""
    if _elements(shape_dims(name, shape), count) != count:
        raise InvalidRequest(
            f"input {quote(name)}: shape {cut(str(list(shape)))} does not match {count} elements"
        )


def decode_bytes_tensor(raw: bytes, most: int | None = None) -> list[str]:
    """BYTES elements in the binary extension: each a 4-byte little-endian length, then the bytes.
    More than ``most`` elements (the count the shape declares) is InvalidRequest, found as soon as
    the next one starts, not after decoding them all."""
    values: list[str] = []
    offset = 0
    while offset < len(raw):
        if most is not None and len(values) >= most:
            raise InvalidRequest(f"BYTES tensor data holds more than the {most} elements of its shape")
        if offset + 4 > len(raw):
            raise InvalidRequest("truncated BYTES tensor data")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidRequest("truncated BYTES tensor data")
        values.append(text_of(raw[offset : offset + size]))
        offset += size
    return values


def text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("BYTES elements must be UTF-8 text") from None
    raise InvalidRequest(f"BYTES elements must be strings, got {type(value).__name__}")


def encode_tensor(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        parts = []
        for value in tensor.data.flat:
            encoded = str(value).encode("utf-8")
            parts += [struct.pack("<I", len(encoded)), encoded]
        return b"".join(parts)
    dtype = np.dtype("<f4") if tensor.datatype == "FP32" else np.dtype(np.bool_)
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


async def infer(
    dispatcher: Dispatcher,
    loaded: LoadedModel,
    inputs: Mapping[str, Sequence[str]],
    requested: Sequence[str],
    max_articles: int,
    deadline: float | None,
) -> tuple[str, list[Tensor]]:
    """Tag the request's articles through the shared batcher; (model version, output tensors).
    A tensor is all or nothing: the first article that cannot be tagged fails the call."""
    articles = to_articles(inputs, max_articles)
    options, names = options_for(loaded, requested)
    results = []
    for outcome in await dispatcher.tag_each(articles, options, deadline):
        if isinstance(outcome, Exception):
            raise outcome
        results.append(outcome)
    version = results[0].model_version if results else loaded.manifest.version
    return version, to_outputs(loaded, names, results)
