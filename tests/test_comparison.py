"""Either-or questions: options, dates, and the temporal choice."""

from __future__ import annotations

import pytest

from reasonrag.policies.comparison import dates, either_or_options, option_mass, temporal_choice

PASSAGES = [
    {
        "title": "Pablo Trapero",
        "sentences": ["Pablo Trapero (born 4 October 1971) is an Argentine film producer."],
    },
    {
        "title": "Aleksander Ford",
        "sentences": ["Aleksander Ford (24 November 1908 – 4 April 1980) was a Polish director."],
    },
    {
        "title": "Jan Rybkowski",
        "sentences": ["Jan Rybkowski (3 February 1912 – 19 December 1987) was a Polish director."],
    },
    {
        "title": "Blind Shaft",
        "sentences": ["Blind Shaft is a 2003 film about a pair of murderous con artists."],
    },
    {
        "title": "The Mask of Fu Manchu",
        "sentences": ["The Mask of Fu Manchu is a 1932 pre-Code adventure film."],
    },
]


@pytest.mark.parametrize(
    ("question", "options"),
    [
        ("Who was born first, Pablo Trapero or Aleksander Ford?", ("Pablo Trapero", "Aleksander Ford")),
        (
            "Which film came out first, Blind Shaft or The Mask Of Fu Manchu?",
            ("Blind Shaft", "The Mask Of Fu Manchu"),
        ),
        ("Are Ferocactus and Silene both types of plant?", None),
        ("What is the capital of France?", None),
    ],
)
def test_options_are_parsed_only_from_either_or_questions(question, options):
    assert either_or_options(question) == options


def test_dates_in_every_common_form_in_text_order():
    got = dates("born 4 October 1971; died May 5, 1980; active from March 1990 to 2001")
    assert [int(d) for d in got] == [1971, 1980, 1990, 2001]
    assert got[0] > 1971.7  # October, not January


@pytest.mark.parametrize(
    ("question", "options", "expected"),
    [
        ("Who was born first, Pablo Trapero or Aleksander Ford?", ("Pablo Trapero", "Aleksander Ford"), 1),
        ("Who is younger, Pablo Trapero or Aleksander Ford?", ("Pablo Trapero", "Aleksander Ford"), 0),
        ("Who died first, Aleksander Ford or Jan Rybkowski?", ("Aleksander Ford", "Jan Rybkowski"), 0),
        (
            "Which film came out first, Blind Shaft or The Mask Of Fu Manchu?",
            ("Blind Shaft", "The Mask Of Fu Manchu"),
            1,
        ),
        ("Who lived longer, Aleksander Ford or Jan Rybkowski?", ("Aleksander Ford", "Jan Rybkowski"), 1),
        # undecidable: no death date for a living person, or no temporal word at all
        ("Who died later, Pablo Trapero or Aleksander Ford?", ("Pablo Trapero", "Aleksander Ford"), None),
        (
            "Which film is Chinese, Blind Shaft or The Mask Of Fu Manchu?",
            ("Blind Shaft", "The Mask Of Fu Manchu"),
            None,
        ),
    ],
)
def test_temporal_choice(question, options, expected):
    assert temporal_choice(question, options, PASSAGES) == expected


def test_option_mass_matches_spans_naming_the_option():
    spans = [("Aleksander Ford", 0.5), ("Ford", 0.2), ("Poland", 0.3)]
    assert option_mass("Aleksander Ford", spans) == pytest.approx(0.7)
    assert option_mass("Pablo Trapero", spans) == 0.0


def test_either_or_questions_may_search_each_option_by_name():
    from reasonrag.policies.embedded import EmbeddedPolicy, EmbeddedPolicyConfig

    evidence = [
        {
            "hop": 0,
            "passage_id": "p",
            "title": "Ava DuVernay",
            "sentence_index": 0,
            "text": "Ava DuVernay is a director.",
        }
    ]
    state = {"question": "Who was born first, Am Rong or Ava DuVernay?", "hop": 1, "evidence": evidence}
    policy = EmbeddedPolicy()  # on by default
    best = policy.propose_queries(state)[0]
    assert best.action["queries"][:2] == ["Am Rong", "Ava DuVernay"]
    assert best.action["queries"][2].startswith(state["question"])  # with the evidence, as other hops
    off = EmbeddedPolicy(policy.reader, EmbeddedPolicyConfig(query_options=0)).propose_queries(state)
    assert all(c.action.get("queries", [])[:1] != ["Am Rong"] for c in off)
    bridge = dict(state, question="Who directed the film that Am Rong starred in?")
    assert all(c.action.get("queries", [])[:1] != ["Am Rong"] for c in policy.propose_queries(bridge))


def test_option_search_can_skip_options_whose_passage_was_found():
    from reasonrag.policies.embedded import EmbeddedPolicy, EmbeddedPolicyConfig

    found = {"id": "p", "title": "Ava DuVernay", "sentences": ["Ava DuVernay is a director."], "hop": 0}
    evidence = [
        {
            "hop": 0,
            "passage_id": "p",
            "title": "Ava DuVernay",
            "sentence_index": 0,
            "text": found["sentences"][0],
        }
    ]
    state = {
        "question": "Who was born first, Am Rong or Ava DuVernay?",
        "hop": 1,
        "evidence": evidence,
        "retrieved": [found],
    }
    policy = EmbeddedPolicy(config=EmbeddedPolicyConfig(query_missing_options=True))
    best = policy.propose_queries(state)[0]
    assert best.action["queries"][0] == "Am Rong"  # only the option still missing
    assert "Ava DuVernay" not in best.action["queries"]
    namesake = {
        "id": "n",
        "title": "Am Rong (footballer)",
        "sentences": ["Am Rong is a footballer."],
        "hop": 0,
    }
    assert (
        policy.propose_queries(dict(state, retrieved=[found, namesake]))[0].action["queries"][0] == "Am Rong"
    )
    other = {"id": "q", "title": "Am Rong", "sentences": ["Am Rong is a Cambodian filmmaker."], "hop": 0}
    both = dict(state, retrieved=[found, other])
    queries = [c.action.get("queries", []) for c in policy.propose_queries(both)]
    assert not any(q[:1] in (["Am Rong"], ["Ava DuVernay"]) for q in queries)  # nothing left to look up
