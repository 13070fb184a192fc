"""Min-step backtracking and best-of-N on the real graph, with scorers whose judgement is known."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from reasonrag import InputError, build_agent, run_agent
from reasonrag.agent.best_of_n import select_sample, selection_scores
from reasonrag.agent.nodes import BacktrackConfig
from reasonrag.data.corpus import Corpus
from reasonrag.policies.embedded import EmbeddedPolicy
from reasonrag.retrieval.retriever import DenseRetriever

DATA = Path(__file__).parent / "data"
Q = "Who wrote the novel The Quiet Orchard?"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.mktemp("cache")))
    corpus = Corpus.load(str(DATA / "tiny_corpus.jsonl"))
    yield DenseRetriever(corpus), EmbeddedPolicy()
    mp.undo()


@pytest.fixture(scope="module")
def greedy(parts):
    retriever, policy = parts
    return run_agent(build_agent(retriever=retriever, policy=policy, max_hops=2, k=3), Q, max_hops=2)


def distrust(answer: str):
    """A scorer that finds one answer wrong and everything else fine."""
    return lambda state, step: 0.1 if step["stage"] == "synthesize" and step["observation"] == answer else 0.9


def test_a_low_scored_answer_is_abandoned_for_the_next_best(parts, greedy):
    retriever, policy = parts
    bad = greedy["answer"]
    graph = build_agent(
        retriever=retriever, policy=policy, max_hops=2, k=3, scorer=distrust(bad), backtrack=True
    )
    state = run_agent(graph, Q, max_hops=2)
    assert state["answer"] != bad and state["backtracks"] == 1
    assert all(s["observation"] != bad for s in state["steps"])  # the path no longer holds it
    (gone,) = state["abandoned"]
    assert gone["steps"][-1]["observation"] == bad and "fell below 0.20" in gone["reason"]
    events = [e["event"] for e in state["trace"]]
    assert events.count("backtrack") == 1 and events.count("step") == len(state["steps"]) + 1
    assert all(s["score"] >= 0.5 for s in state["steps"])


def test_backtracking_without_synthesize_goes_back_for_other_evidence(parts, greedy):
    retriever, policy = parts
    bad = greedy["answer"]
    config = BacktrackConfig(stages=("retrieve", "extract"))
    graph = build_agent(
        retriever=retriever, policy=policy, max_hops=2, k=3, scorer=distrust(bad), backtrack=config
    )
    state = run_agent(graph, Q, max_hops=2)
    backtracks = [e for e in state["trace"] if e.get("event") == "backtrack"]
    assert backtracks and all(e["stage"] in ("retrieve", "extract") for e in backtracks)
    with pytest.raises(InputError, match="backtrack stages"):
        BacktrackConfig(stages=("search",))


def test_backtracking_is_bounded_and_keeps_the_best_ending(parts):
    retriever, policy = parts
    config = BacktrackConfig(threshold=0.5, max_backtracks=2)
    graph = build_agent(
        retriever=retriever, policy=policy, max_hops=2, k=3, scorer=lambda s, st: 0.2, backtrack=config
    )
    state = run_agent(graph, Q, max_hops=2)
    assert state["backtracks"] == 2
    assert state["status"] in ("answered", "insufficient") and state["answer"]


def test_scores_above_threshold_never_backtrack(parts, greedy):
    retriever, policy = parts
    graph = build_agent(
        retriever=retriever, policy=policy, max_hops=2, k=3, scorer=lambda s, st: 0.9, backtrack=True
    )
    state = run_agent(graph, Q, max_hops=2)
    assert state["backtracks"] == 0 and state["answer"] == greedy["answer"]
    assert [s["action"] for s in state["steps"]] == [s["action"] for s in greedy["steps"]]


def test_backtracking_needs_scores(parts):
    retriever, policy = parts
    with pytest.raises(InputError, match="step scores"):
        build_agent(retriever=retriever, policy=policy, backtrack=True)


def test_checkpoints_keep_the_abandoned_branch(parts, greedy):
    retriever, policy = parts
    graph = build_agent(
        retriever=retriever,
        policy=policy,
        max_hops=2,
        k=3,
        scorer=distrust(greedy["answer"]),
        backtrack=True,
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "t1"}, "recursion_limit": 60}
    graph.invoke({"question": Q, "max_hops": 2}, config)
    saved = graph.get_state(config).values
    assert saved["backtracks"] == 1 and saved["abandoned"][0]["steps"][-1]["observation"] == greedy["answer"]


def test_backtrack_events_stream_live(parts, greedy):
    retriever, policy = parts
    graph = build_agent(
        retriever=retriever, policy=policy, max_hops=2, k=3, scorer=distrust(greedy["answer"]), backtrack=True
    )
    chunks = list(
        graph.stream({"question": Q, "max_hops": 2}, stream_mode="custom", config={"recursion_limit": 60})
    )
    kinds = ["backtrack" if "backtrack" in c else c["step"]["stage"] for c in chunks]
    assert "backtrack" in kinds and kinds.index("backtrack") > kinds.index("synthesize")


def test_best_of_n_keeps_the_sample_the_rule_prefers(parts, greedy):
    retriever, policy = parts
    graph = build_agent(
        retriever=retriever,
        policy=policy,
        max_hops=2,
        k=3,
        scorer=distrust(greedy["answer"]),
        best_of=4,
        select="min",
    )
    state = graph.invoke({"question": Q, "max_hops": 2, "seed": 0})
    assert len(state["samples"]) == 4
    kept = state["samples"][state["selected"]]
    assert kept["min"] == max(s["min"] for s in state["samples"])
    assert state["answer"] == kept["answer"] and state["steps"]


def test_selection_rules():
    samples = [
        {"answer": "Paris", "scores": [0.9, 0.2], "orm": 0.9, "min": 0.2},
        {"answer": "Rome", "scores": [0.7, 0.5], "orm": 0.3, "min": 0.5},
        {"answer": "paris.", "scores": [0.3, 0.3], "orm": 0.1, "min": 0.3},
    ]
    assert select_sample(samples, "min") == 1
    assert select_sample(samples, "mean") == 1
    assert select_sample(samples, "last") == 1
    assert select_sample(samples, "orm") == 0
    assert (
        select_sample(samples, "vote") == 2
    )  # "Paris" and "paris." are one answer; its better-min sample wins
    assert selection_scores(samples, "combined", alpha=1.0) == [0.9, 0.3, 0.1]
    with pytest.raises(InputError):
        select_sample(samples, "max")
    with pytest.raises(InputError, match="step scores"):
        select_sample([{"answer": "A", "scores": [None]}], "min")


def test_a_run_with_reject_step_goes_back_from_that_step_and_never_returns_the_rejected_answer(parts, greedy):
    from reasonrag.errors import RejectError

    retriever, policy = parts
    trusting = lambda state, step: 0.9  # noqa: E731 - no automatic backtrack: only the person rejects
    graph = build_agent(
        retriever=retriever,
        policy=policy,
        max_hops=2,
        k=3,
        scorer=trusting,
        backtrack=BacktrackConfig(max_backtracks=0),
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "reject"}, "recursion_limit": 100}
    first = graph.invoke({"question": Q, "max_hops": 2}, config)
    last = len(first["steps"])
    again = graph.invoke({"reject_step": last}, config)
    assert again["backtracks"] == 1 and again["abandoned"][0]["reason"] == "rejected by the user"
    assert again["answer"] != first["answer"] and again["steps"][: last - 1] == first["steps"][: last - 1]
    with pytest.raises(RejectError, match="no step 99"):
        graph.invoke({"reject_step": 99}, config)
