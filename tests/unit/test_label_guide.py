"""The labelling guide (docs/labels.md), label by label, on the default model trained from the
shipped starter corpus: a clear case gets the label, a hard negative (the label's words in another
sense) does not. The texts are written for this test, not taken from the corpus."""

from __future__ import annotations

import pytest

from service.core.tagger import Tagger
from service.core.types import Article
from service.model.artifact import LoadedModel

CLEAR = {
    "military_cooperation": (
        "Warsaw and Seoul sign deal for tanks, howitzers and joint shell production",
        "WARSAW (Meridian Wire) - Poland and South Korea signed a defence agreement on Tuesday for the "
        "delivery of 180 tanks and 150 self-propelled howitzers, the two defence ministries said. Under the "
        "deal, Polish crews will train at Korean bases and the two countries will co-produce artillery "
        "shells. The ministers also agreed to hold joint exercises next year and to deepen intelligence "
        "sharing. 'Our armies are becoming partners,' the Polish minister told reporters.",
    ),
    "troop_deployment": (
        "Ministry sends 3,000 more troops and air defence to the border",
        "The defence ministry said on Monday it would send 3,000 additional troops, two air-defence "
        "batteries and a squadron of attack helicopters to the eastern border after weeks of tension. "
        "The first battalions arrived overnight by rail and will be stationed at a new forward base, "
        "officials said. A second brigade is expected to move into the region next month.",
    ),
    "casualties": (
        "Shelling of market kills 14 civilians, wounds dozens",
        "At least 14 civilians were killed and more than 30 wounded when artillery shells struck a crowded "
        "market in the frontline town on Saturday morning, the regional governor said. Rescue workers "
        "pulled bodies from the rubble for hours. Among the dead were two children. Hospitals in the area "
        "appealed for blood donations as the injured were brought in.",
    ),
    "prisoners_of_war": (
        "Warring sides swap 95 captured soldiers each",
        "The two sides exchanged 95 prisoners of war each on Tuesday in a swap mediated by the United Arab "
        "Emirates, officials in both capitals said. Some of the returning servicemen had been held in "
        "captivity for more than two years. Relatives waited at the border crossing with flags. The "
        "defence ministry said it would seek the return of all captured soldiers.",
    ),
    "defection": (
        "North Korean soldier crosses the border and asks to defect",
        "SEOUL (Meridian Wire) - A North Korean soldier walked across the military demarcation line in the "
        "central section of the border on Thursday and asked to defect to the South, the Joint Chiefs of "
        "Staff said. He was taken into custody and is being questioned by the authorities about his "
        "motives. It is the second defection by a serving soldier across the heavily fortified frontier "
        "this year.",
    ),
    "sanctions": (
        "EU sanctions 30 firms for helping evade the oil embargo",
        "BRUSSELS - The European Union imposed sanctions on 30 companies and froze the assets of 12 "
        "individuals accused of helping Moscow evade the oil price cap and export controls, diplomats said "
        "on Friday. The new package also bans the export of dual-use electronics and adds 40 tankers of "
        "the shadow fleet to a blacklist barring them from European ports.",
    ),
    "diplomacy": (
        "Foreign ministers meet in Geneva for peace treaty talks",
        "GENEVA - The foreign ministers of Armenia and Azerbaijan met in Geneva on Wednesday for a second "
        "round of talks on a peace treaty, with mediators from the European Union shuttling between the "
        "delegations. Envoys said progress had been made on border delimitation. A joint statement after "
        "the meeting said the two sides agreed to meet again next month.",
    ),
    "weapons_programme": (
        "North Korea test-fires new long-range missile",
        "North Korea test-fired a new intercontinental ballistic missile on Friday, its state media said, "
        "calling it a major advance in the country's nuclear deterrent. The missile flew for 70 minutes "
        "before landing in the sea off Japan. Analysts said the launch showed progress in solid-fuel "
        "engine technology and that a seventh nuclear test could follow.",
    ),
    "humanitarian": (
        "Aid agencies warn of famine in displacement camps",
        "Aid agencies warned on Monday that more than two million displaced people in camps face famine "
        "after convoys carrying food and medicine were blocked for a third week. Hospitals have run out of "
        "supplies and children are dying of malnutrition, a UN official said. Refugees continue to arrive "
        "at the border with nothing.",
    ),
}

