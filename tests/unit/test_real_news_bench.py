"""benchmarks/real_news.py: reads FNC-1's bodies in both forms, weights the sample back to its
strata, and says which bodies are missing. (The bodies are not shipped: these texts are stand-ins.)"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_script

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_news() -> ModuleType:
    return load_script(REPO / "benchmarks" / "real_news.py", "real_news_bench")


def labelled() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        (REPO / "benchmarks/real_news/fnc1_bodies_labels.json").read_text()
    )["rows"]
    return rows


def test_labels_are_the_guides_and_the_splits_do_not_overlap() -> None:
    rows = labelled()
    topics = {
        line.split("`")[1]
        for line in (REPO / "docs/labels.md").read_text().splitlines()
        if line.startswith("### `")
    }
    assert len(topics) == 9
    assert all(
        set(r["topics"]) <= topics and r["stance"] in ("supportive", "critical", "neutral") for r in rows
    )
    ids = [str(r["body_id"]) for r in rows]
    assert len(ids) == len(set(ids)) == 600
    assert all((int(i) % 2 == 1) == (r["split"] == "report") for i, r in zip(ids, rows, strict=True))


def test_bodies_from_the_official_csv_or_jsonl(real_news: ModuleType, tmp_path: Path) -> None:
    with (tmp_path / "train_bodies.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Body ID", "articleBody"])
        writer.writerow(["7", 'A body, with "quotes"\nand two lines.'])
    (tmp_path / "bodies.jsonl").write_text(json.dumps({"body_id": 7, "text": "x"}) + "\n", encoding="utf-8")
    assert real_news.read_bodies(tmp_path / "train_bodies.csv") == {
        "7": 'A body, with "quotes"\nand two lines.'
    }
    assert real_news.read_bodies(tmp_path / "bodies.jsonl") == {"7": "x"}


def test_scores_are_weighted_by_stratum_and_missing_bodies_are_named(
    real_news: ModuleType, model_dir: Path
) -> None:
    rows = [r for r in labelled() if r["split"] == "dev"]
    war = "Shelling killed 14 civilians in the market; soldiers were captured and exchanged."
    bodies = {str(r["body_id"]): war if r["topics"] else "The football club won the cup final." for r in rows}
    labelled_rows, population = real_news.labelled("fnc1", "dev")
    result = real_news.score(model_dir, bodies, labelled_rows, population, False)
    assert result["articles"] == len(rows) == 400
    for key, value in result.items():
        assert key in ("articles", "per_label") or 0.0 <= value <= 1.0, key
    # per topic, on the sample: right + missed is how often the labels have it
    gold = Counter(label for r in rows for label in r["topics"])
    assert {label: right + missed for label, (right, _, missed) in result["per_label"].items()} == {
        label: gold[label] for label in result["per_label"]
    }
    # weighting moves the figures toward the larger no-topic stratum
    assert result["weighted_micro_f1"] != result["sample_micro_f1"]
    bodies.pop(str(rows[0]["body_id"]))
    with pytest.raises(SystemExit, match="lack 1 labelled articles"):
        real_news.score(model_dir, bodies, labelled_rows, population, False)


def test_reuters_bbc_labels_are_the_guides_and_stand_for_their_strata(real_news: ModuleType) -> None:
    doc = json.loads((REPO / "benchmarks/real_news/reuters_bbc_labels.json").read_text())
    rows = doc["rows"]
    assert len({(r["source"], r["id"]) for r in rows}) == len(rows)  # no article in both splits
    assert Counter(r["split"] for r in rows) == {"report": 320, "dev": 295}
    sampled = Counter((r["split"], r["source"], r["stratum"]) for r in rows)
    for split, sources in doc["population"].items():
        for source, sizes in sources.items():
            assert source in ("reuters", "bbc") and set(sizes) == {"tagged", "keyword", "other"}
            for stratum, size in sizes.items():
                assert 0 < sampled[split, source, stratum] <= size
    assert all(r["stance"] in ("supportive", "critical", "neutral") and len(r["topics"]) <= 4 for r in rows)
    bbc, population = real_news.labelled("reuters-bbc", "report", "bbc")
    assert {r["key"].split(":")[0] for r in bbc} == {"bbc"} and len(population) == 6
    dev, _ = real_news.labelled("reuters-bbc", "dev")
    assert len(dev) == 295 and {r["split"] for r in dev} == {"dev"}


def test_reuters_bbc_texts_from_the_datasets_layout(
    real_news: ModuleType, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit, match="reuters21578_modapte/train.jsonl"):
        real_news.read_reuters_bbc(tmp_path)
    report, population = real_news.labelled("reuters-bbc", "report")
    rows = report + real_news.labelled("reuters-bbc", "dev")[0]
    war = "Shelling killed 14 civilians in the market; soldiers were captured and exchanged."
    for folder, source, splits in (
        ("reuters21578_modapte", "reuters", ("train", "dev")),
        ("bbc_news", "bbc", ("train", "dev")),
    ):
        (tmp_path / folder).mkdir()
        mine = [r for r in rows if r["source"] == source]
        for i, split in enumerate(splits):
            lines = [
                json.dumps(
                    {"id": r["id"], "text": war if r["topics"] else "Shares closed higher.", "labels": []}
                )
                for r in mine[i :: len(splits)]
            ]
            (tmp_path / folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    texts = real_news.read_reuters_bbc(tmp_path)
    assert len(texts) == len(rows)
    result = real_news.score(model_dir, texts, report, population, False)
    assert result["articles"] == 320
    assert result["weighted_micro_f1"] != result["sample_micro_f1"]


def test_spread_training_sets_are_reproducible_subsets_and_the_summary_counts_gains() -> None:
    spread = load_script(REPO / "benchmarks" / "real_news_spread.py", "real_news_spread_bench")
    lines = [f'{{"id": "{i}"}}\n' for i in range(1000)]
    sets = spread.training_sets(lines, 3, 0.9, 200)
    assert [name for name, _ in sets] == ["all", "subset 1", "subset 2", "subset 3"]
    assert sets[0][1] == lines
    for _, rows in sets[1:]:
        assert set(rows) < set(lines) and 850 < len(rows) < 950
    assert sets[1][1] != sets[2][1]
    assert spread.training_sets(lines, 3, 0.9, 200) == sets  # the same seed, the same subsets
    assert spread.summary([0.5, 0.6]) == "spread of the mean over 2 training sets: 0.500-0.600"
    assert spread.summary([0.5, 0.6, 0.55], [0.52, 0.59, 0.56]).endswith("mean gain +0.0067, up on 2 of 3")
