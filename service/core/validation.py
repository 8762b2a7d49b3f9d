"""The one validation of what a caller sends: an article's fields and the per-call options.

Every door calls it (``MicroBatcher.submit`` for gRPC, HTTP and Kafka, ``Tagger.tag`` for direct
callers, the Kafka codec for dead-letter reasons). Messages quote caller input only cut short
(``quote``), so a huge id or head name cannot make an error message huge.
"""

from __future__ import annotations

from collections.abc import Collection

from service.core.errors import InvalidArticle, InvalidRequest
from service.core.types import Article, TagOptions

MAX_ID_BYTES = 512
MAX_TITLE_BYTES = 8 * 1024
MAX_TARGET_BYTES = 1024
MAX_HEADS = 64  # names in TagOptions.heads
MAX_HEAD_NAME_BYTES = 128
QUOTE_CHARS = 64


def cut(value: str, limit: int = QUOTE_CHARS) -> str:
    """``value`` for an error message: cut to ``limit`` characters (and an ellipsis) if longer."""
    return value if len(value) <= limit else value[:limit] + "…"


def quote(value: str, limit: int = QUOTE_CHARS) -> str:
    return repr(cut(value, limit))


def utf8_size(text: str, limit: int) -> int:
    """UTF-8 size of ``text``; texts that cannot be over ``limit`` (4 bytes a character at most)
    are not encoded."""
    if len(text) * 4 <= limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _field_size(article_id: str, name: str, value: str, limit: int, reason: str) -> None:
    size = utf8_size(value, limit)
    if size > limit:
        message = f"article {article_id}: {name} is {size} bytes, over the limit of {limit}"
        raise InvalidArticle(message, reason)


def lone_surrogate(value: str) -> int | None:
    """Where ``value`` holds a lone surrogate (JSON's ``"\\ud800"`` decodes to one), or None: such
    a string is not text, no UTF-8 can hold it."""
    if value.isascii():  # constant time in CPython
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _unicode(article_id: str, name: str, value: str) -> None:
    """The model's featurizers would fail on a lone surrogate (for the whole batch)."""
    if (at := lone_surrogate(value)) is not None:
        message = f"article {article_id}: {name} holds a lone surrogate at character {at}"
        raise InvalidArticle(f"{message}, which is not Unicode text", "invalid_article")


def validate_article(article: Article, max_text_bytes: int) -> None:
    """Raise InvalidArticle for what no model could or should tag; its ``reason`` is the Kafka
    dead-letter reason (``empty_text``, ``text_too_long``, else ``invalid_article``)."""
    if utf8_size(article.id, MAX_ID_BYTES) > MAX_ID_BYTES:
        raise InvalidArticle(
            f"article id {quote(article.id)} is over the limit of {MAX_ID_BYTES} bytes", "invalid_article"
        )
    article_id = quote(article.id)
    if not article.text or not article.text.strip():
        raise InvalidArticle(f"article {article_id}: text is empty", "empty_text")
    _field_size(article_id, "text", article.text, max_text_bytes, "text_too_long")
    _field_size(article_id, "title", article.title, MAX_TITLE_BYTES, "invalid_article")
    _field_size(article_id, "target", article.target, MAX_TARGET_BYTES, "invalid_article")
    for name in ("id", "text", "title", "target"):
        _unicode(article_id, name, getattr(article, name))


def check_head_count(count: int) -> None:
    """Raise InvalidRequest for more than MAX_HEADS head names (adapters call it before they
    decode the names: a 14 MiB request can name millions)."""
    if count > MAX_HEADS:
        raise InvalidRequest(f"{count} head names; the limit is {MAX_HEADS}")


def check_options(options: TagOptions, heads: Collection[str] | None) -> None:
    """Raise InvalidRequest for bad options; head names are checked against ``heads`` (the
    model's) when given."""
    if options.top_k < 0:
        raise InvalidRequest("top_k must be >= 0")
    if options.min_score is not None and not 0.0 <= options.min_score <= 1.0:
        raise InvalidRequest("min_score must be between 0 and 1")
    if not options.heads:
        return
    check_head_count(len(options.heads))
    long = next((h for h in options.heads if utf8_size(h, MAX_HEAD_NAME_BYTES) > MAX_HEAD_NAME_BYTES), None)
    if long is not None:
        raise InvalidRequest(f"head name {quote(long)} is over the limit of {MAX_HEAD_NAME_BYTES} bytes")
    if heads is not None:
        unknown = [h for h in options.heads if h not in heads]
        if unknown:
            raise InvalidRequest(
                f"unknown head(s) {', '.join(cut(h, 32) for h in unknown[:5])}; "
                f"the model has {', '.join(sorted(heads))}"
            )
