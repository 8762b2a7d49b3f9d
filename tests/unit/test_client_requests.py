"""What TaggerClient refuses before sending anything (no server listens here)."""

from __future__ import annotations

import pytest

from service.client import InvalidArgumentError, TaggerClient
from service.core.errors import InvalidRequest
from service.core.types import Article, TagOptions


def test_text_utf8_cannot_hold_is_an_invalid_argument_not_a_unicode_error() -> None:
    """A lone surrogate (what JSON's "\\ud800" decodes to) cannot be serialized: the client raised
    protobuf's UnicodeEncodeError instead of the InvalidRequest the in-process Tagger raises."""
    with TaggerClient("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(
            InvalidArgumentError, match="article 'a1': text holds a lone surrogate at character 4"
        ):
            client.tag("bad \ud800 text", article_id="a1")
        with pytest.raises(InvalidRequest, match="article 'b': title holds a lone surrogate at character 0"):
            client.tag_batch([Article("a", "fine"), Article("b", "fine", title="\udcff")])
        with pytest.raises(InvalidArgumentError, match="head name holds a lone surrogate"):
            client.tag("fine", options=TagOptions(heads=("topics\ud800",)))
