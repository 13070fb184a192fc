"""TransformersPRM on tiny random models: one pass per batch, scores read at the right tokens, round trips."""

from __future__ import annotations

import json
import math

import pytest
import torch
from prm_factories import tiny_transformers_prm

from reasonrag.data.types import STAGES
from reasonrag.errors import InputError, ModelError
from reasonrag.prm.loading import load_prm
from reasonrag.prm.transformers_prm import TransformersPRM, _fair_shares

MODES = ("token-classification", "reward-token")
QUESTION = "Where was the director of the film Harbor Lights born?"


def _steps(n: int, hop_words: int = 8) -> list[dict]:
    """`n` realistic steps cycling retrieve -> extract -> synthesize."""
    out = []
    for i in range(n):
        stage = STAGES[i % 3]
        filler = " ".join(f"word{i}x{j}" for j in range(hop_words))
        if stage == "retrieve":
            obs = [{"title": f"Harbor Lights {i}", "text": f"Harbor Lights is a film, {filler}."}]
            out.append({"stage": stage, "action": f"director of Harbor Lights {i}", "observation": obs})
        elif stage == "extract":
            obs = [{"title": f"Harbor Lights {i}", "text": f"It was directed by Maurice {filler}."}]
            out.append({"stage": stage, "action": "", "observation": obs})
        else:
            out.append({"stage": stage, "action": f"Lisbon {i}", "observation": f"Lisbon {i}"})
    return out


def _traj(n: int, **kw) -> dict:
    return {"question": QUESTION, "steps": _steps(n, **kw)}


@pytest.fixture(scope="module", params=MODES)
def prm(request) -> TransformersPRM:
    return tiny_transformers_prm(request.param)


def test_scores_are_probabilities_one_per_step_in_a_mixed_batch(prm):
    trajs = [_traj(1), _traj(5), _traj(0), _traj(3)]
    scores = prm.score(trajs)
    assert [len(s) for s in scores] == [1, 5, 0, 3]
    for encoded in prm._encode_many(trajs):  # each step is read at its separator, its last token
        assert [encoded.ids[p] for p in encoded.sep_positions] == [prm.separator_id] * len(
            encoded.sep_positions
        )
        assert encoded.sep_positions[-1:] == [len(encoded.ids) - 1][: len(encoded.sep_positions)]
    flat = [x for s in scores for x in s]
    assert all(0.0 <= x <= 1.0 and math.isfinite(x) for x in flat)
    assert len(set(flat)) > 3  # not a constant


def test_batch_mates_and_order_do_not_change_a_trajectorys_scores(prm):
    trajs = [_traj(2), _traj(7, hop_words=20), _traj(4)]
    together = prm.score(trajs)
    reversed_ = prm.score(trajs[::-1])[::-1]
    alone = [prm.score([t])[0] for t in trajs]
    prm.tokenizer.padding_side = "left"  # a generation-style tokenizer must not shift anything
    try:
        left = prm.score(trajs)
    finally:
        prm.tokenizer.padding_side = "right"
    for ref in (reversed_, alone, left):
        for a, b in zip(together, ref):
            assert a == pytest.approx(b, abs=1e-5)


def test_one_forward_call_per_batch_whatever_the_number_of_steps(prm):
    calls = []
    handle = prm.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        prm.score([_traj(16), _traj(2), _traj(9), _traj(1), _traj(12)])
        assert len(calls) == 1
        calls.clear()
        prm.score([_traj(3)] * 5, batch_size=2)
        assert len(calls) == 3
    finally:
        handle.remove()


def test_one_pass_logits_equal_the_prefix_loop(prm):
    """Each step's logit is read at its own separator and sees no later step, in both modes."""
    traj = _traj(7)
    prm.eval()
    with torch.no_grad():
        one_pass = prm.step_logits([traj])[0].tolist()
    assert one_pass == pytest.approx(prm.prefix_loop_logits(traj), abs=1e-4)


def test_a_later_step_does_not_change_earlier_scores(prm):
    traj = _traj(4)
    other_end = _steps(4, hop_words=60)[3]  # a much longer, different last step
    changed = {"question": QUESTION, "steps": traj["steps"][:3] + [other_end]}
    a, b = prm.score([traj, changed])
    assert a[:3] == pytest.approx(b[:3], abs=1e-6)
    assert a[3] != pytest.approx(b[3], abs=1e-4)


def test_reward_token_logit_is_good_minus_bad_at_each_separator():
    prm = tiny_transformers_prm("reward-token")
    traj = _traj(4)
    encoded = prm._encode_many([traj])[0]
    assert [encoded.ids[p] for p in encoded.sep_positions] == [prm.separator_id] * 4
    with torch.no_grad():
        full = prm.model(input_ids=torch.tensor([encoded.ids])).logits[0]  # every position, no slicing
        expected = full[encoded.sep_positions, prm._good_id] - full[encoded.sep_positions, prm._bad_id]
        got = prm.eval().step_logits([traj])[0]
    assert got.tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_each_stage_reads_its_own_head():
    """The same position scored under each stage's head: constant heads make the score the head's bias."""
    prm = tiny_transformers_prm("token-classification")
    biases = torch.tensor([-2.0, 0.5, 3.0])
    with torch.no_grad():
        prm.model.classifier.weight.zero_()
        prm.model.classifier.bias.copy_(biases)
    stages = ["synthesize", "retrieve", "extract", "retrieve"]
    scores = prm.score_steps("Which river?", ["the Seine", "the Seine", "the Seine", "x"], stages)
    want = [torch.sigmoid(biases[STAGES.index(s)]).item() for s in stages]
    assert scores == pytest.approx(want, abs=1e-6)


