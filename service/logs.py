"""Logging set-up. Only entry points call ``configure_logging``; modules just ``getLogger(__name__)``.

JSON lines by default (one object per line: time, level, logger, message, plus any context given
with ``extra={...}``: article_id, topic, partition, offset, model_version, ...). Article texts and
secrets are never logged at INFO.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

CONTEXT_FIELDS = ("article_id", "topic", "partition", "offset", "model_version", "method", "code", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{k}={record.__dict__[k]}" for k in CONTEXT_FIELDS if record.__dict__.get(k) is not None
        )
        return f"{line} [{context}]" if context else line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python logs every failed connection attempt (18 lines for one unreachable broker);
    # our worker reports broker trouble itself, once, with the operation and a metric. Its own
    # logs show with --log-level DEBUG.
    kafka_level = logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL
    for noisy in ("kafka", "kafka.conn", "kafka.coordinator", "kafka.consumer", "kafka.producer"):
        logging.getLogger(noisy).setLevel(kafka_level)
