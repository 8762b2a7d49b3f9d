"""Protobuf -> domain conversion: options are bounded before their names are decoded."""

from __future__ import annotations

import time

import pytest

from service.core.errors import InvalidRequest
from service.core.validation import MAX_HEADS
from service.gen.newstagger.v1 import tagger_pb2 as pb
from service.grpc_api.convert import to_options


def test_too_many_head_names_are_refused_before_they_are_decoded() -> None:
    """Five million one-byte head names fit in a 14 MiB request; turning them into Python strings
    took ~0.25 s of the event loop before the count was refused. Now the count is checked first.
    Timed in this thread's CPU seconds, not by the clock: what the fix saves is work, and a busy
    machine that preempts the test (20 ms is one scheduler slice or two) must not fail it."""
    wire = pb.TagBatchRequest(options=pb.TagOptions(heads=["h"] * 2_000_000)).SerializeToString()
    options = pb.TagBatchRequest.FromString(wire).options
    started = time.thread_time()
    with pytest.raises(InvalidRequest, match=f"2000000 head names; the limit is {MAX_HEADS}"):
        to_options(options)
    assert time.thread_time() - started < 0.02  # decoding the names took ~0.1 s of CPU


def test_options_within_the_limits_convert() -> None:
    options = to_options(pb.TagOptions(heads=["topics"] * MAX_HEADS, top_k=2, explain=True))
    assert options.heads == ("topics",) * MAX_HEADS and options.top_k == 2 and options.explain
    assert to_options(pb.TagOptions()).heads == ()
