"""Monte Carlo labeling as a user relies on it: right values, shared prefixes, resumable files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonrag.agent.nodes import AgentSteps
from reasonrag.data.corpus import Corpus, load_questions
from reasonrag.errors import LabelsError
from reasonrag.policies.base import Candidate, normalise
from reasonrag.policies.embedded import EmbeddedPolicy
from reasonrag.retrieval.retriever import DenseRetriever, as_search_backend
from reasonrag.training.labeling import (
    CachedSearch,
    LabelConfig,
    Labeler,
    label_questions,
    read_labels,
    resume_point,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.mktemp("cache")))
    corpus = Corpus.load(str(DATA / "tiny_corpus.jsonl"))
    yield as_search_backend(DenseRetriever(corpus))
    mp.undo()


@pytest.fixture(scope="module")
def questions():
    return load_questions(str(DATA / "tiny_questions.jsonl"))


class CoinPolicy:
    """Retrieves with the question, keeps the top passage's first sentence, then answers right with
    probability `p_right` (else a wrong name): the MC values are known in advance."""

    def __init__(self, right: str, p_right: float) -> None:
        self.right, self.p_right = right, p_right

    def propose(self, stage, state):
        if stage == "retrieve":
            return [Candidate("retrieve", state["question"], {"query": state["question"]}, 1.0)]
        if stage == "extract":
            p = state["retrieved"][-1]
            item = {
                "passage_id": p["id"],
                "title": p["title"],
                "sentence_index": 0,
                "text": p["sentences"][0],
            }
            return [Candidate("extract", p["sentences"][0], {"sentences": [dict(item, score=0.9)]}, 1.0)]
        answers = [(self.right, self.p_right), ("Nobody In Particular", 1 - self.p_right)]
        return normalise(
            [Candidate("synthesize", a, {"type": "answer", "answer": a}, p) for a, p in answers if p > 0]
        )


def _labeler(search, policy, **cfg) -> Labeler:
    cfg.setdefault("max_hops", 1)
    config = LabelConfig(**cfg)
    return Labeler(AgentSteps(CachedSearch(search), policy, max_hops=config.max_hops, k=2), config)


def test_mc_values_hard_labels_and_spre_follow_the_rollouts(search, questions):
    q = next(q for q in questions if q.id == "q2")
    lab = _labeler(search, CoinPolicy(q.golden_answers[0], 0.5), trajectories=8, completions=16, gamma=0.9)
    records = lab.label_question(q)
    assert sum(r["count"] for r in records) == 8
    assert {r["answer"] for r in records} <= {q.golden_answers[0], "Nobody In Particular"}
    for r in records:
        assert r["stages"] == ["retrieve", "extract", "synthesize"]
        retrieve_v, extract_v, final_v = r["values"]
        assert 0.1 < retrieve_v < 0.9 and 0.1 < extract_v < 0.9  # a fair coin, 16 rollouts from each state
        assert final_v == r["outcome"]  # the answer step's value is its own outcome
        assert r["labels"] == [int(v > 0) for v in r["values"]]
        assert r["spre"][0] == pytest.approx(
            retrieve_v * 0.9**2, abs=1e-4
        )  # every rollout from there takes 2 steps
        assert r["spre"][1] == pytest.approx(extract_v * 0.9, abs=1e-4)
        assert len(r["completions"]) == 3 and r["prompt"] == q.question


def test_shared_prefixes_are_rolled_out_once(search, questions):
    q = next(q for q in questions if q.id == "q2")
    lab = _labeler(search, CoinPolicy(q.golden_answers[0], 0.5), trajectories=8, completions=4)
    lab.label_question(q)
    # Two distinct non-final prefixes (after retrieve, after extract) x 4 completions, whatever the 8 samples.
    assert lab.stats.rollouts == 2 * 4
    assert lab.stats.rollouts_naive == 8 * 2 * 4
    assert lab.stats.nodes < lab.stats.nodes_naive


def test_a_policy_that_is_always_right_labels_every_step_positive(search, questions):
    q = next(q for q in questions if q.id == "q2")
    lab = _labeler(search, CoinPolicy(q.golden_answers[0], 1.0), trajectories=2, completions=2)
    (record,) = lab.label_question(q)
    assert record["labels"] == [1, 1, 1] and record["values"] == [1.0, 1.0, 1.0]


def test_labels_file_resumes_after_a_kill_without_loss_or_duplicates(search, questions, tmp_path):
    out = tmp_path / "labels.jsonl"
    policy = EmbeddedPolicy()
    lab = _labeler(search, policy, trajectories=2, completions=1, max_hops=2)
    label_questions(lab, questions[:1], out, progress=False)
    first = out.read_text().splitlines()
    # A kill in the middle of the second question's write: a complete line of it, then a torn one.
    lab2 = _labeler(search, policy, trajectories=2, completions=1, max_hops=2)
    records = lab2.label_question(questions[1])
    partial = [dict(records[0], count=1)]  # one sample of two written
    with out.open("a") as f:
        f.write(json.dumps(partial[0]) + "\n" + json.dumps(records[-1])[:40])
    assert resume_point(out, lab.config) == {questions[0].id}
    assert out.read_text().splitlines() == first  # the unfinished question was cut off, the rest kept
    lab3 = _labeler(search, policy, trajectories=2, completions=1, max_hops=2)
    summary = label_questions(lab3, questions[:3], out, progress=False)
    assert summary["questions_resumed"] == 1 and summary["questions_new"] == 2
    recs = read_labels(out)
    by_q: dict[str, int] = {}
    for r in recs:
        by_q[r["question_id"]] = by_q.get(r["question_id"], 0) + r["count"]
    assert by_q == {q.id: 2 for q in questions[:3]}


def test_resuming_with_other_settings_is_refused(search, questions, tmp_path):
    out = tmp_path / "labels.jsonl"
    label_questions(
        _labeler(search, EmbeddedPolicy(), trajectories=1, completions=1), questions[:1], out, progress=False
    )
    before = out.read_bytes()
    with pytest.raises(LabelsError, match="other settings"):
        label_questions(
            _labeler(search, EmbeddedPolicy(), trajectories=2, completions=1), questions, out, progress=False
        )
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", ":1: not valid JSON"),
        ('{"prompt": "q", "completions": ["a"], "labels": [true]}', ":1: not a reasonrag labels line"),
        ('["a list"]', ":1: a labels line is a JSON object"),
    ],
)
def test_malformed_or_foreign_labels_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(LabelsError, match=message):
        read_labels(path)


def test_inconsistent_label_lengths_are_rejected(tmp_path):
    record = {
        "format": "reasonrag-labels/1",
        "question": "q",
        "steps": [{"stage": "retrieve"}, {"stage": "synthesize"}],
        "labels": [1],
        "values": [1.0, 0.5],
    }
    path = tmp_path / "short.jsonl"
    path.write_text("\n" + json.dumps(record) + "\n")
    with pytest.raises(LabelsError, match=r"short.jsonl:2: .*same length"):
        read_labels(path)
