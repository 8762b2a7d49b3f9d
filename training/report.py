"""The human-readable model card written beside every artifact, and what ``train --tune`` adds beside
it (``config.toml``, the candidates in the card)."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import config_to_toml
from training.evaluate import format_report, headline
from training.search_space import describe

if TYPE_CHECKING:
    from training.tune import TuneResult

STARTER_TRAIN = Path(__file__).parent / "starter" / "train.jsonl"


@cache
def starter_sha256() -> str:
    """The shipped starter set's digest: a model trained on it gets a note on real news."""
    return hashlib.sha256(STARTER_TRAIN.read_bytes()).hexdigest()


def estimate_titles(data: dict[str, Any], metrics: dict[str, Any]) -> dict[str, str]:
    """What each recorded figure was measured on, with its row count: ``cv`` (the
    cross-validated estimate) and ``dev`` (the dev score), for those the model has."""
    titles = {}
    if "cv" in metrics:
        cv = data.get("cv", {})
        folds = f"{cv['folds']}-fold " if "folds" in cv else ""
        grouped = (
            f", grouped by {cv['group_field']!r} ({cv['groups']} groups)" if cv.get("group_field") else ""
        )
        titles["cv"] = (
            f"cross-validated estimate: {folds}out-of-fold scores on {data['train_rows']} training rows"
            f"{grouped} (the cut-offs were tuned on these scores)"
        )
    if "dev" in metrics:
        how = (
            "scored only: never fitted or tuned on"
            if "cv" in metrics
            else "the cut-offs were tuned on these rows: optimistic"
        )
        if data.get("dev_overlap"):
            how = (
                f"WARNING: {data['dev_overlap']} of them are also training rows (same id, or same "
                "title and text), "
                "so this score is not held out and flatters the model"
            )
        titles["dev"] = f"dev score: {data['dev_rows']} dev rows ({how})"
    return titles


def figures(data: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The headline figures of the cross-validated estimate and the dev score, each under what it
    was measured on (what ``newstagger train`` prints)."""
    out = []
    for key, title in estimate_titles(data, metrics).items():
        out.append(title)
        out += ["  " + line for line in headline(metrics[key]).splitlines()]
    return "\n".join(out)


def model_card(fields: dict[str, Any]) -> str:
    """Markdown describing the model: what it tags, from what data, how well (dev metrics).
    ``{version}`` is filled in once the version is known."""
    heads = fields["heads"]
    lines = [
        f"# Model card: {fields['name']} {{version}}",
        "",
        f"Created {fields['created_at']} by newstagger {fields['versions']['newstagger']} "
        f"(scikit-learn {fields['versions']['scikit-learn']}, Python {fields['versions']['python']}).",
        "",
        "## What it tags",
        "",
        "| head | kind | target | labels |",
        "|---|---|---|---|",
    ]
    for h in heads:
        labels = ", ".join(
            f"{label} (≥{t:g})" if h.thresholds else label
            for label, t in zip(h.labels, h.thresholds or (0.0,) * len(h.labels), strict=True)
        )
        lines.append(f"| {h.name} | {h.kind}-label | {h.target or '-'} | {labels} |")
    data = fields["data"]
    lines += [
        "",
        "## Data",
        "",
        f"- training rows: {data['train_rows']}, dev rows: {data['dev_rows']}",
    ]
    for f in data["train"]:
        lines.append(f"- train file `{f['path']}` ({f['rows']} rows, sha256 {f['sha256'][:16]}…)")
    if isinstance(data["dev"], list):
        for f in data["dev"]:
            lines.append(f"- dev file `{f['path']}` ({f['rows']} rows, sha256 {f['sha256'][:16]}…)")
    else:
        lines.append(f"- dev: {data['dev']}")
    if "thresholds" in data:
        lines.append(f"- label cut-offs (the ≥ figures above): {data['thresholds']}")
    metrics = fields["metrics"]
    for key, title in estimate_titles(data, metrics).items():
        report = format_report(metrics[key]).rstrip()
        lines += ["", f"## {title[0].upper()}{title[1:]}", "", "```", report, "```"]
    lines += [
        "",
        f"Training took {fields['metrics']['train_seconds']} s.",
        "",
        "## Training configuration",
        "",
        "```json",
        json.dumps(fields["config"], indent=2),
        "```",
        "",
        "## Limits",
        "",
        "A linear bag-of-n-grams model: it reads words, not meaning. Scores are calibrated only as far as",
        "logistic regression is; thresholds were tuned as stated above and may not transfer to other",
        "sources. Check the per-label rows before trusting a rare label.",
        "",
    ]
    if any(f["sha256"] == starter_sha256() for f in data["train"]):
        lines += [
            "Trained on the project's starter set (`training/starter/`): articles written for the",
            "project, not real news. The figures above are measured on more of them; on real news",
            'labelled blind its topics are much weaker (topic micro-F1 about 0.5: README, "The default',
            'model"). Retrain on labelled articles from your own sources to get figures you can rely on.',
            "",
        ]
    return "\n".join(lines)


CONFIG_FILE = "config.toml"


def record_choice(artifact_dir: Path, result: TuneResult, budget_seconds: float) -> Path:
    """Write the chosen configuration beside the model card as ``config.toml`` and add the search
    to the card."""
    path = Path(artifact_dir) / CONFIG_FILE
    path.write_text(
        config_to_toml(
            result.config,
            f"Chosen by `newstagger train --tune` ({len(result.tried)} candidates, budget "
            f"{budget_seconds:g} s).\nReproduce: newstagger train --config config.toml --data ...",
        ),
        encoding="utf-8",
    )
    card = Path(artifact_dir) / "MODEL_CARD.md"
    if card.is_file():
        with card.open("a", encoding="utf-8") as fh:
            fh.write(
                "\n## Tuning (`newstagger train --tune`)\n\n"
                f"Chosen: {describe(result.config)}. `{CONFIG_FILE}` beside this card reproduces it with "
                "`newstagger train --config config.toml`. Candidates (3-fold cross-validation on the "
                "training rows; mean = the score compared):\n\n```\n" + result.table + "\n```\n"
            )
    return path
