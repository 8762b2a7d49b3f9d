"""Counting a request's protobuf fields on the wire, before it is parsed (service/core/wire.py)."""

from __future__ import annotations

import pytest

from service.core.errors import InvalidRequest
from service.core.wire import FieldBudget, count_fields, descriptor_of
from service.gen.inference import open_inference_grpc_pb2 as v2
from service.gen.newstagger.v1 import tagger_pb2 as pb

BATCH = pb.TagBatchRequest.DESCRIPTOR
INFER = v2.ModelInferRequest.DESCRIPTOR
Tensor = v2.ModelInferRequest.InferInputTensor


def full_article(i: int, entries: int) -> pb.Article:
    article = pb.Article(
        id=f"a-{i}", title="t", text="x" * 30_000, target="z", source="s", url="u", metadata={}
    )
    article.published_at.FromSeconds(1_700_000_000)
    article.published_at.nanos = 5
    article.metadata.update({f"k{j}": "v" for j in range(entries)})
    return article


def test_every_tag_at_every_depth_counts_and_packed_numbers_count_each() -> None:
    # the article (1) with id, text (2), published_at (1) with seconds and nanos (2), 2 metadata
    # entries (3 each), options (1) with 3 heads and top_k (4)
    article = pb.Article(id="a", text="b", metadata={"k": "v", "l": "w"})
    article.published_at.FromSeconds(5)
    article.published_at.nanos = 1
    request = pb.TagBatchRequest(articles=[article], options=pb.TagOptions(heads=["x", "y", "z"], top_k=2))
    assert count_fields(request.SerializeToString(), BATCH, 1_000) == 1 + 2 + 3 + 6 + 1 + 4
    # the input (1), its name (1), a packed shape of 4 dimensions however wide (4)
    infer = v2.ModelInferRequest(inputs=[Tensor(name="text", shape=[1, 300, 2**40, 5])])
    assert count_fields(infer.SerializeToString(), INFER, 1_000) == 6


def test_counting_stops_past_the_limit_without_walking_the_rest() -> None:
    assert count_fields(b"\x0a\x00" * 8_000_000, BATCH, 100) == 101
    shape = v2.ModelInferRequest(inputs=[Tensor(shape=[1] * 1_000_000)]).SerializeToString()
    assert count_fields(shape, INFER, 17_384) > 17_384
    assert count_fields(shape, INFER, 2_000_000) == 1_000_001  # exact when it fits


def test_malformed_bytes_are_left_to_the_parser() -> None:
    assert count_fields(b"\xff\xff\xff\xff\x0f", BATCH, 100) <= 100
    assert count_fields(b"\x0a\xff\xff\xff\x7f", BATCH, 100) <= 100  # a length past the end
    assert count_fields(b"\x0e", BATCH, 100) <= 100  # wire type 6 does not exist


def test_the_budget_passes_a_full_batch_and_refuses_one_more_than_it_allows() -> None:
    budget = FieldBudget(512)
    assert budget.most == 17_384
    # 512 articles with every field and 7 metadata entries each, 64 heads: 16 MiB, under the budget
    full = pb.TagBatchRequest(
        articles=[full_article(i, 7) for i in range(512)], options=pb.TagOptions(heads=["h"] * 64)
    ).SerializeToString()
    budget.check(full, BATCH)
    descriptor = descriptor_of(pb.TagRequest.FromString)
    assert descriptor is pb.TagRequest.DESCRIPTOR
    many = pb.TagRequest(article=pb.Article(id="a", text="b", metadata={str(i): "" for i in range(5_793)}))
    budget.check(many.SerializeToString(), descriptor)  # 1 + 2 + 3 x 5,793 = 17,382
    many.article.metadata["one more"] = ""
    with pytest.raises(InvalidRequest) as info:
        budget.check(many.SerializeToString(), descriptor)
    assert str(info.value) == (
        "the request holds more than 17384 protobuf fields (32 per article of the limit of 512, "
        "plus 1000; a map entry is 3)"
    )


def test_a_field_takes_a_byte_at_least_so_a_request_within_the_budget_in_bytes_passes() -> None:
    budget = FieldBudget(1)  # 1,032 fields
    budget.check(b"\x0b" * 1_032, BATCH)  # group starts: the shortest fields there are
    with pytest.raises(InvalidRequest):
        budget.check(b"\x0b" * 1_033, BATCH)
