"""Tagger: batches in order, options, errors, and atomic swap under concurrent calls."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from service.core.errors import InvalidArticle, InvalidRequest, ModelNotReady
from service.core.tagger import Tagger
from service.core.types import Article, TagOptions, TagResult
from service.model.artifact import LoadedModel, load_artifact
from tests.conftest import FAST_CONFIG
from tests.helpers import STARTER
from training.config import ClassifierConfig
from training.train import train

ARTICLES = [
    Article("a", "North Korean troops were deployed to the Kursk region; dozens were killed in shelling."),
    Article("b", "The UN Security Council imposed new sanctions over the ballistic missile programme."),
    Article("c", "Prisoners of war were exchanged after talks mediated by the United Arab Emirates."),
    Article("d", "The home side won the cup final after extra time.", title="Cup final"),
    Article("e", "A soldier defected across the border and asked for asylum in the South."),
]


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A second, different model (another C, the starter's dev rows) with version v2."""
    out = tmp_path_factory.mktemp("other") / "v2"
    config = replace(FAST_CONFIG, classifier=ClassifierConfig(C=0.3))
    train([STARTER / "dev.jsonl"], out, config, version="v2")
    return load_artifact(out)


def heads_of(result: TagResult) -> dict[str, list[str]]:
    return {h.head: [s.label for s in h.labels] for h in result.heads}


def test_batch_results_come_back_in_order_and_match_single_calls(loaded_model: LoadedModel) -> None:
    tagger = Tagger(loaded_model)
    batch = tagger.tag(ARTICLES)
    assert [r.article_id for r in batch] == [a.id for a in ARTICLES]
    singles = [tagger.tag([a])[0] for a in ARTICLES]
    for got, want in zip(batch, singles, strict=True):
        assert got.heads == want.heads
        assert (got.model_name, got.model_version) == ("newstagger", "v1")


def test_result_shape_per_head_kind(loaded_model: LoadedModel) -> None:
    [result] = Tagger(loaded_model).tag([ARTICLES[0]])
    topics, stance = (next(h for h in result.heads if h.head == n) for n in ("topics", "stance"))
    spec = loaded_model.manifest.head("topics")
    assert topics.kind == "multi"
    assert [s.score for s in topics.labels] == sorted((s.score for s in topics.labels), reverse=True)
    for s in topics.labels:  # every predicted label is over its own threshold
        assert s.score >= spec.thresholds[spec.labels.index(s.label)]
    assert "troop_deployment" in [s.label for s in topics.labels]
    assert len(topics.scores) == len(spec.labels)
    assert stance.kind == "single" and len(stance.labels) == 1
    assert stance.labels[0] == stance.scores[0]  # the winner is the top of the distribution
    assert sum(s.score for s in stance.scores) == pytest.approx(1.0, abs=1e-4)
    assert {s.label for s in stance.scores} == {"supportive", "critical", "neutral"}


def test_empty_batch_gives_no_results(loaded_model: LoadedModel) -> None:
    assert Tagger(loaded_model).tag([]) == []


def test_heads_option_limits_the_result(loaded_model: LoadedModel) -> None:
    [result] = Tagger(loaded_model).tag([ARTICLES[1]], TagOptions(heads=("stance",)))
    assert [h.head for h in result.heads] == ["stance"]


def test_each_head_comes_once_in_the_models_order(loaded_model: LoadedModel) -> None:
    model_order = [h.name for h in loaded_model.manifest.heads]
    asked = tuple(reversed(model_order)) * 32  # 64 names, each head many times, reversed
    [result] = Tagger(loaded_model).tag([ARTICLES[0]], TagOptions(heads=asked, explain=True))
    assert [h.head for h in result.heads] == model_order
    [plain] = Tagger(loaded_model).tag([ARTICLES[0]], TagOptions(explain=True))
    assert result == plain


