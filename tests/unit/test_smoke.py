from service.core.tagger import Tagger
from service.core.types import Article, TagOptions
from service.model.artifact import LoadedModel


def test_starter_model_tags_articles(loaded_model: LoadedModel) -> None:
    tagger = Tagger(loaded_model)
    [result] = tagger.tag(
        [Article("a1", "North Korean troops were deployed to the front; dozens were killed in shelling.")],
        TagOptions(explain=True),
    )
    heads = {h.head: h for h in result.heads}
    assert set(heads) == {"topics", "stance"}
    assert "troop_deployment" in [s.label for s in heads["topics"].labels]
    assert len(heads["stance"].labels) == 1
    assert result.model_version == "v1"
