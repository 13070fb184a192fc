"""The verifier's sibling ranking: whole groups per batch, the listwise loss, and its dev measure."""

from __future__ import annotations

import torch

from reasonrag.training.verifier_ranking import (
    grouped_batches,
    listwise_loss,
    sibling_choice,
    sibling_groups,
    state_key,
)


def _step(stage: str, action: str, prob: float = 0.5) -> dict:
    return {"stage": stage, "hop": 0, "action": action, "prob": prob, "observation": action}


def _example(qid: str, prefix: list[dict], step: dict, label: int) -> dict:
    return {
        "question": "q?",
        "question_id": qid,
        "steps": prefix + [step],
        "label": label,
        "stage": step["stage"],
    }


def test_siblings_are_the_candidates_of_one_state_and_another_hop_stands_apart():
    a, b = [_step("extract", "kept A")], [_step("extract", "kept B")]
    ex = [
        _example("q1", a, _step("synthesize", "x"), 1),
        _example("q1", a, _step("synthesize", "y"), 0),
        _example("q1", b, _step("synthesize", "x"), 0),
        _example("q2", a, _step("synthesize", "x"), 0),
        dict(_example("q1", a, _step("synthesize", "(another hop)"), 1), kind="continue"),
    ]
    assert sibling_groups(ex) == [[0, 1], [2], [3], [4]]
    assert state_key(ex[0]) != state_key(ex[4])


def test_batches_hold_whole_groups_cover_every_example_and_follow_the_seed():
    groups = [[0, 1, 2], [3], [4, 5], [6, 7, 8, 9], [10, 11]]
    batches = grouped_batches(groups, 4, "s")
    assert sorted(i for b in batches for i in b) == list(range(12))
    assert all(len(b) <= 4 for b in batches)
    for g in groups:
        assert any(set(g) <= set(b) for b in batches)
    assert grouped_batches(groups, 4, "s") == batches
    assert grouped_batches(groups, 4, "t") != batches


def test_the_listwise_loss_raises_the_right_sibling_above_the_wrong_ones():
    logits = torch.tensor([2.0, 0.0, 1.0, 5.0, 3.0], requires_grad=True)
    labels, groups = [0, 1, 0, 1, 1], [0, 0, 0, 1, 1]  # group 1 has no wrong candidate: no ranking to learn
    loss = listwise_loss(logits, labels, groups)
    z = logits.detach()[:3]
    assert loss.item() == torch.logsumexp(z, 0).item() - z[1].item()
    loss.backward()
    assert logits.grad[1] < 0 < logits.grad[0] and logits.grad[3] == logits.grad[4] == 0
    none = listwise_loss(logits, [1, 1, 1, 1, 1], groups)
    assert none.item() == 0.0 and none.requires_grad


def test_sibling_choice_counts_states_with_a_right_candidate_and_compares_with_the_policy():
    a = [_step("extract", "kept A")]
    ex = [
        _example("q1", a, _step("synthesize", "x", prob=0.6), 0),
        _example("q1", a, _step("synthesize", "y", prob=0.4), 1),
        _example("q2", a, _step("synthesize", "x", prob=0.6), 0),
        _example("q2", a, _step("synthesize", "y", prob=0.4), 0),  # no right candidate: not counted
    ]
    got = sibling_choice([0.2, 0.9, 0.5, 0.1], ex)
    assert got == {"synthesize": {"states": 1, "verifier": 100.0, "policy": 0.0}}