def test_per_article_options(loaded_model: LoadedModel) -> None:
    options = [TagOptions(heads=("topics",)), TagOptions(heads=("stance",)), TagOptions()]
    results = Tagger(loaded_model).tag(ARTICLES[:3], options)
    assert [[h.head for h in r.heads] for r in results] == [["topics"], ["stance"], ["topics", "stance"]]
    with pytest.raises(InvalidRequest, match="one TagOptions per article"):
        Tagger(loaded_model).tag(ARTICLES[:3], options[:2])


def test_top_k_caps_labels_and_distribution(loaded_model: LoadedModel) -> None:
    tagger = Tagger(loaded_model)
    [loose] = tagger.tag([ARTICLES[0]], TagOptions(min_score=0.0))
    [capped] = tagger.tag([ARTICLES[0]], TagOptions(min_score=0.0, top_k=2))
    topics_all = next(h for h in loose.heads if h.head == "topics")
    topics = next(h for h in capped.heads if h.head == "topics")
    assert len(topics_all.labels) == len(loaded_model.manifest.head("topics").labels)  # min_score 0: all
    assert topics.labels == topics_all.labels[:2]
    assert len(topics.scores) == 2


def test_min_score_overrides_thresholds_of_multi_label_heads(loaded_model: LoadedModel) -> None:
    tagger = Tagger(loaded_model)
    [result] = tagger.tag([ARTICLES[0]], TagOptions(min_score=0.999999))
    assert heads_of(result)["topics"] == []
    [everything] = tagger.tag([ARTICLES[0]], TagOptions(heads=("topics",), min_score=0.0))
    assert len(everything.heads[0].labels) == len(loaded_model.manifest.head("topics").labels)


@pytest.mark.parametrize("min_score", [None, 0.0, 0.5, 0.999999, 1.0])
def test_a_single_label_head_always_gives_exactly_its_winner(
    loaded_model: LoadedModel, min_score: float
) -> None:
    """One stance label per article, whatever min_score (it cuts multi-label heads only)."""
    tagger = Tagger(loaded_model)
    defaults = tagger.tag(ARTICLES)
    results = tagger.tag(ARTICLES, TagOptions(min_score=min_score, explain=True))
    for result, default in zip(results, defaults, strict=True):
        [stance] = [h for h in result.heads if h.head == "stance"]
        assert stance.kind == "single"
        assert stance.scores[0].score < 1.0  # so a min_score of 1.0 is above the winner
        assert stance.labels == stance.scores[:1]  # exactly one label: the best
        assert heads_of(result)["stance"] == heads_of(default)["stance"]
        assert set(stance.explanations) == {stance.labels[0].label}


