"""How many values a JSON text holds, counted before it is parsed, cheaply and exactly.

Parsing holds the GIL for the whole parse (pydantic_core, like any C parser), so a body of
millions of tiny values (``[[],[],...]``, ``{"1":1,...}``) stops every thread of the process,
health checks included, for as long as it takes: 0.2-6 s for 16 MiB, measured. Running the parse in
a worker thread does not help (measured the same). Counting is cheap instead: a value other than
the first of its array or object follows a comma, and a first one follows a ``[`` or ``{``, so the
values are at most the commas, brackets and braces outside strings, plus one. numpy compares the
bytes (with the GIL released); which quotes are escaped is found with big-integer carries (as
simdjson does it, over the whole text at once); the brackets inside strings are summed per string.
The REST API's bodies are counted too, with a budget of their own: pydantic builds a model or an
error per value there (5-9 us each, measured), so a REST body may hold fewer.
"""

from __future__ import annotations

import asyncio

import numpy as np
from numpy.typing import NDArray

from service.core.errors import InvalidRequest

VALUES_PER_ARTICLE, OTHER_VALUES = 8, 10_000  # the JSON values one V2 request may hold
# One REST article is itself a value, holds at most 8 fields and, on average, 7 metadata entries;
# the options (64 heads at most) and the rest of the body fit in the 1,000 others.
REST_VALUES_PER_ARTICLE, REST_OTHER_VALUES = 16, 1_000
INLINE_BODY_BYTES = 1 << 20  # a bigger body is counted in a worker thread (numpy releases the GIL)
SMALL_TEXT = 1 << 16  # counted first with bytes.translate (which holds the GIL)

QUOTE, BACKSLASH = ord('"'), ord("\\")
STARTS = (ord(","), ord("["), ord("{"))


def _bits(mask: NDArray[np.bool_]) -> int:
    """A boolean mask as an integer: bit ``i`` is ``mask[i]``."""
    return int.from_bytes(np.packbits(mask, bitorder="little").tobytes(), "little")


def _escaped(backslashes: int, size: int) -> int:
    """Bit ``i`` set when character ``i`` follows an odd run of backslashes (it is escaped)."""
    even = int.from_bytes(b"\x55" * (size // 8 + 2), "little")
    starts = backslashes & ~(backslashes << 1)
    even_ends = (backslashes + (starts & even)) & ~backslashes
    odd_ends = (backslashes + (starts & ~even)) & ~backslashes
    return (even_ends & ~even) | (odd_ends & even)


def more_values_than(text: bytes, most: int) -> bool:
    """Whether the JSON ``text`` holds more than ``most`` array elements and object members (for
    text that is not JSON the answer may be either: the parser refuses it anyway)."""
    # the commas, brackets and braces, inside strings too, are an upper bound; a small text is
    # counted by bytes.translate, cheaper than numpy's fixed costs (2 us against 5 for 2 KiB)
    if len(text) <= SMALL_TEXT and len(text) - len(text.translate(None, b",[{")) < most:
        return False
    chars = np.frombuffer(text, dtype=np.uint8)
    starts = (chars == STARTS[0]) | (chars == STARTS[1]) | (chars == STARTS[2])
    if int(np.count_nonzero(starts)) < most:  # the same upper bound
        return False
    quotes = chars == QUOTE
    if np.count_nonzero(quotes[1:] & (chars[:-1] == BACKSLASH)):  # some quote may be escaped
        real = _bits(quotes) & ~_escaped(_bits(chars == BACKSLASH), len(chars))
        if real.bit_count() > 4 * most + 4:  # a string is an element, a key or a member's value
            return True
        octets = np.frombuffer(real.to_bytes(len(chars) // 8 + 2, "little"), dtype=np.uint8)
        quotes = np.unpackbits(octets, bitorder="little")[: len(chars)].astype(np.bool_)
    elif int(np.count_nonzero(quotes)) > 4 * most + 4:
        return True
    # a string runs from an opening quote to the next quote: the stretches alternate out, in, out...
    stretches = np.diff(np.flatnonzero(quotes), prepend=0, append=len(chars))
    inside = np.repeat(np.arange(len(stretches)) % 2 == 1, stretches)
    return int(np.count_nonzero(starts & ~inside)) + 1 > most


def check_value_count(
    text: bytes, max_articles: int, per_article: int = VALUES_PER_ARTICLE, other: int = OTHER_VALUES
) -> None:
    """Refuses a request whose JSON holds more array elements and object members than one of
    ``max_articles`` articles needs (V2: 3 inputs of one element or one nested list per article,
    outputs, parameters), with plenty to spare; far fewer than would hold the process while parsed."""
    most = per_article * max_articles + other
    if more_values_than(text, most):
        raise InvalidRequest(
            f"the request's JSON holds more than {most} array elements and object members "
            f"({per_article} per article of the limit of {max_articles}, plus {other})"
        )


async def check_rest_value_count(text: bytes, max_articles: int) -> None:
    """``check_value_count`` with the REST API's budget; a big body is counted in a worker thread,
    so the event loop answers other callers meanwhile."""
    args = (text, max_articles, REST_VALUES_PER_ARTICLE, REST_OTHER_VALUES)
    if len(text) > INLINE_BODY_BYTES:
        await asyncio.to_thread(check_value_count, *args)
    else:
        check_value_count(*args)
