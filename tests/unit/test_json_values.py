"""The count of a JSON text's array elements and object members taken before it is parsed: the
same, for every text, as a tokenizer that reads it character by character."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from service.core.errors import InvalidRequest
from service.core.json_values import check_rest_value_count, more_values_than
from service.http_api.schemas import TagBatchRequest

ALPHABET = ["a", ",", "[", "{", '"', "\\", "}", "]", ":", " ", "é", "\n"]


def counted(text: str) -> int:
    """Commas, brackets and braces outside strings, plus one: at least the values the text holds
    (each but the first in its array or object follows a comma, a first one a bracket or brace)."""
    count, inside, escaped = 1, False, False
    for char in text:
        if escaped:
            escaped = False
        elif inside:
            escaped, inside = char == "\\", char != '"'
        elif char == '"':
            inside = True
        elif char in ",[{":
            count += 1
    return count


def random_json(rng: random.Random, depth: int = 0) -> Any:
    word = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(7)))
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return word
    if roll < 0.5:
        return rng.randrange(1000)
    if roll < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {word + str(i): random_json(rng, depth + 1) for i in range(rng.randrange(4))}


def test_agrees_with_a_tokenizer_on_random_json_with_escapes_and_brackets_in_strings() -> None:
    rng = random.Random(14)
    for _ in range(2000):
        text = json.dumps(random_json(rng), ensure_ascii=rng.random() < 0.5)
        n = counted(text)
        for most in (n - 1, n, n + 1):
            assert more_values_than(text.encode(), most) == (n > most), (text, most)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ('["a\\\\", "b"]', 3),  # the string ends with an escaped backslash: its quote is real
        ('["a\\"", "b"]', 3),  # an escaped quote inside the string
        ('["a\\\\\\"[,{", "b"]', 3),  # three backslashes, then an escaped quote, then brackets
        ('{"k": [1, 2], "l": {}}', 6),
        ('"[,,,]"', 1),
    ],
)
def test_escapes_and_brackets_in_strings(text: str, values: int) -> None:
    assert counted(text) == values
    assert not more_values_than(text.encode(), values)
    assert more_values_than(text.encode(), values - 1) or values == 1


def test_millions_of_tiny_values_are_found_without_parsing() -> None:
    limit = 14_096
    for body in (
        "[" + ",".join(["[]"] * 1_000_000) + "]",
        '{"p": {' + ",".join(f'"{i}": 1' for i in range(500_000)) + "}}",
    ):
        assert more_values_than(body.encode(), limit)
    texts = json.dumps({"inputs": [{"name": "text", "data": ['a, "b", [c] {d} \\ ' * 1000] * 64}]})
    assert not more_values_than(texts.encode(), limit)  # commas and brackets in text are not values


def rest_batch(articles: int, metadata: int, text: str, heads: list[str] | None = None) -> bytes:
    """A /v1/tag:batch body: ``articles`` articles with every field set and ``metadata`` entries
    spread over them (the first ones get one more), options with every field set (64 heads unless
    ``heads`` are given)."""
    each, extra = divmod(metadata, articles)
    body = {
        "articles": [
            {
                "id": f"a{i}",
                "text": text,
                "title": "Troops, [tanks] and {drones}",
                "target": "troops",
                "source": "wire",
                "url": "https://example.com/a?b=1,2",
                "published_at": "2026-11-30T12:00:00Z",
                "metadata": {f"k{j}": "v, [w]" for j in range(each + (i < extra))},
            }
            for i in range(articles)
        ],
        "options": {
            "heads": [f"h{i}" for i in range(64)] if heads is None else heads,
            "top_k": 3,
            "min_score": 0.5,
            "explain": True,
        },
    }
    return json.dumps(body).encode()


def test_a_full_rest_batch_with_long_texts_and_metadata_passes_and_one_more_value_does_not() -> None:
    """512 articles (the default limit), each with every field, 7 metadata entries on average and
    a 32 KiB text full of commas and brackets (16 MiB in all, the body limit): allowed. The limit
    is 16 values per article plus 1,000: the body itself, its 2 members, 512 articles and their 8
    fields each, 4 options and 64 heads leave 4,513 metadata entries. The body is valid, as the REST
    API parses it."""
    text = "Troops crossed the border, [again], {said} officials. " * 600
    spare = 16 * 512 + 1_000 - 1 - 2 - 512 * 9 - 4 - 64
    allowed = rest_batch(512, spare, text)
    assert len(allowed) < 16 << 20
    assert len(TagBatchRequest.model_validate_json(allowed).articles) == 512
    asyncio.run(check_rest_value_count(allowed, 512))
    with pytest.raises(
        InvalidRequest,
        match=r"more than 9192 array elements and object members "
        r"\(16 per article of the limit of 512, plus 1000\)",
    ):
        asyncio.run(check_rest_value_count(rest_batch(512, spare + 1, text), 512))


@pytest.mark.parametrize(
    "body",
    [
        b'{"articles": [' + b",".join([b"{}"] * 5_000) + b"]}",
        b'{"article": {"metadata": {' + b",".join(b'"%d": "a"' % i for i in range(9_190)) + b"}}}",
        b'{"article": {"text": [' + b",".join([b"[]"] * 5_000) + b"]}}",
        b'{"options": {"heads": [' + b",".join([b"1"] * 9_190) + b"]}}",
    ],
)
def test_a_rest_body_of_tiny_values_is_refused_before_it_is_parsed(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="JSON holds more than 9192 array elements"):
        asyncio.run(check_rest_value_count(body, 512))
    asyncio.run(check_rest_value_count(body, 1024))  # a server allowing more articles allows more
