"""One suite, every PRM: the contract `score(trajectories)` and `score_steps(problem, steps)` keep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prm_factories import scripted_judge, tiny_transformers_prm

from reasonrag.prm.base import PRM, step_scorer
from reasonrag.prm.encoder_prm import EncoderPRM
from reasonrag.prm.loading import load_prm


def _encoder_prm():
    torch.manual_seed(0)
    return EncoderPRM()


def _cross_encoder_prm():
    from reasonrag.prm.cross_encoder import CrossEncoderPRM

    torch.manual_seed(0)
    return CrossEncoderPRM()


PRMS = {
    "encoder": _encoder_prm,
    "cross-encoder": _cross_encoder_prm,
    "transformers-token-classification": lambda: tiny_transformers_prm("token-classification"),
    "transformers-reward-token": lambda: tiny_transformers_prm("reward-token"),
    "llm-judge": scripted_judge,
}


@pytest.fixture(scope="module", params=sorted(PRMS))
def prm(request):
    return PRMS[request.param]()


def _traj(question: str, n_hops: int, answer: str = "Tomas Varga") -> dict:
    steps = []
    for hop in range(n_hops):
        steps.append(
            {
                "stage": "retrieve",
                "hop": hop,
                "action": question if hop == 0 else f"{question} Varga",
                "prob": 1.0 if hop == 0 else 0.6,
                "candidates": [{"text": "a", "prob": 0.6}, {"text": "b", "prob": 0.4}],
                "observation": [
                    {"id": "p1", "title": "The Quiet Orchard", "score": 0.71, "text": "A novel."}
                ],
            }
        )
        steps.append(
            {
                "stage": "extract",
                "hop": hop,
                "action": "The Quiet Orchard is a novel by Tomas Varga.",
                "prob": 0.7,
                "observation": [
                    {
                        "passage_id": "p1",
                        "sentence_index": 0,
                        "title": "The Quiet Orchard",
                        "text": "The Quiet Orchard is a novel by Tomas Varga.",
                        "score": 0.93,
                    }
                ],
            }
        )
        last = hop == n_hops - 1
        steps.append(
            {
                "stage": "synthesize",
                "hop": hop,
                "action": answer if last else "(another hop)",
                "prob": 0.8,
                "observation": answer if last else "another hop",
            }
        )
    return {"question": question, "steps": steps}


def test_is_a_prm(prm):
    assert isinstance(prm, PRM)


def test_one_score_in_unit_interval_per_step_for_a_batch_of_different_lengths(prm):
    trajs = [_traj("Who wrote The Quiet Orchard?", n) for n in (1, 3, 2)]
    scores = prm.score(trajs)
    assert [len(s) for s in scores] == [3, 9, 6]
    assert all(0.0 <= x <= 1.0 for s in scores for x in s)


def test_a_trajectory_scores_the_same_alone_or_in_any_batch(prm):
    a, b = _traj("Who wrote The Quiet Orchard?", 2), _traj("Who painted the Mona Lisa?", 1, "Leonardo")
    alone = prm.score([a])[0]
    together = prm.score([b, a])[1]
    assert together == pytest.approx(alone, abs=1e-5)
    assert prm.score([a])[0] == pytest.approx(alone, abs=1e-6)  # deterministic in eval


def test_generic_form_scores_plain_reasoning_steps(prm):
    steps = ["48 / 2 = 24", "24 + 48 = 72", "The answer is 72"]
    scores = prm.score_steps(
        "Natalia sold 48 clips in April and half as many in May. How many in all?", steps
    )
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    staged = prm.score_steps("q", ["a step"], stages=["retrieve"])
    assert len(staged) == 1
    with pytest.raises(ValueError):
        prm.score_steps("q", ["a", "b"], stages=["retrieve"])


def test_stage_heads_are_separate(prm):
    base = prm.score_steps(
        "Who wrote The Quiet Orchard?", ["Tomas Varga"] * 3, stages=["retrieve", "extract", "synthesize"]
    )
    assert len({round(s, 6) for s in base}) > 1


def test_malformed_trajectories_are_a_clear_error(prm):
    with pytest.raises(ValueError, match="stage"):
        prm.score([{"question": "q", "steps": [{"stage": "dance", "action": "x"}]}])
    with pytest.raises(ValueError):
        prm.score([{"steps": []}])


def test_save_and_load_round_trip(prm, tmp_path: Path):
    traj = _traj("Who wrote The Quiet Orchard?", 2)
    before = prm.score([traj])[0]
    prm.save(tmp_path / "prm")
    again = load_prm(tmp_path / "prm")
    assert again.score([traj])[0] == pytest.approx(before, abs=1e-5)


def test_plugs_into_the_agent_as_its_step_scorer(prm):
    state = {
        "question": "Who wrote The Quiet Orchard?",
        "steps": _traj("Who wrote The Quiet Orchard?", 1)["steps"][:2],
    }
    step = _traj("Who wrote The Quiet Orchard?", 1)["steps"][2]
    score = step_scorer(prm)(state, step)
    assert 0.0 <= score <= 1.0
    full = prm.score([{"question": state["question"], "steps": state["steps"] + [step]}])[0][-1]
    assert score == pytest.approx(full, abs=1e-6)
