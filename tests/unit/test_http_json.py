"""The HTTP API's JSON responses are Starlette's JSONResponse byte for byte (they are rendered by
an encoder built once, without the check for circular containers)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from starlette.responses import JSONResponse

from service.core.types import HeadResult, LabelScore, TagResult, result_to_json
from service.http_api.app import JsonResponse

ODD = 'é\x00\x1f\x7f\u2028\ud7ff"\\/ \n\t'


def result(rng: random.Random) -> dict[str, Any]:
    scores = tuple(
        LabelScore(f"label {i} {ODD[: i % 12]}", s)
        for i, s in enumerate(
            [round(rng.random() ** 9, 6) for _ in range(40)]
            + [5e-06, 1e-05, 0.0001, 0.0, 1.0, 1e16, 1e-300, 0.1 + 0.2, float("inf"), float("nan")]
        )
    )
    head = HeadResult("topics", "multi", scores[:3], scores, {"label 0": ("a", ODD)})
    return {"result": result_to_json(TagResult(ODD, (head,), "m", "v1"))}


@pytest.mark.parametrize(
    "content",
    [
        result(random.Random(3)),
        {"items": [{"id": "a", "error": {"code": 400, "status": "INVALID_ARGUMENT", "message": ODD}}]},
        {"error": "x"},
        [],
        {},
        {"n": [1, -2, 2**70, True, False, None, 1.5]},
    ],
)
def test_the_body_and_headers_are_starlettes(content: Any) -> None:
    ours, theirs = JsonResponse(content, status_code=201), JSONResponse(content, status_code=201)
    assert ours.body == theirs.body
    assert ours.raw_headers == theirs.raw_headers and ours.status_code == theirs.status_code
    assert json.loads(ours.body) == json.loads(theirs.body)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_number_is_refused_as_by_starlette(value: float) -> None:
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        JSONResponse({"score": value})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        JsonResponse({"score": value})