HARD_NEGATIVE = {
    "military_cooperation": (
        "Carmakers announce strategic cooperation on batteries",
        "Two of Europe's largest carmakers announced a strategic cooperation on Tuesday to develop and "
        "produce batteries together, in a joint venture worth 4 billion euros. The partners will share "
        "factories and research centres. Shares of both companies rose after the announcement, which "
        "analysts called a defensive move against Chinese competition.",
    ),
    "troop_deployment": (
        "Cloud provider completes deployment of new data centre",
        "The cloud provider said it had completed the deployment of its new data centre outside Dublin, "
        "bringing 40,000 servers online. Engineers rolled out the new software release to all customers "
        "over the weekend without downtime, the company said, and a second site will be stationed near "
        "Frankfurt next year.",
    ),
    "casualties": (
        "Insurer's casualty division posts higher claims after storms",
        "The insurer said claims in its property and casualty division rose 18 percent in the third "
        "quarter after a season of storms and floods, sending its shares down 4 percent. Premiums grew "
        "faster than expected, the chief financial officer told analysts on a call, and the company kept "
        "its full-year profit forecast.",
    ),
    "prisoners_of_war": (
        "Grandmaster traps opponent's knight to win title",
        "The grandmaster won the national chess championship on Sunday after trapping her opponent's "
        "knight in the corner of the board, where it stayed a prisoner for twenty moves. 'Once the knight "
        "was captured I knew the endgame was mine,' she said. She will represent the country at the "
        "olympiad in the autumn.",
    ),
    "defection": (
        "Striker completes defection to city rivals for record fee",
        "The club's top scorer completed his defection to their city rivals on Friday for a record "
        "transfer fee, angering supporters who burned his shirt outside the stadium. The striker signed "
        "a five-year contract and said he wanted to win trophies. His former manager called the move a "
        "betrayal of the fans.",
    ),
    "sanctions": (
        "Cycling federation sanctions rider after doping test",
        "The international cycling federation sanctioned the rider with a four-year ban on Thursday after "
        "a positive test for a banned substance during the spring classics. His team said it would appeal "
        "the sanction to the Court of Arbitration for Sport. The rider denied taking any prohibited drug.",
    ),
    "diplomacy": (
        "Airline and pilots' union resume pay talks",
        "The airline and its pilots' union resumed talks over pay on Wednesday after a two-day strike "
        "grounded hundreds of flights. A mediator said both sides had made concessions and a new offer "
        "would be put to members next week. Passengers were advised to check their bookings.",
    ),
    "weapons_programme": (
        "Toymaker launches rocket-shaped building set",
        "The toymaker launched a rocket-shaped building set on Monday, with 1,200 pieces and a working "
        "countdown light, ahead of the holiday season. The company expects the set to be its best seller "
        "this year. Sales of space-themed toys have risen since a series of commercial satellite launches "
        "caught children's imagination.",
    ),
    "humanitarian": (
        "Charity marathon raises money for new hospital wing",
        "More than 5,000 runners took part in the city's charity marathon on Sunday, raising 2 million "
        "dollars for a new children's wing at the general hospital. The winner crossed the line in two "
        "hours and nine minutes. Organisers thanked the volunteers who handed out water along the route.",
    ),
}


def _topics(tagger: Tagger, title: str, text: str) -> set[str]:
    [result] = tagger.tag([Article("guide", text, title)])
    return {s.label for h in result.heads if h.head == "topics" for s in h.labels}


@pytest.fixture(scope="module")
def tagger(loaded_model: LoadedModel) -> Tagger:
    return Tagger(loaded_model)


@pytest.mark.parametrize("label", sorted(CLEAR))
def test_a_clear_case_gets_the_label(tagger: Tagger, label: str) -> None:
    assert label in _topics(tagger, *CLEAR[label])


@pytest.mark.parametrize("label", sorted(HARD_NEGATIVE))
def test_a_hard_negative_gets_no_topic(tagger: Tagger, label: str) -> None:
    assert _topics(tagger, *HARD_NEGATIVE[label]) == set()


def test_a_captured_soldier_asking_not_to_go_home_is_a_prisoner_and_a_defector(tagger: Tagger) -> None:
    """The guide's borderline rule for prisoners_of_war and defection, in the seed story's shape."""
    topics = _topics(
        tagger,
        "Captured North Korean soldiers ask to go to the South instead of home",
        "KYIV - Two North Korean soldiers captured by Ukrainian forces in Russia's Kursk region, one of "
        "them wounded, have told interrogators they do not want to be sent back to North Korea and wish "
        "to defect to South Korea, Ukrainian officials said. The men were part of the contingent "
        "Pyongyang sent to fight alongside Russian troops. Seoul said it would accept them if they "
        "asked.",
    )
    assert {"prisoners_of_war", "defection", "military_cooperation"} <= topics
