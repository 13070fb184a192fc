"""The verifier's exact labels on the agent's own paths, its training on cached trunk states, and resuming
a killed training run to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reasonrag.agent.graph import agent_steps
from reasonrag.data.corpus import Corpus, load_questions
from reasonrag.prm.cross_encoder import CrossEncoderPRM, CrossEncoderPRMConfig
from reasonrag.training import verifier_training as vt
from reasonrag.training.verifier_paths import build_path_examples, explore_paths

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.mktemp("cache")))
    corpus = Corpus.load(str(DATA / "tiny_corpus.jsonl"))
    yield corpus, agent_steps(corpus, k=3), load_questions(str(DATA / "tiny_questions.jsonl"))
    mp.undo()


def test_walks_label_every_executed_candidate_from_the_gold(tiny):
    corpus, steps, questions = tiny
    q = next(q for q in questions if q.id == "q1")  # Harbor Lights -> Miriam Okafor -> Enugu
    examples = explore_paths(q, steps, k=3, max_hops=2)
    gold = set(q.metadata["gold_passages"])
    facts = {tuple(f) for f in q.metadata["supporting_facts"]}
    for e in examples:
        step = e["steps"][-1]
        order = ["retrieve", "extract", "synthesize"]  # the path the candidate was made on, in graph order
        assert [s["stage"] for s in e["steps"]] == [order[i % 3] for i in range(len(e["steps"]))]
        if e["stage"] == "retrieve":
            assert e["label"] == int(bool({o["id"] for o in step["observation"]} & gold))
        elif e["stage"] == "extract":
            kept = {(o["passage_id"], o["sentence_index"]) for o in step["observation"]}
            assert e["label"] == int(bool(kept & facts))
        elif e["kind"] == "continue":
            assert step["observation"] == "another hop"
        else:
            assert e["label"] == int(step["observation"] in q.golden_answers)
    stages = {(e["stage"], e["hop"]) for e in examples}
    assert ("retrieve", 1) in stages and ("synthesize", 0) in stages  # later hops and early answers
    assert any(e["label"] == 1 and e["stage"] == "synthesize" and e["kind"] == "step" for e in examples)
    assert explore_paths(q, steps, k=3, max_hops=2) == examples  # seeded: the same walk again


def test_a_killed_build_resumes_without_repeating_a_question(tiny, tmp_path):
    _, steps, questions = tiny
    out = tmp_path / "paths.jsonl"
    first = build_path_examples(questions[:1], steps, out, "paths", k=3, max_hops=1)
    with out.open("a") as f:
        f.write('{"question_id": "q2", "exam')  # a torn line, as a kill mid-write leaves
    every = build_path_examples(questions, steps, out, "paths", k=3, max_hops=1)
    ids = [json.loads(line)["question_id"] for line in out.read_text().splitlines()]
    assert ids == [q.id for q in questions] and every[: len(first)] == first


def _examples(tiny) -> list[dict]:
    _, steps, questions = tiny
    return [e for q in questions for e in explore_paths(q, steps, k=3, max_hops=2)]


def test_training_on_cached_trunk_states_resumes_to_the_same_weights(tiny, tmp_path, monkeypatch):
    examples = _examples(tiny)[:48]
    config = vt.VerifierTrainingConfig(epochs=2, batch_size=8, checkpoint_every=2)

    def make() -> CrossEncoderPRM:  # seeded, as the command seeds before it builds the model
        torch.manual_seed(0)
        return CrossEncoderPRM(CrossEncoderPRMConfig(train_layers=1, max_length=64, prob_feature=True))

    vt.train_verifier(make(), examples, {"paths": examples}, tmp_path / "whole", config)
    whole = CrossEncoderPRM.load(tmp_path / "whole").trainable_state()

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def dies_after_seven(self, *a, **k):  # a kill in the middle of the second epoch
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", dies_after_seven)
    with pytest.raises(KeyboardInterrupt):
        vt.train_verifier(
            make(), examples, {"paths": examples}, tmp_path / "resumed", config, checkpoint=tmp_path / "ck"
        )
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    result = vt.train_verifier(
        make(), examples, {"paths": examples}, tmp_path / "resumed", config, checkpoint=tmp_path / "ck"
    )
    resumed = CrossEncoderPRM.load(tmp_path / "resumed").trainable_state()
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert len(list(tmp_path.glob("trunk-train-*.pt"))) == 1  # the rerun read the killed run's trunk states


def test_cached_trunk_states_score_as_the_whole_model_does(tiny):
    examples = _examples(tiny)[:10]
    prm = CrossEncoderPRM(CrossEncoderPRMConfig(train_layers=2, max_length=96, prob_feature=True))
    cached = vt.score_states(prm, vt.cache_states(prm, examples, "trunk"), examples)
    whole = prm.score_last(examples)
    assert cached == pytest.approx(whole, abs=2e-3)  # the cache holds float16 states
