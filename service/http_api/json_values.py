"""How many values a JSON text holds, counted before it is parsed, cheaply and exactly.

Parsing holds the GIL for the whole parse (pydantic_core, like any C parser), so a body of
millions of tiny values (``[[],[],...]``, ``{"1":1,...}``) stops every thread of the process,
health checks included, for as long as it takes: 0.2-6 s for 16 MiB, measured. Running the parse in
a worker thread does not help (measured the same). Counting is cheap instead: a value other than
the first of its array or object follows a comma, and a first one follows a ``[`` or ``{``, so the
values are at most the commas, brackets and braces outside strings, plus one. numpy compares the
bytes (with the GIL released); which quotes are escaped is found with big-integer carries (as
simdjson does it, over the whole text at once); the brackets inside strings are summed per string.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from service.core.errors import InvalidRequest

VALUES_PER_ARTICLE, OTHER_VALUES = 8, 10_000  # the JSON values one V2 request may hold

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
    chars = np.frombuffer(text, dtype=np.uint8)
    starts = (chars == STARTS[0]) | (chars == STARTS[1]) | (chars == STARTS[2])
    if int(np.count_nonzero(starts)) < most:  # counted inside strings too: an upper bound
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


def check_value_count(text: bytes, max_articles: int) -> None:
    """Refuses a V2 request whose JSON holds more array elements and object members than one of
    ``max_articles`` articles needs (3 inputs of one element or one nested list per article,
    outputs, parameters), with plenty to spare; far fewer than would hold the process while parsed."""
    most = VALUES_PER_ARTICLE * max_articles + OTHER_VALUES
    if more_values_than(text, most):
        raise InvalidRequest(
            f"the request's JSON holds more than {most} array elements and object members "
            f"({VALUES_PER_ARTICLE} per article of the limit of {max_articles}, plus {OTHER_VALUES})"
        )