def test_the_same_step_text_under_another_stage_scores_differently():
    prm = tiny_transformers_prm("token-classification")
    by_stage = [prm.score_steps("Which river?", ["the Seine"], [s])[0] for s in ("retrieve", "synthesize")]
    assert abs(by_stage[0] - by_stage[1]) > 1e-4


def test_save_and_load_round_trip(prm, tmp_path):
    trajs = [_traj(3), _traj(6)]
    before = prm.score(trajs)
    prm.save(tmp_path / "prm", extra={"training": {"best_epoch": 1}})
    prm.save(tmp_path / "prm", extra={"training": {"best_epoch": 2}, "mode": "not-a-mode"})  # overwrite
    manifest = json.loads((tmp_path / "prm" / "manifest.json").read_text())
    assert manifest["training"] == {"best_epoch": 2}  # the trainer's record, but it cannot change the core
    assert manifest["kind"] == "reasonrag-transformers-prm" and manifest["format"] == 1
    assert manifest["mode"] == prm.mode and manifest["stages"] == list(STAGES)
    assert manifest["separator"] == prm.separator and manifest["max_length"] == prm.max_length
    assert (tmp_path / "prm" / "model.safetensors").is_file()
    assert not list((tmp_path / "prm").glob("*.bin")) and sorted(p.name for p in tmp_path.iterdir()) == [
        "prm"
    ]
    for loaded in (TransformersPRM.from_pretrained(tmp_path / "prm"), load_prm(tmp_path / "prm")):
        assert isinstance(loaded, TransformersPRM) and loaded.mode == prm.mode
        assert loaded.manifest()["training"] == {"best_epoch": 2}  # carried on to the next save
        for a, b in zip(before, loaded.score(trajs)):
            assert a == pytest.approx(b, abs=1e-6)


def test_bad_directories_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="manifest.json"):
        TransformersPRM.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelError, match="no model directory"):
        TransformersPRM.from_base(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        TransformersPRM.from_pretrained(broken)
    (broken / "manifest.json").write_text(
        json.dumps({"kind": "reasonrag-transformers-prm", "format": 1, "mode": "regression"})
    )
    with pytest.raises(ModelError, match="unknown mode"):
        TransformersPRM.from_pretrained(broken)
    manifest = {"kind": "reasonrag-transformers-prm", "format": 1, "mode": "reward-token"}
    (broken / "manifest.json").write_text(json.dumps(dict(manifest, stages=list(STAGES), separator="[SEP]")))
    with pytest.raises(ModelError, match="cannot load"):  # a manifest but no model files
        load_prm(broken)


def test_a_few_adam_steps_move_scores_toward_the_labels():
    prm = tiny_transformers_prm("token-classification", seed=1)
    trajs = [_traj(3), _traj(4, hop_words=3)]
    labels = [torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0, 0.0])]
    target = torch.cat(labels)
    before = torch.tensor([x for s in prm.score(trajs) for x in s])
    optimizer = torch.optim.Adam(prm.parameters(), lr=3e-3)
    prm.train()
    for _ in range(15):
        logits = torch.cat(prm.step_logits(trajs))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = torch.tensor([x for s in prm.score(trajs) for x in s])
    assert prm.model.training  # score restored the caller's mode
    assert (after - target).abs().mean() < (before - target).abs().mean() - 0.1
    assert ((after > 0.5) == target.bool()).all()


def test_a_trajectory_far_past_max_length_keeps_every_step():
    prm = tiny_transformers_prm("reward-token", max_length=96)
    traj = _traj(12, hop_words=40)  # about ten times max_length
    encoded = prm._encode_many([traj])[0]
    assert len(encoded.ids) <= 96
    assert [encoded.ids[p] for p in encoded.sep_positions] == [prm.separator_id] * 12
    for sep, step in zip(encoded.sep_positions, traj["steps"][1:]):  # every step keeps its stage tag
        tag = prm.tokenizer.encode(f"[{step['stage']}]", add_special_tokens=False)
        assert encoded.ids[sep + 1 : sep + 1 + len(tag)] == tag
    scores = prm.score([traj, _traj(2)])
    assert [len(s) for s in scores] == [12, 2]
    with pytest.raises(InputError, match="max_length"):
        prm.score([_traj(40)])  # 40 tags and separators alone do not fit: an error, never a dropped step


def test_fair_shares_cut_the_long_pieces_first():
    assert _fair_shares([3, 50, 10], 100) == [3, 50, 10]
    assert _fair_shares([3, 50, 10], 30) == [3, 17, 10]
    assert sum(_fair_shares([7, 7, 7, 7], 10)) <= 10


def test_a_literal_separator_in_a_step_is_text_not_a_boundary(prm):
    traj = {"question": "q [SEP] q", "steps": [{"stage": "synthesize", "action": "a [SEP] b </s>"}]}
    encoded = prm._encode_many([traj])[0]
    assert encoded.ids.count(prm.separator_id) == 2  # after the question and after the one step


def test_bad_trajectories_are_rejected(prm):
    with pytest.raises(ValueError, match="stage"):
        prm.score([{"question": "q", "steps": [{"stage": "guess", "action": "x"}]}])
    with pytest.raises(ValueError, match="question"):
        prm.step_logits([{"steps": []}])
    with pytest.raises(InputError, match="mode"):
        TransformersPRM(prm.model, prm.tokenizer, mode="regression")
