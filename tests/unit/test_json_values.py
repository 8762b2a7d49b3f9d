"""The count of a JSON text's array elements and object members taken before it is parsed: the
same, for every text, as a tokenizer that reads it character by character."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from service.http_api.json_values import more_values_than

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
