"""PRM-guided step search (critic, beam) and score-weighted voting, on the real graph with known judges."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from reasonrag import InputError, build_agent, run_agent
from reasonrag.agent.best_of_n import select_sample
from reasonrag.agent.nodes import BacktrackConfig
from reasonrag.data.corpus import Corpus
from reasonrag.policies.embedded import EmbeddedPolicy, EmbeddedPolicyConfig
from reasonrag.retrieval.retriever import DenseRetriever

DATA = Path(__file__).parent / "data"
Q = "Who wrote the novel The Quiet Orchard?"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.mktemp("cache")))
    # min_hops forces a second hop here: the searches below need more than one answer step to choose in
    policy = EmbeddedPolicy(config=EmbeddedPolicyConfig(early_answer=0.0))
    yield DenseRetriever(Corpus.load(str(DATA / "tiny_corpus.jsonl"))), policy
    mp.undo()


@pytest.fixture(scope="module")
def greedy(parts):
    retriever, policy = parts
    return run_agent(build_agent(retriever=retriever, policy=policy, max_hops=2, k=3), Q, max_hops=2)


def prefers(answer: str):
    """A judge that trusts one answer and doubts every other one."""

    def judge(state: dict, step: dict) -> float:
        if step["stage"] != "synthesize" or step["observation"] == "another hop":
            return 0.8
        return 0.95 if step["observation"] == answer else 0.05

    return judge


def _answer_step_candidates(state: dict) -> list[str]:
    return [c["text"] for s in state["steps"] if s["stage"] == "synthesize" for c in s["candidates"]]


def test_the_critic_executes_the_best_candidates_and_keeps_the_one_the_prm_prefers(parts, greedy):
    retriever, policy = parts
    others = [t for t in _answer_step_candidates(greedy) if t != greedy["answer"] and not t.startswith("(")]
    assert others, "the tiny corpus gives the answer step alternatives"
    wanted = others[0]
    graph = build_agent(retriever=retriever, policy=policy, max_hops=2, k=3, scorer=prefers(wanted), critic=8)
    state = run_agent(graph, Q, max_hops=2)
    assert state["answer"] == wanted != greedy["answer"]
    last = state["steps"][-1]
    assert last["score"] == pytest.approx(0.95)
    assert len(last["critic"]) > 1 and {c["text"] for c in last["critic"]} >= {wanted, greedy["answer"]}
    assert max(last["critic"], key=lambda c: c["score"])["text"] == wanted  # the pruned ones stay visible


def test_critic_choices_stream_and_checkpoint(parts):
    retriever, policy = parts
    graph = build_agent(
        retriever=retriever,
        policy=policy,
        max_hops=2,
        k=3,
        scorer=lambda s, st: 0.7,
        critic=3,
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "critic"}, "recursion_limit": 100}
    chunks = list(graph.stream({"question": Q, "max_hops": 2}, config, stream_mode="custom"))
    streamed = [c["step"] for c in chunks if "step" in c]
    saved = graph.get_state(config).values["steps"]
    assert [s.get("critic") for s in streamed] == [s.get("critic") for s in saved]
    assert any(s.get("critic") for s in saved)


def test_critic_composes_with_backtracking(parts, greedy):
    retriever, policy = parts
    bad = greedy["answer"]
    # every answer is weak, so a backtrack fires; the critic's scores order what is tried next
    judge = lambda state, step: 0.1 if step["stage"] == "synthesize" and step["observation"] == bad else 0.6  # noqa: E731
    graph = build_agent(
        retriever=retriever,
        policy=policy,
        max_hops=2,
        k=3,
        scorer=judge,
        critic=4,
        backtrack=BacktrackConfig(threshold=0.5),
    )
    state = run_agent(graph, Q, max_hops=2)
    assert state["answer"] != bad
    assert all(s["score"] >= 0.5 for s in state["steps"])


def test_beam_keeps_the_best_path_and_records_what_it_pruned(parts, greedy):
    retriever, policy = parts
    # the runner-up answer of greedy's last step: beam width 2 expands it
    top2 = [c["text"] for c in greedy["steps"][-1]["candidates"][:2]]
    wanted = next(t for t in top2 if t != greedy["answer"])
    graph = build_agent(retriever=retriever, policy=policy, max_hops=2, k=3, scorer=prefers(wanted), beam=2)
    state = run_agent(graph, Q, max_hops=2)
    assert state["answer"] == wanted
    assert state["path_score"] == pytest.approx(min(s["score"] for s in state["steps"]))
    beam = state["beam"]
    assert beam["width"] == 2 and beam["finished"][0]["answer"] == wanted
    assert beam["pruned"] and state["prm_calls"] >= len(state["steps"])
    kept = [e["kept"] for e in state["trace"] if e["event"] == "beam"]
    assert {"beam", "finished", "pruned"} <= set(kept)


def test_search_needs_step_scores_and_bounds(parts):
    retriever, policy = parts
    with pytest.raises(InputError, match="step scores"):
        build_agent(retriever=retriever, policy=policy, critic=4)
    with pytest.raises(InputError, match="step scores"):
        build_agent(retriever=retriever, policy=policy, beam=2)
    with pytest.raises(InputError, match="one of them"):
        build_agent(retriever=retriever, policy=policy, scorer=lambda s, st: 0.5, beam=2, best_of=4)


def test_weighted_vote_lets_a_few_strong_paths_beat_many_weak_ones():
    samples = [
        {"answer": "Paris", "min": 0.1, "scores": [0.1]},
        {"answer": "Paris", "min": 0.1, "scores": [0.1]},
        {"answer": "Lyon", "min": 0.9, "scores": [0.9]},
    ]
    assert select_sample(samples, "vote") == 0
    assert samples[select_sample(samples, "weighted")]["answer"] == "Lyon"
    samples[2]["min"] = 0.15  # one path only a little stronger than each of the two: the two win
    assert samples[select_sample(samples, "weighted")]["answer"] == "Paris"


def test_answer_now_or_hop_again_is_a_scored_step_the_critic_decides(parts):
    retriever, policy = parts
    # the policy would hop again (min_hops 2); a judge that finds the evidence sufficient stops at hop 1
    sufficient = lambda state, step: 0.1 if step["observation"] == "another hop" else 0.8  # noqa: E731
    graph = build_agent(retriever=retriever, policy=policy, max_hops=3, k=3, scorer=sufficient, critic=4)
    state = run_agent(graph, Q, max_hops=3)
    assert sum(s["stage"] == "retrieve" for s in state["steps"]) == 1 and state["status"] == "answered"
    decision = state["steps"][2]["critic"]
    assert any(c["text"] == "(another hop)" and c["score"] == 0.1 for c in decision)


def test_scored_stopping_answers_at_the_first_hop_when_the_prm_trusts_the_answer(parts):
    retriever, policy = parts
    # the policy alone hops again (min_hops 2); the PRM finds the first hop's answer good enough
    trusting = lambda state, step: 0.9  # noqa: E731
    graph = build_agent(
        retriever=retriever, policy=policy, max_hops=3, k=3, scorer=trusting, stop_threshold=0.5
    )
    state = run_agent(graph, Q, max_hops=3)
    assert [s["stage"] for s in state["steps"]] == ["retrieve", "extract", "synthesize"]
    assert state["status"] == "answered" and state["answer"] == state["steps"][-1]["observation"]
    assert state["steps"][-1]["stop"]["best_answer_score"] == pytest.approx(0.9)


def test_scored_stopping_hops_again_while_the_best_answer_scores_low(parts, greedy):
    retriever, policy = parts
    doubtful = lambda state, step: 0.3  # noqa: E731
    graph = build_agent(
        retriever=retriever, policy=policy, max_hops=3, k=3, scorer=doubtful, stop_threshold=0.5
    )
    state = run_agent(graph, Q, max_hops=3)
    # every answer step before the last hops again; the last hop must answer
    synth = [s for s in state["steps"] if s["stage"] == "synthesize"]
    assert [s["observation"] for s in synth[:-1]] == ["another hop"] * (len(synth) - 1)
    assert len(synth) == 3 and state["status"] in ("answered", "insufficient")
    assert all(s["stop"]["threshold"] == 0.5 for s in synth[:-1])


def test_scored_stopping_with_the_critic_answers_with_the_best_scored_answer(parts, greedy):
    retriever, policy = parts
    others = [t for t in _answer_step_candidates(greedy) if t != greedy["answer"] and not t.startswith("(")]
    wanted = others[0]
    graph = build_agent(
        retriever=retriever,
        policy=policy,
        max_hops=3,
        k=3,
        scorer=prefers(wanted),
        critic=8,
        stop_threshold=0.9,
    )
    state = run_agent(graph, Q, max_hops=3)
    assert state["answer"] == wanted
    assert {c["text"] for c in state["steps"][-1]["critic"]} >= {wanted}
    with pytest.raises(InputError, match="stop threshold"):
        build_agent(retriever=retriever, policy=policy, scorer=prefers(wanted), stop_threshold=1.5)


def test_a_single_hop_question_answered_confidently_at_hop_1_stops_there_by_default(parts):
    retriever, _ = parts
    default = EmbeddedPolicy()
    assert default.config.early_answer > 0, "answering at hop 1 is the default"
    state = run_agent(build_agent(retriever=retriever, policy=default, max_hops=3, k=3), Q, max_hops=3)
    assert [s["stage"] for s in state["steps"]] == ["retrieve", "extract", "synthesize"]
    assert state["status"] == "answered" and "Tomas Varga" in state["answer"]
    # off, min_hops forces a second hop whatever the reader thinks
    forced = EmbeddedPolicy(config=EmbeddedPolicyConfig(early_answer=0.0))
    state = run_agent(build_agent(retriever=retriever, policy=forced, max_hops=3, k=3), Q, max_hops=3)
    assert state["steps"][2]["observation"] == "another hop"
