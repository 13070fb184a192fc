"""The whole agent driven by a real language model: SmolLM2-135M-Instruct (a 98 MB GGUF) as policy and judge.

The other LLM tests use scripted models; these check that a real model's replies parse into actions, that
its grades score every step, and that backtracking, best-of-N, labeling and chat time travel work on
them. They assert what a user relies on, never accuracy (a 135M model answers badly). The GGUF comes from
`python scripts/gguf_models.py smollm2` (CI runs it); without it these tests skip and say so. Generations
are short and few (2 candidates of at most 12 tokens, one passage a search), and one loaded model serves every test.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")
QUESTIONS = str(DATA / "tiny_questions.jsonl")
Q = "Who wrote the novel The Quiet Orchard?"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OPTIONS = {"n_candidates": 2, "max_new_tokens": 12, "temperature": 0.8, "max_retries": 1}


def smollm2_path() -> Path | None:
    """$REASONRAG_TEST_GGUF, else where scripts/gguf_models.py puts SmolLM2 ($REASONRAG_CACHE/models...)."""
    if os.environ.get("REASONRAG_TEST_GGUF"):
        return Path(os.environ["REASONRAG_TEST_GGUF"])
    if os.environ.get("REASONRAG_CACHE"):
        base = Path(os.environ["REASONRAG_CACHE"]).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reasonrag"
    return base / "models" / GGUF_NAME


GGUF = smollm2_path()
pytestmark = pytest.mark.skipif(
    GGUF is None or not GGUF.is_file(),
    reason=f"no SmolLM2 GGUF at {GGUF}: run `python scripts/gguf_models.py smollm2` to fetch it (98 MB)",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("real-llm-cache")
    mp.setenv("REASONRAG_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def policy():
    from reasonrag.policies.llm import llm_policy

    return llm_policy(f"gguf:{GGUF}", **OPTIONS)


@pytest.fixture(scope="module")
def judge(policy):
    """The judge on the policy's own loaded model (a second copy would only cost time)."""
    from reasonrag.llm.local import LocalChatModel
    from reasonrag.prm.judge import LLMJudgePRM

    return LLMJudgePRM(LocalChatModel(policy.model, policy.tokenizer, name=GGUF.name))


@pytest.fixture(scope="module")
def retriever(cache):
    from reasonrag.data.corpus import Corpus
    from reasonrag.retrieval.retriever import DenseRetriever

    return DenseRetriever(Corpus.load(CORPUS))


@pytest.fixture(scope="module")
def corpus_sentences() -> set[str]:
    from reasonrag.data.corpus import Corpus

    return {s for p in Corpus.load(CORPUS).passages for s in p.sentences}


def check_steps(steps: list[dict], sentences: set[str]) -> None:
    """Every step is an action the agent can run, parsed from the model's reply; scores in [0, 1]."""
    assert steps and steps[0]["stage"] == "retrieve"
    for step in steps:
        detail = step.get("detail") or {}  # the graph state has it; `ask --json` shows the observation
        if step["stage"] == "retrieve":
            assert isinstance(step["action"], str) and step["action"] and step["observation"]
        elif step["stage"] == "extract":
            kept = [s["text"] for s in step["observation"]]
            assert all(text in sentences for text in kept), "evidence must be corpus text, never invented"
        else:
            assert step["stage"] == "synthesize" and detail.get("type", "answer") in (
                "answer",
                "insufficient",
            )
        assert step["candidates"] and abs(sum(c["prob"] for c in step["candidates"]) - 1) < 1e-4
        if step.get("score") is not None:
            assert 0.0 <= step["score"] <= 1.0
    assert steps[-1]["stage"] == "synthesize"


