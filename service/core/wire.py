"""Counting a request's protobuf fields before it is parsed.

protobuf (upb) parses a message in one call that holds the GIL, and its cost grows with the number
of fields, not bytes: 16 MiB of 8 million empty articles took ~2 s to parse, a million-entry map
~1 s, during which the whole process (health checks, /healthz, every other call) waited. Nothing in
protobuf counts before parsing, so ``count_fields`` walks the wire format itself: every tag at every
depth counts one (a map entry three: the entry, its key and its value), every element of a packed
repeated number one, and the walk stops as soon as the count passes the budget. A string's bytes are
skipped, not read, so a request of a few large texts costs a few dozen steps; the most a walk costs
is about the budget's number of steps (~10 ms at the default budget).

Malformed bytes end the walk quietly: the parser that follows says what is wrong, as before.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from service.core.errors import InvalidRequest

FIELDS_PER_ARTICLE = 32  # every field of an article, its published_at's two and room for metadata
EXTRA_FIELDS = 1_000  # options, heads, parameters, a request's own fields
_HIGH_BYTES = bytes(range(0x80, 0x100))  # a varint's continuation bytes
_FIXED = {
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_DOUBLE: 8,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
}


class FieldBudget:
    """The most fields one request may hold: 32 per article of ``--max-request-articles``, plus
    1,000 (17,384 by default: every field of 512 articles and ~4,000 metadata entries)."""

    def __init__(self, max_articles: int) -> None:
        self.most = FIELDS_PER_ARTICLE * max_articles + EXTRA_FIELDS
        self._refusal = (
            f"the request holds more than {self.most} protobuf fields ({FIELDS_PER_ARTICLE} per "
            f"article of the limit of {max_articles}, plus {EXTRA_FIELDS}; a map entry is 3)"
        )

    def check(self, data: bytes, descriptor: Descriptor) -> None:
        """InvalidRequest if ``data`` holds more fields than the budget, before it is parsed (a
        field takes at least a byte: a request no longer than the budget is not walked)."""
        if len(data) > self.most and count_fields(data, descriptor, self.most) > self.most:
            raise InvalidRequest(self._refusal)


def descriptor_of(deserializer: Any) -> Descriptor | None:
    """The message type a generated ``Message.FromString`` parses, if that is what it is."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return descriptor if isinstance(descriptor, Descriptor) else None


class _Malformed(Exception):
    pass


@cache
def _layout(descriptor: Descriptor) -> dict[int, Descriptor | int]:
    """Field number -> the message type to walk into, or a packable number's width (0: varint);
    strings, bytes and unknown fields are absent (their bytes are skipped)."""
    layout: dict[int, Descriptor | int] = {}
    for field in descriptor.fields:
        if field.message_type is not None:
            layout[field.number] = field.message_type
        elif field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            layout[field.number] = _FIXED.get(field.type, 0)
    return layout


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _Malformed


def _packed(data: bytes, pos: int, size: int, width: int, room: int) -> int:
    """The elements of a packed run of ``size`` bytes (more than ``room`` if there are)."""
    if width:
        return size // width
    if size > 10 * room:  # a varint is at most 10 bytes: there are more than room
        return room + 1
    return len(data[pos : pos + size].translate(None, _HIGH_BYTES))  # one last byte per varint


def count_fields(data: bytes, descriptor: Descriptor, most: int) -> int:
    """The fields of the message ``data`` of type ``descriptor``, counted until more than ``most``
    (then a number over ``most`` is returned, not the total)."""
    count = 0
    stack: list[tuple[int, int, Descriptor]] = [(0, len(data), descriptor)]
    try:
        while stack:
            pos, end, message = stack.pop()
            layout = _layout(message)
            while pos < end:
                tag = data[pos]  # one byte for field numbers under 16, else a longer varint
                if tag < 0x80:
                    pos += 1
                else:
                    tag, pos = _varint(data, pos, end)
                count += 1
                if count > most:
                    return count
                wire = tag & 7
                if wire == 2:
                    size = data[pos] if pos < end else 0x80
                    if size < 0x80:
                        pos += 1
                    else:
                        size, pos = _varint(data, pos, end)
                    kind = layout.get(tag >> 3)
                    if isinstance(kind, Descriptor):
                        stack.append((pos, min(pos + size, end), kind))
                    elif kind is not None:
                        count += _packed(data, pos, size, kind, most - count + 1) - 1  # the tag was one
                    pos += size
                elif wire == 0:
                    _, pos = _varint(data, pos, end)
                elif wire == 1:
                    pos += 8
                elif wire == 5:
                    pos += 4
                elif wire not in (3, 4):  # 3, 4: a group's start and end, counted as fields
                    raise _Malformed
    except _Malformed:
        pass
    return count
