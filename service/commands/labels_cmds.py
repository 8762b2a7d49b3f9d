"""``newstagger labels collect``: labelled events from Kafka into a deduplicated JSONL dataset.

Each event is one training row (``id``, ``text``, optional ``title``/``target``, one field per
head). Delivery is at-least-once and resumable:

1. poll events, validate them, merge them into the dataset in memory (a later event replaces an
   earlier one with the same id — key events by id so one id stays in one partition, in order);
2. every ``--flush-seconds`` (and at the end) write the whole dataset to a temporary file, fsync
   it and rename it over ``--out`` (readers never see half a file);
3. only then commit the consumer group's offsets.

A crash between 2 and 3 re-delivers events already in the file; merging them again gives the
same file. Re-running continues from the committed offsets and merges into the existing file.
Invalid events are counted, the first few reasons shown, and skipped.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.commands.labels_dataset import load_rows, merge, validate_event, write_rows
from service.core.errors import DataError, NewstaggerError
from service.settings import Settings

logger = logging.getLogger(__name__)

KAFKA_FLAGS = (
    "bootstrap_servers",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
)
SHOWN_REASONS = 5
ASSIGN_TIMEOUT_SECONDS = 60.0


def register(sub: Any) -> None:
    from service.cli import RawDescriptionHelpFormatter, add_settings_flags

    labels = sub.add_parser("labels", help="Collect labelled data.", description="Collect labelled data.")
    actions = labels.add_subparsers(dest="action", required=True, metavar="ACTION")
    collect = actions.add_parser(
        "collect",
        help="Consume labelled events from Kafka into a deduplicated JSONL dataset (resumable).",
        description=__doc__,
        formatter_class=RawDescriptionHelpFormatter,
    )
    collect.add_argument("--topic", default="labels", help="Topic of labelled events (default: labels).")
    collect.add_argument("--out", type=Path, required=True, help="JSONL dataset to create or extend.")
    collect.add_argument(
        "--group-id",
        default="newstagger-labels",
        help="Consumer group; its committed offsets are where a re-run resumes (default: newstagger-labels).",
    )
    collect.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="Stop after this long without a new event (0 = never; default 10).",
    )
    collect.add_argument(
        "--max-seconds", type=float, default=0.0, help="Stop after this long in all (0 = no limit)."
    )
    collect.add_argument(
        "--max-events", type=int, default=0, help="Stop after this many events (0 = no limit)."
    )
    collect.add_argument(
        "--flush-seconds",
        type=float,
        default=5.0,
        help="Write the file and commit offsets at least this often (default 5).",
    )
    add_settings_flags(collect, KAFKA_FLAGS, "Kafka")
    collect.set_defaults(handler=_collect)


@dataclass
class CollectStats:
    events: int = 0
    new_ids: int = 0
    updated: int = 0
    invalid: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, where: str, reason: str) -> None:
        self.invalid += 1
        if len(self.reasons) < SHOWN_REASONS:
            self.reasons.append(f"{where}: {reason}")


# --- the command ------------------------------------------------------------------------------


def _kafka_config(settings: Settings) -> dict[str, Any]:
    from service.stream.clients import connection_config

    return connection_config(settings) | {"client_id": "newstagger-labels"}


def _progress(stats: CollectStats, rows: int, started: float, final: bool = False) -> None:
    print(
        f"{'collected' if final else '...'} {stats.events} events in {time.monotonic() - started:.1f}s: "
        f"{stats.new_ids} new ids, {stats.updated} updates, {stats.invalid} invalid; dataset {rows} rows",
        file=sys.stderr,
        flush=True,
    )


def _collect(args: argparse.Namespace) -> int:
    from service.cli import load_settings

    settings = load_settings(args)  # a bad setting is refused before kafka is imported
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    out: Path = args.out
    rows = load_rows(out)
    print(
        f"{out}: {len(rows)} rows already; consuming {args.topic!r} as group {args.group_id!r}",
        file=sys.stderr,
    )
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        consumer = KafkaConsumer(
            args.topic,
            group_id=args.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            **_kafka_config(settings),
        )
    except KafkaError as exc:
        raise NewstaggerError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    stats = CollectStats()
    started = last_event = last_flush = time.monotonic()
    dirty = uncommitted = False
    try:
        while not stop.is_set():
            now = time.monotonic()
            if args.max_seconds and now - started >= args.max_seconds:
                break
            if args.max_events and stats.events >= args.max_events:
                break
            if args.idle_seconds and now - last_event >= args.idle_seconds:
                break
            budget = args.max_events - stats.events if args.max_events else 500
            batch = consumer.poll(timeout_ms=500, max_records=min(500, budget))
            if not consumer.assignment():
                last_event = time.monotonic()  # joining the group is not idleness
                if last_event - started > ASSIGN_TIMEOUT_SECONDS:
                    raise NewstaggerError(
                        f"no partition of {args.topic!r} assigned after {ASSIGN_TIMEOUT_SECONDS:.0f}s "
                        "(does the topic exist? is the broker reachable?)"
                    )
            for tp, records in batch.items():
                for record in records:
                    stats.events += 1
                    uncommitted = True
                    try:
                        row = validate_event(record.value)
                    except DataError as exc:
                        stats.reject(f"{tp.topic}[{tp.partition}]@{record.offset}", str(exc))
                        continue
                    dirty = True
                    if merge(rows, row):
                        stats.new_ids += 1
                    else:
                        stats.updated += 1
            if batch:
                last_event = time.monotonic()
            if uncommitted and time.monotonic() - last_flush >= args.flush_seconds:
                _flush(consumer, out, rows, dirty)
                dirty = uncommitted = False
                last_flush = time.monotonic()
                _progress(stats, len(rows), started)
    except KeyboardInterrupt:
        print("interrupted: saving what was collected", file=sys.stderr)
    try:
        if uncommitted or dirty:
            _flush(consumer, out, rows, dirty)
    finally:
        consumer.close(autocommit=False)
    _progress(stats, len(rows), started, final=True)
    if stats.invalid:
        print(f"skipped {stats.invalid} invalid event(s); the first:", file=sys.stderr)
        for reason in stats.reasons:
            print(f"  {reason}", file=sys.stderr)
    print(f"{out}: {len(rows)} rows ({stats.new_ids} new, {stats.updated} updated); offsets committed")
    return 0


def _flush(consumer: Any, out: Path, rows: dict[str, dict[str, Any]], dirty: bool) -> None:
    """The file first (durably), then the offsets: at-least-once."""
    if dirty:
        write_rows(out, rows)
    consumer.commit()