def test_ask_on_the_command_line_answers_offline_with_a_gguf_policy(cache, capsys, corpus_sentences):
    from reasonrag.cli.main import main

    argv = ["ask", Q, "--corpus", CORPUS, "-k", "1", "--max-hops", "1", "--llm", f"gguf:{GGUF}", "--no-prm"]
    for key, value in OPTIONS.items():
        argv += ["--policy-option", f"{key}={value}"]
    assert main(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(result["answer"], str) and result["answer"]
    check_steps(result["steps"], corpus_sentences)
    assert [s["stage"] for s in result["steps"]] == ["retrieve", "extract", "synthesize"]  # one hop allowed


def test_the_judge_scores_every_step_live_as_it_scores_the_finished_trajectory(
    policy, judge, retriever, corpus_sentences
):
    from reasonrag.agent.graph import build_agent, run_agent

    state = run_agent(build_agent(retriever=retriever, policy=policy, prm=judge, max_hops=1, k=1), Q)
    check_steps(state["steps"], corpus_sentences)
    live = [s["score"] for s in state["steps"]]
    assert all(isinstance(x, float) for x in live)
    (again,) = judge.score([{"question": Q, "steps": state["steps"]}])
    assert again == pytest.approx(live, abs=1e-6)


def test_backtracking_goes_back_to_an_untried_action_and_still_answers(policy, judge, retriever):
    from reasonrag.agent.graph import build_agent, run_agent
    from reasonrag.agent.nodes import BacktrackConfig

    # A threshold no expected grade reaches: each finished path fails, so the agent must backtrack
    # while any branch point has an untried candidate, then keep the best ending it found.
    strict = BacktrackConfig(threshold=1.0, max_backtracks=1, min_prob=0.0)
    graph = build_agent(retriever=retriever, policy=policy, prm=judge, backtrack=strict, max_hops=1, k=1)
    state = run_agent(graph, Q)
    tried = state["steps"] + [s for a in state.get("abandoned") or [] for s in a["steps"]]
    alternatives = any(len(s["candidates"]) > 1 for s in tried)
    assert alternatives, "SmolLM2 sampled one candidate everywhere: the test question no longer branches"
    assert state["backtracks"] >= 1
    assert len(state["abandoned"]) == state["backtracks"]
    assert isinstance(state["answer"], str) and state["answer"]


def test_best_of_n_keeps_one_of_its_sampled_trajectories(policy, judge, retriever):
    from reasonrag.agent.graph import build_agent, run_agent

    graph = build_agent(
        retriever=retriever, policy=policy, prm=judge, best_of=2, select="min", max_hops=1, k=1
    )
    state = run_agent(graph, Q, mode="sample", seed=3)
    samples = state["samples"]
    assert len(samples) == 2 and all(len(s["scores"]) >= 3 for s in samples)
    best = max(range(2), key=lambda i: (samples[i]["min"], -i))  # the weakest step scores best
    assert state["selected"] == best and state["answer"] == samples[best]["answer"]


def test_labeling_writes_mc_values_and_judge_grades_for_real_replies(policy, judge, retriever, tmp_path):
    from reasonrag.agent.nodes import AgentSteps
    from reasonrag.data.corpus import load_questions
    from reasonrag.retrieval.retriever import as_search_backend
    from reasonrag.training.labeling import CachedSearch, LabelConfig, Labeler, label_questions, read_labels

    q = [q for q in load_questions(QUESTIONS) if q.id == "q2"]
    steps = AgentSteps(CachedSearch(as_search_backend(retriever)), policy, max_hops=1, k=1)
    labeler = Labeler(steps, LabelConfig(trajectories=2, completions=1, max_hops=1, k=1))
    out = tmp_path / "labels.jsonl"
    summary = label_questions(labeler, q, out, corpus="tiny", progress=False, judge=judge)
    records = read_labels(out)
    assert summary["questions_new"] == 1 and records
    for r in records:
        assert len(r["labels"]) == len(r["values"]) == len(r["steps"]) == len(r["completions"])
        assert all(v is None or 0.0 <= v <= 1.0 for v in r["values"])
        assert all(0.0 <= g <= 1.0 for g in r["judge"])


def test_chat_travels_back_in_time_and_continues_with_the_real_model(policy, judge, retriever, tmp_path):
    from reasonrag.agent.chat_session import ChatSession
    from reasonrag.agent.nodes import AgentSteps, BacktrackConfig
    from reasonrag.prm.base import step_scorer
    from reasonrag.retrieval.retriever import as_search_backend

    nodes = AgentSteps(
        as_search_backend(retriever),
        policy,
        max_hops=1,
        k=1,
        scorer=step_scorer(judge),
        backtrack=BacktrackConfig(threshold=0.0, max_backtracks=2),
    )
    with ChatSession(nodes, tmp_path / "chat.sqlite", out=io.StringIO()) as chat:
        first = chat.ask(Q)
        steps = first["steps"]
        back = chat.back(1)
        assert back["steps"] == steps[:1]
        again = chat.resume()
        timeless = [{k: v for k, v in s.items() if k != "seconds"} for s in steps]
        assert [{k: v for k, v in s.items() if k != "seconds"} for s in again["steps"]] == timeless
        assert chat.history()[0]["answer"] == first["answer"]
        out = chat.out.getvalue()
        assert "back to just after step 1" in out and out.count("Answer: ") == 2
