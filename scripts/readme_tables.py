"""Generate the README's reference tables from the code, so they cannot drift.

    python scripts/readme_tables.py          # rewrite the tables in README.md
    python scripts/readme_tables.py --check  # exit 1 if README.md differs (run by the tests)

Tables live between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.settings import Settings, env_name

README = Path(__file__).resolve().parent.parent / "README.md"


def metrics_table() -> str:
    metrics = vars(Metrics(CollectorRegistry()))
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in sorted((m for m in metrics.values() if hasattr(m, "_name")), key=lambda m: m._name):
        # prometheus_client keeps name, type, labels and help on the metric object itself
        kind = metric._type
        name = metric._name + ("_total" if kind == "counter" else "")
        labels = ", ".join(metric._labelnames) or "-"
        rows.append(f"| `{name}` | {kind} | {labels} | {metric._documentation} |")
    return "\n".join(rows)


def settings_table() -> str:
    rows = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "unset" if default is None else f"`{default}`"
        env = f"`{env_name(name)}`" + (" or `KAFKA_BOOTSTRAP_SERVERS`" if name == "bootstrap_servers" else "")
        rows.append(f"| `--{name.replace('_', '-')}` | {env} | {shown} | {info.description} |")
    return "\n".join(rows)


TABLES = {"metrics": metrics_table, "settings": settings_table}


def render(text: str) -> str:
    for name, build in TABLES.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n)(?:.*?\n)?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- BEGIN {name} --> / <!-- END {name} --> markers")
        text = pattern.sub(lambda m, b=build: m.group(1) + b() + "\n" + m.group(2), text)  # type: ignore[misc]
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="Fail if README.md is out of date.")
    args = parser.parse_args()
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md tables are out of date: run `python scripts/readme_tables.py`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
