"""PRM metrics and rewards that every later feature reads: AUROC, gold step labels, aggregations."""

from __future__ import annotations

import random

import pytest

from reasonrag.data.rewards import aggregate, combined_reward
from reasonrag.data.types import Question
from reasonrag.prm.evaluation import auroc, f1_at, gold_step_labels, per_stage


def _pairwise_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_matches_pair_counting_with_ties():
    rng = random.Random(3)
    scores = [round(rng.random(), 1) for _ in range(200)]  # many ties
    labels = [int(rng.random() < s) for s in scores]
    assert auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels))
    assert auroc([0.1, 0.9], [0, 1]) == 1.0 and auroc([0.9, 0.1], [0, 1]) == 0.0
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    assert auroc([0.2, 0.3], [1, 1]) is None  # one class: undefined, not a made-up number


def test_f1_at_threshold():
    assert f1_at([0.9, 0.8, 0.2, 0.1], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert f1_at([0.9], [0]) is None


QUESTION = Question(
    id="q",
    question="Who directed the film in which Ann starred?",
    golden_answers=["Bo Lee"],
    split="test",
    metadata={"gold_passages": ["Film X", "Bo Lee"], "supporting_facts": [["Film X", 0], ["Bo Lee", 2]]},
)


def test_gold_step_labels_follow_the_evidence():
    steps = [
        {"stage": "retrieve", "observation": [{"id": "Film X"}, {"id": "Other"}]},
        {"stage": "extract", "observation": [{"passage_id": "Film X", "sentence_index": 1}]},
        {"stage": "synthesize", "observation": "another hop"},
        {"stage": "retrieve", "observation": [{"id": "Other 2"}]},
        {"stage": "extract", "observation": [{"passage_id": "Bo Lee", "sentence_index": 2}]},
        {"stage": "synthesize", "observation": "bo lee"},
    ]
    assert gold_step_labels(steps, QUESTION) == [1, 0, None, 0, 1, 1]
    wrong = [
        {"stage": "synthesize", "observation": "Ann"},
        {"stage": "synthesize", "observation": "not enough evidence"},
    ]
    assert gold_step_labels(wrong, QUESTION) == [0, 0]


def test_paragraph_level_gold_judges_extraction_by_passage():
    q = Question(id="m", question="?", golden_answers=["a"], split="test", metadata={"gold_passages": ["P"]})
    steps = [{"stage": "extract", "observation": [{"passage_id": "P", "sentence_index": 4}]}]
    assert gold_step_labels(steps, q) == [1]


def test_per_stage_skips_unlabeled_steps():
    m = per_stage([[0.9, 0.2, 0.5]], [[1, 0, None]], [["retrieve", "retrieve", "synthesize"]])
    assert set(m) == {"retrieve"} and m["retrieve"]["n"] == 2 and m["retrieve"]["auroc"] == 1.0


@pytest.mark.parametrize(
    "how, expected", [("min", 0.2), ("prod", 0.9 * 0.2 * 0.5), ("mean", (0.9 + 0.2 + 0.5) / 3), ("last", 0.5)]
)
def test_aggregations(how, expected):
    assert aggregate([0.9, 0.2, 0.5], how) == pytest.approx(expected)


def test_aggregation_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate([0.5], "max")
    with pytest.raises(ValueError, match="at least one"):
        aggregate([], "min")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aggregate([1.5], "min")


def test_combined_reward_interpolates_outcome_and_mean_step_score():
    assert combined_reward(1.0, [0.2, 0.4], alpha=1.0) == 1.0  # outcome only
    assert combined_reward(1.0, [0.2, 0.4], alpha=0.0) == pytest.approx(0.3)  # process only
    assert combined_reward(0.0, [0.2, 0.4], alpha=0.5) == pytest.approx(0.15)
    with pytest.raises(ValueError):
        combined_reward(1.0, [0.5], alpha=1.5)


def test_sibling_top1_compares_the_prms_pick_and_the_policys_on_the_same_states():
    from reasonrag.prm.evaluation import sibling_top1

    q = Question("q", "Who?", ["Enugu"], "dev", {"gold_passages": ["A", "B"], "supporting_facts": [["B", 1]]})

    def alt(prob, score, observed):
        return {"text": "x", "prob": prob, "score": score, "observed": observed}

    steps = [
        # retrieve: the policy's favourite finds nothing gold, the PRM's pick finds B
        {"stage": "retrieve", "critic": [alt(0.6, 0.2, ["C"]), alt(0.4, 0.9, ["B", "D"])]},
        # extract: both pick the supporting sentence
        {"stage": "extract", "critic": [alt(0.7, 0.8, [["B", 1]]), alt(0.3, 0.1, [["B", 0]])]},
        # synthesize: no candidate is right, so the state says nothing about choosing
        {"stage": "synthesize", "critic": [alt(0.5, 0.5, "Lagos"), alt(0.5, 0.4, "Abuja")]},
        # synthesize: the PRM prefers another hop, which has no gold label: left out
        {"stage": "synthesize", "critic": [alt(0.9, 0.1, "Enugu"), alt(0.1, 0.8, "another hop")]},
        # synthesize: the PRM re-ranks the answers right
        {"stage": "synthesize", "critic": [alt(0.9, 0.1, "Lagos"), alt(0.1, 0.8, "Enugu")]},
    ]
    out = sibling_top1([{"id": "q", "steps": steps}], {"q": q})
    assert out["states"] == {"retrieve": 1, "extract": 1, "synthesize": 1}
    assert out["prm"] == {"retrieve": 100.0, "extract": 100.0, "synthesize": 100.0}
    assert out["policy"] == {"retrieve": 0.0, "extract": 100.0, "synthesize": 0.0}
