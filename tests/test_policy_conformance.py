"""One suite every policy must pass: the contract the agent, backtracking and trainers rely on."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from reasonrag.data.corpus import Corpus
from reasonrag.data.types import STAGES
from reasonrag.policies.base import Candidate, Policy, choose, normalise

DATA = Path(__file__).parent / "data"


def _embedded():
    from reasonrag.policies.embedded import EmbeddedPolicy

    return EmbeddedPolicy()


def _chat():
    from llm_fakes import ScriptedChatModel, varied_agent

    from reasonrag.policies.chat_model import ChatPolicy, ChatPolicyConfig

    return ChatPolicy(ScriptedChatModel(respond=varied_agent), ChatPolicyConfig(n_candidates=3))


POLICIES = {"embedded": _embedded, "chat": _chat}


@pytest.fixture(scope="module", params=sorted(POLICIES))
def policy(request) -> Policy:
    return POLICIES[request.param]()


def _passage(corpus: Corpus, pid: str, hop: int = 0) -> dict:
    p = corpus.by_id(pid)
    return {"id": p.id, "title": p.title, "sentences": list(p.sentences), "score": 0.5, "hop": hop}


@pytest.fixture(scope="module")
def states() -> dict[str, dict]:
    corpus = Corpus.load(str(DATA / "tiny_corpus.jsonl"))
    q = "Where was the director of the film Harbor Lights born?"
    first = {"question": q, "hop": 0, "max_hops": 3, "retrieved": [], "evidence": [], "seen": []}
    after_retrieve = dict(
        first, retrieved=[_passage(corpus, "Harbor Lights (film)"), _passage(corpus, "Lisbon")]
    )
    evidence = [
        {
            "passage_id": "Harbor Lights (film)",
            "title": "Harbor Lights (film)",
            "sentence_index": 0,
            "text": corpus.by_id("Harbor Lights (film)").sentences[0],
            "score": 0.9,
            "hop": 0,
        }
    ]
    second_hop = dict(after_retrieve, hop=1, evidence=evidence)
    last_hop = dict(second_hop, hop=2)
    return {
        "retrieve-first": first,
        "extract": after_retrieve,
        "synthesize": second_hop,
        "retrieve-later": second_hop,
        "synthesize-last": last_hop,
    }


CASES = [
    ("retrieve", "retrieve-first"),
    ("retrieve", "retrieve-later"),
    ("extract", "extract"),
    ("synthesize", "synthesize"),
    ("synthesize", "synthesize-last"),
]


@pytest.mark.parametrize(("stage", "state_name"), CASES)
def test_candidates_are_a_distribution_over_json_actions(policy, states, stage, state_name):
    cands = policy.propose(stage, states[state_name])
    assert cands, "a policy always proposes at least one action"
    assert all(isinstance(c, Candidate) and c.stage == stage for c in cands)
    assert math.isclose(sum(c.prob for c in cands), 1.0, rel_tol=1e-6)
    assert [c.prob for c in cands] == sorted((c.prob for c in cands), reverse=True)
    assert len({c.text for c in cands}) == len(cands), "no duplicate actions"
    for c in cands:
        json.dumps(c.action)  # plain JSON: it goes into graph state and checkpoints
        assert math.isfinite(c.logprob) and c.logprob <= 0


def test_first_hop_asks_the_question(policy, states):
    top = policy.propose("retrieve", states["retrieve-first"])[0]
    assert states["retrieve-first"]["question"] in top.text


def test_extract_keeps_sentences_of_retrieved_passages(policy, states):
    state = states["extract"]
    ids = {p["id"] for p in state["retrieved"]}
    for c in policy.propose("extract", state):
        for s in c.action["sentences"]:
            assert s["passage_id"] in ids
            passage = next(p for p in state["retrieved"] if p["id"] == s["passage_id"])
            assert passage["sentences"][s["sentence_index"]] == s["text"]


def test_synthesize_may_continue_only_before_the_last_hop(policy, states):
    types_before = {c.action.get("type") for c in policy.propose("synthesize", states["synthesize"])}
    assert "answer" in types_before
    # the agent removes "continue" at the last hop; the policy must still offer a final answer then
    last = policy.propose("synthesize", states["synthesize-last"])
    assert any(c.action.get("type") in ("answer", "insufficient") for c in last)


def test_unknown_stage_is_an_error(policy, states):
    with pytest.raises(ValueError):
        policy.propose("plan", states["extract"])


def test_stages_are_the_three_of_the_design():
    assert STAGES == ("retrieve", "extract", "synthesize")


def test_normalise_merges_duplicates_and_sorts():
    out = normalise(
        [Candidate("s", "a", {}, 1.0), Candidate("s", "b", {}, 1.0), Candidate("s", "a", {}, 1.0)]
    )
    assert [(c.text, round(c.prob, 3)) for c in out] == [("a", 0.667), ("b", 0.333)]


def test_choose_greedy_and_sampled():
    cands = normalise([Candidate("s", "a", {}, 0.7), Candidate("s", "b", {}, 0.3)])
    assert choose(cands, "greedy") == 0
    rng = random.Random(0)
    picks = [choose(cands, "sample", rng) for _ in range(2000)]
    assert 0.65 < picks.count(0) / len(picks) < 0.75
    with pytest.raises(ValueError):
        choose(cands, "beam")


def test_embedded_reading_cache_never_loses_a_reading_it_returns(states):
    from reasonrag.policies.embedded import EmbeddedPolicy
    from reasonrag.policies.reader import Chunk

    policy = EmbeddedPolicy(cache_size=2)
    contexts = [[Chunk(f"T{i}", (f"Sentence number {i}.",), f"p{i}")] for i in range(4)]
    first = policy.read("Which one?", contexts[:2])
    again = policy.read("Which one?", contexts)  # two hits, two misses, a cache of two
    assert again[:2] == first and len(again) == 4
    assert policy.reads == 4
