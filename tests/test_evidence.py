"""Which sentences the extract step keeps: passages the question or the evidence points to come first."""

from __future__ import annotations

import pytest

from reasonrag.policies.embedded import EmbeddedPolicy, EmbeddedPolicyConfig, linked_passages
from reasonrag.policies.reader import Reader

QUESTION = "Where was the director of the film Highway Dragnet born?"
EVIDENCE = [
    {
        "passage_id": "hd",
        "title": "Highway Dragnet",
        "sentence_index": 0,
        "text": "Highway Dragnet is a 1954 film noir directed by Nathan Juran.",
        "hop": 0,
        "score": 0.9,
    }
]
RETRIEVED = [
    {
        "id": "hd",
        "title": "Highway Dragnet",
        "hop": 0,
        "sentences": ["Highway Dragnet is a 1954 film noir directed by Nathan Juran."],
    },
    {
        "id": "nj",
        "title": "Nathan Juran (director)",
        "hop": 1,
        "sentences": [
            "Nathan Juran was an art director and film director.",
            "He was born in Gura Humorului.",
        ],
    },
    {
        "id": "eu",
        "title": "Edgar Ulmer",
        "hop": 1,
        "sentences": ["Edgar Ulmer was a film director.", "He was born in Olomouc."],
    },
]
STATE = {"question": QUESTION, "evidence": EVIDENCE, "retrieved": RETRIEVED, "hop": 1, "max_hops": 3}


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader()


def test_linked_passages_are_those_the_question_or_the_evidence_names_or_kept():
    assert linked_passages(STATE) == {"hd", "nj"}  # "(director)" is disambiguation, not part of the name
    assert linked_passages({**STATE, "evidence": []}) == {"hd"}


def test_a_strangers_sentence_scores_less_and_the_bridge_passage_is_kept(reader):
    def scores(link: float) -> dict[tuple[str, int], float]:
        policy = EmbeddedPolicy(reader, EmbeddedPolicyConfig(title_link=link))
        return {(p["id"], si): s for s, p, si in policy.score_sentences(STATE)}

    off, on = scores(0.0), scores(0.5)
    assert on[("eu", 1)] == pytest.approx(0.5 * off[("eu", 1)])
    assert on[("nj", 1)] == pytest.approx(off[("nj", 1)])
    # both "He was born in ..." read as the answer (about 0.99 each); only the director's own is kept
    policy = EmbeddedPolicy(reader, EmbeddedPolicyConfig(title_link=0.5))
    kept = policy.propose_evidence(STATE)[0].action["sentences"]
    assert [(k["passage_id"], k["sentence_index"]) for k in kept] == [("nj", 1)]