def test_explain_gives_terms_for_each_predicted_label(loaded_model: LoadedModel) -> None:
    tagger = Tagger(loaded_model)
    [plain] = tagger.tag([ARTICLES[0]])
    assert all(h.explanations == {} for h in plain.heads)
    [explained] = tagger.tag([ARTICLES[0]], TagOptions(explain=True))
    topics = next(h for h in explained.heads if h.head == "topics")
    assert set(topics.explanations) == {s.label for s in topics.labels}
    terms = topics.explanations["troop_deployment"]
    assert 0 < len(terms) <= 5
    text = ARTICLES[0].text.lower()
    assert all(all(word in text for word in term.split()) for term in terms)  # terms come from the text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (TagOptions(heads=("region",)), "unknown head"),
        (TagOptions(top_k=-1), "top_k"),
        (TagOptions(min_score=1.5), "min_score"),
    ],
)
def test_bad_options_are_invalid_requests(
    loaded_model: LoadedModel, options: TagOptions, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Tagger(loaded_model).tag(ARTICLES[:2], options)


def test_unknown_head_names_the_known_ones(loaded_model: LoadedModel) -> None:
    with pytest.raises(InvalidRequest) as info:
        Tagger(loaded_model).validate(ARTICLES[0], TagOptions(heads=("region",)))
    assert "region" in str(info.value) and "stance" in str(info.value) and "topics" in str(info.value)


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_an_invalid_article(loaded_model: LoadedModel, text: str) -> None:
    tagger = Tagger(loaded_model)
    with pytest.raises(InvalidArticle, match="'x1'.*empty"):
        tagger.validate(Article("x1", text))
    with pytest.raises(InvalidArticle, match="'x1'.*empty"):
        tagger.tag([ARTICLES[0], Article("x1", text)])


def test_over_limit_text_is_an_invalid_article(loaded_model: LoadedModel) -> None:
    tagger = Tagger(loaded_model, max_text_bytes=100)
    assert tagger.tag([Article("ok", "é" * 50)])  # 100 bytes: at the limit
    with pytest.raises(InvalidArticle, match="'big'.*101 bytes.*100"):
        tagger.tag([Article("big", "é" * 50 + "x")])
    with pytest.raises(InvalidArticle, match="over the limit"):
        tagger.validate(Article("big", "x" * 101))


@pytest.mark.parametrize("field", ["id", "text", "title", "target"])
def test_a_lone_surrogate_is_an_invalid_article_not_a_failed_batch(
    loaded_model: LoadedModel, field: str
) -> None:
    """JSON's "\\ud800" decodes to a lone surrogate (`newstagger tag`, Kafka events, the Python
    API): the model's character n-grams could not encode it and the whole batch failed."""
    tagger = Tagger(loaded_model)
    article = replace(Article("s1", "Troops crossed the border."), **{field: "troops \ud800"})
    with pytest.raises(InvalidArticle, match=f"{field} holds a lone surrogate at character 7") as info:
        tagger.tag([ARTICLES[0], article])
    assert info.value.reason == "invalid_article"


def test_no_model_is_not_ready() -> None:
    with pytest.raises(ModelNotReady):
        Tagger().tag(ARTICLES[:1])


def test_swap_returns_the_old_model(loaded_model: LoadedModel, other_model: LoadedModel) -> None:
    tagger = Tagger(loaded_model)
    assert tagger.swap(other_model) is loaded_model
    assert tagger.tag(ARTICLES[:1])[0].model_version == "v2"


def test_swap_under_concurrent_calls(loaded_model: LoadedModel, other_model: LoadedModel) -> None:
    """Many threads tag while another swaps between two models: every call gets a complete
    result from exactly one model version, and none fails."""
    expected = {
        m.manifest.version: [(r.article_id, r.heads) for r in Tagger(m).tag(ARTICLES)]
        for m in (loaded_model, other_model)
    }
    assert expected["v1"] != expected["v2"]  # the two models really disagree
    tagger = Tagger(loaded_model)
    stop = threading.Event()
    failures: list[BaseException] = []
    seen: dict[str, int] = {"v1": 0, "v2": 0}
    swaps = 0
    lock = threading.Lock()

    def caller() -> None:
        try:
            while not stop.is_set():
                results = tagger.tag(ARTICLES)
                versions = {r.model_version for r in results}
                assert len(versions) == 1, f"one call saw versions {versions}"
                version = versions.pop()
                assert [(r.article_id, r.heads) for r in results] == expected[version]
                with lock:
                    seen[version] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            stop.set()

    def swapper() -> None:
        nonlocal swaps
        models = (other_model, loaded_model)
        while not stop.is_set():
            tagger.swap(models[swaps % 2])
            swaps += 1
            time.sleep(0.0005)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    threads.append(threading.Thread(target=swapper))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not stop.is_set():  # long enough to see both, bounded
        with lock:
            if min(seen.values()) >= 20 and sum(seen.values()) >= 100:
                break
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(10)
    assert not failures, failures[0]
    assert swaps >= 2
    assert seen["v1"] > 0 and seen["v2"] > 0, seen


def test_the_model_reads_at_most_max_model_text_chars(loaded_model: LoadedModel) -> None:
    from service.core.tagger import MAX_MODEL_TEXT_CHARS

    head = ARTICLES[3].text + " " * (MAX_MODEL_TEXT_CHARS - len(ARTICLES[3].text))
    tail = " troops sanctions prisoners defected shelling" * 2000  # past the cut: never read
    tagger = Tagger(loaded_model, max_text_bytes=1_000_000)
    long, cut = tagger.tag([Article("long", head + tail), Article("cut", head)])
    assert long.heads == cut.heads
