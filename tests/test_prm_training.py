"""`train_prm` learns step labels, masks unlabeled steps, keeps the best dev epoch on disk."""

from __future__ import annotations

import json
import random

import pytest
import torch

from reasonrag.errors import InputError
from reasonrag.prm.encoder_prm import EncoderPRM
from reasonrag.prm.loading import load_prm
from reasonrag.training.prm_training import PRMTrainingConfig, batch_loss, subsample, train_prm

TOPICS = ["Paris", "Mount Everest", "Python", "Photosynthesis", "Tokyo", "Chess", "Coffee", "Violin"]


def _record(i: int, rng: random.Random) -> dict:
    """A trajectory whose extract step is good exactly when its sentence score is high, and whose answer
    is right exactly when it appears in the evidence: what a PRM should learn from the trace."""
    topic = rng.choice(TOPICS)
    good_extract = rng.random() < 0.5
    right = rng.random() < 0.5
    sentence = f"{topic} is described in this sentence number {i}."
    answer = topic if right else rng.choice(["Nobody", "Elsewhere", "Unknown person"])
    steps = [
        {
            "stage": "retrieve",
            "action": f"what about {topic}",
            "prob": 1.0,
            "observation": [{"id": topic, "title": topic, "score": 0.6}],
        },
        {
            "stage": "extract",
            "action": sentence,
            "prob": 0.5,
            "observation": [
                {
                    "passage_id": topic,
                    "sentence_index": 0,
                    "title": topic,
                    "text": sentence,
                    "score": 0.9 if good_extract else 0.1,
                }
            ],
        },
        {"stage": "synthesize", "action": answer, "prob": 0.5, "observation": answer},
    ]
    return {
        "format": "reasonrag-labels/1",
        "question_id": f"q{i}",
        "question": f"Tell me about {topic}?",
        "steps": steps,
        "labels": [None, int(good_extract), int(right)],
        "values": [None, 1.0 if good_extract else 0.0, 1.0 if right else 0.0],
    }


@pytest.fixture(scope="module")
def data():
    rng = random.Random(0)
    records = [_record(i, rng) for i in range(160)]
    return records[:120], records[120:]


def test_training_learns_the_labels_and_keeps_the_best_dev_epoch(data, tmp_path):
    train, dev = data
    torch.manual_seed(0)
    prm = EncoderPRM()
    result = train_prm(
        prm, train, dev, tmp_path / "prm", PRMTrainingConfig(epochs=15, lr=3e-3, patience=15), progress=False
    )
    best = next(h for h in result["history"] if h["epoch"] == result["best_epoch"])
    assert best["per_stage"]["extract"]["auroc"] > 0.95
    assert best["per_stage"]["synthesize"]["auroc"] > 0.9
    assert "retrieve" not in best["per_stage"]  # unlabeled everywhere: masked, never measured
    manifest = json.loads((tmp_path / "prm" / "manifest.json").read_text())
    assert manifest["training"]["best_epoch"] == result["best_epoch"]
    loaded = load_prm(tmp_path / "prm")
    scores = loaded.score(dev)
    bad = [s[1] for s, r in zip(scores, dev) if r["labels"][1] == 0]
    good = [s[1] for s, r in zip(scores, dev) if r["labels"][1] == 1]
    assert sum(good) / len(good) > sum(bad) / len(bad) + 0.3


def test_unlabeled_steps_carry_no_gradient(data):
    torch.manual_seed(0)
    prm = EncoderPRM()
    record = dict(data[0][0], labels=[None, None, 1], values=[None, None, 1.0])
    loss, n = batch_loss(prm, [record], "hard")
    loss.backward()
    assert n == 1
    assert all(p.grad is None or not p.grad.any() for p in prm.heads["extract"].parameters())
    assert any(p.grad is not None and p.grad.any() for p in prm.heads["synthesize"].parameters())


def test_fraction_keeps_whole_questions(data):
    train, _ = data
    part = subsample(train, 0.25, seed=1)
    assert len({r["question_id"] for r in part}) == 30


def test_training_without_dev_labels_is_refused(data, tmp_path):
    with pytest.raises(InputError, match="dev"):
        train_prm(EncoderPRM(), data[0], [], tmp_path / "prm", progress=False)


def test_gold_and_mix_targets_follow_the_gold_step_labels():
    from reasonrag.data.types import Question
    from reasonrag.training.prm_training import attach_gold, targets

    q = Question(
        id="q1",
        question="?",
        golden_answers=["Bo"],
        split="train",
        metadata={"gold_passages": ["P"], "supporting_facts": [["P", 0]]},
    )
    record = {
        "question_id": "q1",
        "steps": [
            {"stage": "retrieve", "observation": [{"id": "P"}]},
            {"stage": "extract", "observation": [{"passage_id": "P", "sentence_index": 3}]},
            {"stage": "synthesize", "observation": "another hop"},
        ],
        "labels": [1, 1, 0],
        "values": [0.5, 0.25, 0.0],
    }
    with pytest.raises(InputError, match="gold"):
        targets(record, "gold")
    assert attach_gold([record], {"q1": q}) == 1
    assert targets(record, "gold") == [1.0, 0.0, None]  # a hop decision has no gold label: masked
    assert targets(record, "mix", gold_weight=0.5) == [0.75, 0.125, 0.0]
    assert targets(record, "hard") == [1.0, 1.0, 0.0]
