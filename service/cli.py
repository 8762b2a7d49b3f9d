"""``newstagger`` command line: the composition root. Parses arguments, loads Settings once,
wires objects and hands them to the command. Runtime flags are generated from
``service.settings.Settings`` so each has an environment variable and a documented default."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic import SecretStr, ValidationError

from service.core.errors import NewstaggerError
from service.settings import Settings, env_name

# Settings each runtime command exposes as flags.
MODEL_FLAGS = ("model_dir", "reload_interval_seconds")
# a request's and a Kafka record's bounds: the stream worker reads both too
INPUT_FLAGS = ("max_text_bytes", "max_request_articles")
BATCH_FLAGS = ("max_batch_size", "max_wait_ms", "queue_size", "max_queue_seconds")
GRPC_FLAGS = (
    "host",
    "port",
    "workers",
    "grace_seconds",
    "max_streams",
    "stream_idle_seconds",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
)
HTTP_FLAGS = ("http_port", "http_max_body_bytes")
METRICS_FLAGS = ("metrics_host", "metrics_port")
KAFKA_FLAGS = tuple(
    name
    for name in Settings.model_fields
    if name.startswith("kafka_")
    or name
    in (
        "bootstrap_servers",
        "input_topic",
        "output_topic",
        "dlq_topic",
        "group_id",
        "create_topics",
        "topic_partitions",
        "topic_replication",
        "poll_max_records",
        "max_in_flight_records",
        "passthrough_fields",
        "output_compression",
        "stream_retry_seconds",
        "session_timeout_ms",
        "heartbeat_interval_ms",
        "metadata_max_age_ms",
    )
)
LOG_FLAGS = ("log_level", "log_format")


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default once: appended only when the help does not already say it and
    there is one to show; drops the reST double backticks docstrings use."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or not action.option_strings
            or default in (None, False, argparse.SUPPRESS)
            or (isinstance(default, tuple | list) and not default)
        ):
            return text
        return text + " (default: %(default)s)"

    def format_help(self) -> str:
        return super().format_help().replace("``", "")


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter that keeps the description's own line breaks."""


class Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: our help formatter, and usage errors in one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_flags(parser: argparse.ArgumentParser, names: Sequence[str], title: str) -> None:
    """One flag per Settings field; only flags given on the command line override env/defaults."""
    group = parser.add_argument_group(title)
    for name in names:
        info = Settings.model_fields[name]
        default = info.default
        shown = "unset" if default is None else ("***" if isinstance(default, SecretStr) else default)
        env = env_name(name) + (" or KAFKA_BOOTSTRAP_SERVERS" if name == "bootstrap_servers" else "")
        help_text = f"{info.description} [env {env}; default {shown}]".replace("%", "%%")
        choices = _choices(info.annotation)
        if info.annotation is bool:
            group.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                _flag(name),
                dest=name,
                default=argparse.SUPPRESS,
                help=help_text,
                choices=choices,
                metavar="{" + ",".join(choices) + "}" if choices else name.upper(),
            )


def _choices(annotation: Any) -> tuple[str, ...] | None:
    """A Literal setting's values (also of an optional one: ``Literal[...] | None``)."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    literal = [a for a in get_args(annotation) if get_origin(a) is Literal]
    return get_args(literal[0]) if literal else None


def load_settings(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{_source(e['loc'], given)}: {_message(e)}" for e in exc.errors())
        raise NewstaggerError(f"invalid settings: {problems}") from None


def _message(error: Any) -> str:
    """pydantic's message, without the "Value error, " it puts before a validator's own."""
    ctx = error.get("ctx") or {}
    return str(ctx["error"]) if error["type"] == "value_error" and "error" in ctx else str(error["msg"])


def _source(loc: tuple[int | str, ...], given: dict[str, Any]) -> str:
    """Where a bad setting came from: its flag if given on the command line, else its variable."""
    if not loc:
        return "settings"
    name = str(loc[0])
    if name in given:
        return _flag(name)
    for field_name, field in Settings.model_fields.items():
        # its variables, in priority order (bootstrap_servers: also KAFKA_BOOTSTRAP_SERVERS)
        aliases = [str(a) for a in getattr(field.validation_alias, "choices", ())]
        if name == field_name or name in aliases:
            return next((a for a in aliases if a in os.environ), env_name(field_name))
    return name


def _runtime_parser(sub: Any, name: str, help_text: str, groups: Sequence[tuple[str, Sequence[str]]]) -> Any:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    for title, names in groups:
        add_settings_flags(parser, names, title)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from service.commands import demo, evaluate_cmd, labels_cmds, models_cmds, tag_cmd, train_cmds

    parser = Parser(
        prog="newstagger",
        description="Tag news articles with topics and stance: train models, serve them over gRPC, "
        "tag Kafka streams. Run `newstagger COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cmds.register(sub)
    evaluate_cmd.register(sub)
    tag_cmd.register(sub)
    models_cmds.register(sub)
    labels_cmds.register(sub)
    demo.register(sub)
    serve = _runtime_parser(
        sub,
        "serve",
        "Serve the gRPC API, the HTTP API (with --http-port) and the metrics endpoint.",
        [
            ("model", (*MODEL_FLAGS, "admin_token")),
            ("input limits", INPUT_FLAGS),
            ("gRPC server", GRPC_FLAGS),
            ("HTTP API (REST/JSON, Open Inference Protocol)", HTTP_FLAGS),
            ("batching", BATCH_FLAGS),
            ("metrics", METRICS_FLAGS),
            ("logging", LOG_FLAGS),
            ("Kafka (with --with-stream)", KAFKA_FLAGS),
        ],
    )
    serve.add_argument(
        "--with-stream",
        action="store_true",
        help="Also run the Kafka stream worker in this process (small deployments).",
    )
    serve.set_defaults(handler=_serve)
    stream = _runtime_parser(
        sub,
        "stream",
        "Consume article events from Kafka, tag them, publish results.",
        [
            ("model", MODEL_FLAGS),
            ("input limits", INPUT_FLAGS),
            ("Kafka", KAFKA_FLAGS),
            ("batching", BATCH_FLAGS),
            ("metrics", METRICS_FLAGS),
            ("logging", LOG_FLAGS),
        ],
    )
    stream.add_argument(
        "--grace-seconds",
        dest="grace_seconds",
        default=argparse.SUPPRESS,
        help=f"{Settings.model_fields['grace_seconds'].description} "
        f"[env {env_name('grace_seconds')}; default {Settings.model_fields['grace_seconds'].default}]",
    )
    stream.set_defaults(handler=_stream)
    return parser


def _version() -> str:
    import service

    return f"newstagger {service.__version__}"


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)  # a bad setting is refused before grpc, kafka and the model load
    from service.grpc_api.main import run_serve
    from service.stream.main import StreamService

    return run_serve(settings, sidecar=StreamService if args.with_stream else None)


def _stream(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    from service.stream.main import run_stream

    return run_stream(settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except NewstaggerError as exc:
        print(f"newstagger {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the environment, not a bug: a file, a directory or a port
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"newstagger {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
