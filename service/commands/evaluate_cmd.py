"""CLI command `evaluate`: a model's metrics on labelled data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from service.core.errors import NewstaggerError
from service.settings import MODEL_DIR_HELP, default_model_dir


def register(sub: Any) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="Print per-head metrics of a model on labelled data.",
        description="Score a model on labelled JSONL/CSV data: per head, the headline figures, "
        "per-label precision/recall/F1 and (single-label heads) a confusion matrix. Gold labels the "
        "model does not know are reported and counted as errors.",
    )
    evaluate.add_argument(
        "--model",
        type=Path,
        default=default_model_dir(),
        help=f"Artifact or registry directory. {MODEL_DIR_HELP}",
    )
    evaluate.add_argument(
        "--data", type=Path, nargs="+", required=True, metavar="FILE", help="Labelled data."
    )
    evaluate.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="Also write the metrics as JSON."
    )
    evaluate.add_argument("--quiet", action="store_true", help="No progress on stderr.")
    evaluate.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    if args.json is not None and not args.json.parent.is_dir():  # refused now, not after the scoring
        raise NewstaggerError(f"--json {args.json}: no directory {args.json.parent} to write it in")
    from service.model.locate import load_model
    from training.config import HeadConfig, load_config
    from training.data import label_fields, load_dataset, read_data
    from training.evaluate import evaluate_model, format_report
    from training.progress import Progress
    from training.report import figures

    loaded = load_model(args.model)
    raw = read_data(args.data)  # read once: the heads present, then the rows
    present = label_fields(raw)
    heads = {
        h.name: HeadConfig(kind=h.kind, target=h.target) for h in loaded.manifest.heads if h.name in present
    }
    if not heads:
        names = ", ".join(h.name for h in loaded.manifest.heads)
        raise NewstaggerError(f"the data has none of the model's heads ({names}) to evaluate")
    progress = Progress.to_stderr(total=1, quiet=args.quiet)
    progress.advance(0, f"loading {' '.join(map(str, args.data))}")
    data = load_dataset(raw, load_config(None), heads=heads)
    progress.add_total(len(data.rows) - 1)  # a unit per row
    progress.advance(0, f"scoring {len(data.rows)} rows")
    metrics = evaluate_model(loaded, data, on_batch=lambda rows: progress.advance(rows))
    progress.finish(f"scored {len(data.rows)} rows")
    if args.json:  # first: a reader closing stdout early (`| head`) must not cost the file
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
    manifest = loaded.manifest
    files = " ".join(map(str, args.data))
    print(f"model {manifest.name} {manifest.version} on {len(data.rows)} rows of {files}")
    print(format_report(metrics))
    recorded = figures(manifest.data, manifest.metrics)
    if recorded:
        print("recorded when the model was trained, for comparison:")
        print(recorded)
    return 0
