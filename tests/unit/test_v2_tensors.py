"""The V2 tensor model and the HTTP error table, without sockets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.core.errors import DeadlineExceeded, InvalidArticle, InvalidRequest, ModelNotReady, Overloaded
from service.core.tagger import Tagger
from service.core.types import Article
from service.http_api.errors import BodyTooLarge, headers_for, status_for
from service.v2.tensors import (
    Tensor,
    check_shape,
    decode_bytes_tensor,
    encode_tensor,
    model_metadata,
    options_for,
    to_articles,
    to_outputs,
)


def test_bytes_tensors_round_trip_and_truncation_is_refused() -> None:
    values = ["Troops in Kursk.", "", "Ünïcødé ✓"]
    raw = encode_tensor(Tensor("text", "BYTES", np.array(values, dtype=object)))
    assert decode_bytes_tensor(raw) == values
    with pytest.raises(InvalidRequest, match="truncated"):
        decode_bytes_tensor(raw[:-1])
    with pytest.raises(InvalidRequest, match="UTF-8"):
        decode_bytes_tensor(b"\x01\x00\x00\x00\xff")


def test_fp32_and_bool_tensors_are_little_endian_raw_bytes() -> None:
    scores = np.array([[0.5, 0.25]], dtype=np.float64)
    assert encode_tensor(Tensor("s", "FP32", scores)) == np.array([0.5, 0.25], dtype="<f4").tobytes()
    assert encode_tensor(Tensor("a", "BOOL", np.array([[True, False]]))) == b"\x01\x00"


def test_inputs_become_articles_with_title_and_target() -> None:
    articles = to_articles({"text": ["a b", "c d"], "title": ["T1", "T2"]}, max_articles=2)
    assert articles == [Article("0", "a b", "T1", ""), Article("1", "c d", "T2", "")]
    with pytest.raises(InvalidRequest, match="the limit is 1"):
        to_articles({"text": ["a", "b"]}, max_articles=1)


def test_outputs_follow_the_metadata_and_rows_are_ordered_by_score(loaded_model: Any) -> None:
    meta = model_metadata(loaded_model)
    options, names = options_for(loaded_model, [])
    assert names == [o["name"] for o in meta["outputs"]] and options.heads == ()
    result = Tagger(loaded_model).tag([Article("0", "North Korean troops were sent to Kursk.")])
    tensors = {t.name: t for t in to_outputs(loaded_model, names, result)}
    for head in result[0].heads:
        width = len(loaded_model.manifest.head(head.head).labels)
        assert [o["shape"] for o in meta["outputs"] if o["name"].startswith(head.head + "_")] == [
            [-1, width]
        ] * 3
        assert list(tensors[f"{head.head}_labels"].data[0]) == [s.label for s in head.scores]
        row = tensors[f"{head.head}_scores"].data[0]
        assert list(row) == sorted(row, reverse=True)
        assert tensors[f"{head.head}_assigned"].data[0].sum() == len(head.labels)
    stance_only, _ = options_for(loaded_model, ["stance_scores"])
    assert stance_only.heads == ("stance",)


@pytest.mark.parametrize(
    ("shape", "count", "message"),
    [
        ([2**32, 2**32], 0, "does not match 0 elements"),  # 2**64: no int64 wrap-around to 0
        ([2**62, 4], 0, "does not match 0 elements"),
        ([-1, -1], 1, "non-negative integers"),
        ([True], 1, "non-negative integers"),
        ([1.0], 1, "non-negative integers"),
        ("1", 1, "non-negative integers"),
        (None, 1, "non-negative integers"),
        ([3], 1, "does not match 1 elements"),
    ],
)
def test_shapes_are_non_negative_integers_whose_product_is_the_element_count(
    shape: Any, count: int, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        check_shape("text", shape, count)


def test_good_shapes_pass() -> None:
    for shape, count in (([2, 1], 2), ([0], 0), ([10**30, 0], 0), ([], 1), ([1] * 100, 1)):
        check_shape("text", shape, count)


def test_an_output_asked_twice_is_answered_once(loaded_model: Any) -> None:
    options, names = options_for(loaded_model, ["stance_scores", "topics_labels", "stance_scores"] * 20)
    assert names == ["stance_scores", "topics_labels"]
    assert options.heads == tuple(h.name for h in loaded_model.manifest.heads)


@pytest.mark.parametrize(
    ("error", "status", "name"),
    [
        (InvalidArticle("x"), 400, "INVALID_ARGUMENT"),
        (InvalidRequest("x"), 400, "INVALID_ARGUMENT"),
        (BodyTooLarge("x"), 413, "INVALID_ARGUMENT"),
        (Overloaded("x"), 429, "RESOURCE_EXHAUSTED"),
        (ModelNotReady("x"), 503, "UNAVAILABLE"),
        (DeadlineExceeded("x"), 504, "DEADLINE_EXCEEDED"),
        (RuntimeError("/secret/path"), 500, "INTERNAL"),
    ],
)
def test_every_error_has_one_http_status(error: Exception, status: int, name: str) -> None:
    code, grpc_name, message = status_for(error)
    assert (code, grpc_name) == (status, name)
    assert message == ("internal error" if status == 500 else "x")
    assert ("Retry-After" in headers_for(code)) == (status in (429, 503))
