"""Policy training as a user relies on it: rewards credited right, trainers that move the policy the right
way (on every trainable policy), live and offline decisions that agree, and the train-policy command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from policy_factories import TRAINABLE_FACTORIES

from reasonrag.agent.nodes import AgentSteps, rollout
from reasonrag.cli.main import main
from reasonrag.data.corpus import Corpus, load_questions
from reasonrag.errors import InputError, ModelError
from reasonrag.policies.base import Candidate, normalise
from reasonrag.policies.head import N_NUMERIC, PolicyHead, PolicyHeadConfig, TunedPolicy, load_policy_head
from reasonrag.retrieval.retriever import DenseRetriever, as_search_backend
from reasonrag.training.labeling import CachedSearch, LabelConfig, Labeler, label_questions, read_labels
from reasonrag.training.policy_training import (
    DPOConfig,
    PolicyGradientConfig,
    answer_pairs,
    combined_returns,
    preference_pairs,
    record_decisions,
    step_rewards,
    train_policy,
)

DATA = Path(__file__).parent / "data"
CORPUS = str(DATA / "tiny_corpus.jsonl")
QUESTIONS = str(DATA / "tiny_questions.jsonl")


# -- synthetic trajectories ----------------------------------------------------------------------------
def _record(qid: str, question: str, answers: list[str], chosen: int, outcome: float, values=None, count=1):
    """A two-step trajectory: keep one sentence, then answer with candidate `chosen` of `answers`."""
    evidence = {
        "passage_id": "p1",
        "title": "Paris",
        "sentence_index": 0,
        "text": "Paris is the capital of France.",
    }
    steps = [
        {
            "stage": "extract",
            "hop": 0,
            "action": "Paris: Paris is the capital of France.",
            "observation": [evidence],
            "candidates": [{"text": "Paris: Paris is the capital of France.", "prob": 1.0}],
            "chosen": 0,
        },
        {
            "stage": "synthesize",
            "hop": 0,
            "action": answers[chosen],
            "observation": answers[chosen],
            "candidates": [{"text": a, "prob": round(1 / len(answers), 6)} for a in answers],
            "chosen": chosen,
        },
    ]
    values = values or [0.5, outcome]
    return {
        "format": "reasonrag-labels/1",
        "id": f"{qid}/{chosen}",
        "question_id": qid,
        "question": question,
        "golden_answers": [answers[0]],
        "steps": steps,
        "stages": [s["stage"] for s in steps],
        "labels": [int(v > 0) for v in values],
        "values": values,
        "spre": values,
        "answer": answers[chosen],
        "outcome": outcome,
        "count": count,
    }


QUESTIONS_AND_ANSWERS = [
    ("a", "What is the capital of France?", ["Paris", "London", "Berlin"]),
    ("b", "Which city is the capital of Japan?", ["Tokyo", "Osaka", "Kyoto"]),
    ("c", "Who wrote Hamlet?", ["William Shakespeare", "Charles Dickens", "Jane Austen"]),
]


def _groups(right_value: float = 1.0, wrong_value: float = 0.0):
    records = []
    for qid, q, answers in QUESTIONS_AND_ANSWERS:
        records.append(_record(qid, q, answers, 0, 1.0, [0.6, right_value]))
        records.append(_record(qid, q, answers, 1, 0.0, [0.6, wrong_value]))
        records.append(_record(qid, q, answers, 2, 0.0, [0.6, wrong_value]))
    return records


def _right_prob(policy, records) -> float:
    """Mean probability of the right answer (candidate 0) over the questions' answer decisions."""
    decisions = [d for r in records[::3] for d in record_decisions(r) if d is not None]
    with torch.no_grad():
        lp = policy.action_logprobs(decisions, [0] * len(decisions))
    return float(lp.exp().mean())


@pytest.fixture(params=sorted(TRAINABLE_FACTORIES))
def trainable(request, encoder):
    return TRAINABLE_FACTORIES[request.param](encoder)


# -- rewards and examples ---------------------------------------------------------------------------------
def test_decisions_rebuild_the_evidence_so_far_and_skip_forced_steps():
    record = _record("a", "What is the capital of France?", ["Paris", "London"], 1, 0.0)
    first, second = record_decisions(record)
    assert first is None  # one candidate: nothing was chosen
    assert second.context == ["Paris: Paris is the capital of France."]
    assert second.action == "London" and second.chosen == 1
    assert second.behaviour_logprob == pytest.approx(math.log(0.5))


def test_advantages_are_normalised_within_each_question_and_credit_later_steps():
    records = _groups()
    rewards = [r["values"] for r in records]
    outcome_only = combined_returns(records, rewards, alpha=1.0, outcome="em")
    # The right trajectory of every question gets the same positive advantage, the wrong ones negative.
    assert all(a[1] > 0 for a in outcome_only[0::3]) and all(a[1] < 0 for a in outcome_only[1::3])
    assert outcome_only[0][0] == outcome_only[0][1]  # outcome credit reaches every step
    process_only = combined_returns(records, rewards, alpha=0.0, outcome="em")
    # Step 1 is credited with the mean of steps 1 and 2, step 2 with its own reward only.
    assert process_only[0][1] > process_only[0][0] > process_only[1][0] > process_only[1][1]
    alone = combined_returns(records[:1], rewards[:1], alpha=1.0, outcome="em")
    assert alone == [[0.0, 0.0]]  # a question with a single trajectory teaches nothing about outcomes


def test_preference_pairs_are_siblings_whose_values_differ_by_the_margin():
    records = _groups(right_value=0.9, wrong_value=0.0)
    pairs = preference_pairs(records, "spre", margin=0.1)
    assert len(pairs) == 2 * len(QUESTIONS_AND_ANSWERS)  # right beats each wrong; the two wrongs tie
    assert all(p.better == 0 and p.worse in (1, 2) for p in pairs)
    assert preference_pairs(records, "spre", margin=0.95) == []


def test_answer_pairs_rank_the_candidates_of_one_answer_step_by_their_own_outcome():
    # One trajectory per question, each answering wrongly: no siblings, yet the answer step's
    # candidates are known to be right or wrong without any rollout.
    records = [_record(qid, q, answers, 1, 0.0) for qid, q, answers in QUESTIONS_AND_ANSWERS]
    assert preference_pairs(records, "spre", 0.1) == []
    pairs = answer_pairs(records, "em")
    assert len(pairs) == 2 * len(QUESTIONS_AND_ANSWERS)  # the right one over each of the two wrong ones
    assert all(p.better == 0 and p.worse in (1, 2) and p.gap == 1.0 for p in pairs)
    # The same state explored twice counts once; "another hop" has no outcome of its own.
    twice = records + [dict(r, id=r["id"] + "/again") for r in records]
    assert len(answer_pairs(twice, "em")) == len(pairs)
    hop = _record("d", "Who painted the Mona Lisa?", ["Leonardo da Vinci", "(another hop)"], 1, 0.0)
    assert answer_pairs([hop], "em") == []
    assert len(answer_pairs(records, "f1", margin=0.5)) == len(pairs)


def test_step_rewards_from_labels_and_a_clear_error_without_them():
    records = _groups()
    assert step_rewards(records, "mc") == [r["values"] for r in records]
    with pytest.raises(InputError, match="--process-reward prm"):
        step_rewards([dict(records[0], spre=None)], "spre")
    with pytest.raises(InputError, match="needs a PRM"):
        step_rewards(records, "prm", None)


# -- the shared trainer suite ----------------------------------------------------------------------------
def test_outcome_policy_gradient_moves_probability_to_right_answers(trainable):
    records = _groups()
    before = _right_prob(trainable, records)
    config = PolicyGradientConfig(
        alpha=1.0, process_reward="mc", epochs=30, lr=3e-3, batch_size=8, kl_coef=0.0
    )
    result = train_policy(trainable, records, config, rewards=step_rewards(records, "mc"), progress=False)
    after = _right_prob(trainable, records)
    assert after > before + 0.1, (before, after)
    assert result.history[-1]["train_reward"] > result.history[0]["train_reward"]


def test_process_only_policy_gradient_follows_the_step_rewards(trainable):
    # Outcomes say nothing (all zero); the step values favour the right answer.
    records = [dict(r, outcome=0.0, answer="") for r in _groups(right_value=0.9, wrong_value=0.1)]
    before = _right_prob(trainable, records)
    config = PolicyGradientConfig(
        alpha=0.0, process_reward="mc", epochs=30, lr=3e-3, batch_size=8, kl_coef=0.0
    )
    train_policy(trainable, records, config, rewards=step_rewards(records, "mc"), progress=False)
    assert _right_prob(trainable, records) > before + 0.1


def test_dpo_prefers_the_higher_valued_sibling(trainable):
    records = _groups(right_value=0.9, wrong_value=0.0)
    pairs = preference_pairs(records, "spre", 0.1)
    before = trainable.action_logprobs([p.decision for p in pairs], [p.better for p in pairs]).detach()
    worse_before = trainable.action_logprobs([p.decision for p in pairs], [p.worse for p in pairs]).detach()
    config = DPOConfig(beta=0.5, epochs=30, lr=3e-3, batch_size=8)
    result = train_policy(trainable, records, config, progress=False)
    after = trainable.action_logprobs([p.decision for p in pairs], [p.better for p in pairs]).detach()
    worse_after = trainable.action_logprobs([p.decision for p in pairs], [p.worse for p in pairs]).detach()
    assert (after - worse_after).mean() > (before - worse_before).mean() + 0.5
    assert result.history[-1]["pair_accuracy"] > 0.5


def test_dpo_with_answer_pairs_learns_from_wrong_trajectories_alone(trainable):
    records = [_record(qid, q, answers, 1, 0.0) for qid, q, answers in QUESTIONS_AND_ANSWERS]
    with pytest.raises(InputError, match="nothing to train on"):
        train_policy(trainable, records, DPOConfig(epochs=1), progress=False)
    before = _right_prob(trainable, [r for r in records for _ in range(3)])
    config = DPOConfig(beta=0.5, epochs=30, lr=3e-3, batch_size=8, answer_pairs=True)
    result = train_policy(trainable, records, config, progress=False)
    assert result.examples == 2 * len(QUESTIONS_AND_ANSWERS)
    assert _right_prob(trainable, [r for r in records for _ in range(3)]) > before + 0.1


def test_linear_head_learns_from_the_numbers_alone(encoder):
    """The few-weights head sees no text, only numbers such as the base probability: when the base
    policy's favourite is the right answer, outcome training makes it surer."""
    records = _groups()
    for r in records:
        for c, p in zip(r["steps"][-1]["candidates"], (0.45, 0.30, 0.25)):
            c["prob"] = p
    policy = TunedPolicy(None, PolicyHead(encoder, PolicyHeadConfig(hidden=0, embeddings=False)))
    assert sum(p.numel() for p in policy.trainable_parameters()) == 3 * (N_NUMERIC + 1)
    before = _right_prob(policy, records)
    assert before == pytest.approx(0.45, abs=1e-4)  # untrained is the base policy
    config = PolicyGradientConfig(
        alpha=1.0, process_reward="mc", epochs=30, lr=3e-2, batch_size=8, kl_coef=0.0, clip=10.0
    )
    train_policy(policy, records, config, rewards=step_rewards(records, "mc"), progress=False)
    assert _right_prob(policy, records) > before + 0.1


def test_kl_term_keeps_the_policy_near_where_it_started(encoder):
    records = _groups()
    moved = {}
    for kl in (0.0, 20.0):
        policy = TRAINABLE_FACTORIES["tuned-head"](encoder)
        config = PolicyGradientConfig(
            alpha=1.0, process_reward="mc", epochs=20, lr=3e-3, batch_size=8, kl_coef=kl
        )
        train_policy(policy, records, config, rewards=step_rewards(records, "mc"), progress=False)
        moved[kl] = _right_prob(policy, records)
    assert moved[20.0] < moved[0.0]


def test_nothing_to_train_on_is_a_clear_error(encoder):
    policy = TRAINABLE_FACTORIES["tuned-head"](encoder)
    records = [_record("a", "What is the capital of France?", ["Paris", "London"], 0, 1.0)]
    with pytest.raises(InputError, match="no preference pairs"):
        train_policy(policy, records, DPOConfig(), progress=False)
    with pytest.raises(InputError, match="--alpha"):
        PolicyGradientConfig(alpha=1.5)


# -- the head in the live graph ----------------------------------------------------------------------------
class TwoWayPolicy:
    """Retrieves with the question, keeps the first or the second sentence of the top passage, answers with
    one of three names: every stage after retrieval has a real choice."""

    def propose(self, stage, state):
        if stage == "retrieve":
            return [Candidate("retrieve", state["question"], {"query": state["question"]}, 1.0)]
        if stage == "extract":
            p = state["retrieved"][-1]
            out = []
            for i, s in enumerate(p["sentences"][:2]):
                item = {
                    "passage_id": p["id"],
                    "title": p["title"],
                    "sentence_index": i,
                    "text": s,
                    "score": 0.5,
                }
                out.append(Candidate("extract", f"{p['title']}: {s}", {"sentences": [item]}, 0.7 - 0.4 * i))
            return normalise(out)
        names = [("Tomas Varga", 0.5), ("Miriam Okafor", 0.3), ("Enugu", 0.2)]
        return normalise([Candidate("synthesize", a, {"type": "answer", "answer": a}, p) for a, p in names])


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield CachedSearch(as_search_backend(DenseRetriever(Corpus.load(CORPUS))))
    mp.undo()


def test_untrained_head_is_exactly_the_base_policy(search, encoder):
    base = TwoWayPolicy()
    tuned = TunedPolicy(base, PolicyHead(encoder))
    state = rollout(AgentSteps(search, tuned, max_hops=1, k=2), _start(search, tuned))[-1]
    for step in state["steps"]:
        base_probs = [c.get("base_prob", c["prob"]) for c in step["candidates"]]
        assert [c["prob"] for c in step["candidates"]] == pytest.approx(base_probs, abs=1e-5)


def _start(search, policy):
    return AgentSteps(search, policy, max_hops=1, k=2).run_node(
        "start",
        {
            "question": "Who wrote the novel The Quiet Orchard?",
            "mode": "sample",
            "seed": 3,
            "max_hops": 1,
            "k": 2,
        },
    )


def test_live_probabilities_equal_those_rebuilt_from_the_labels(search, encoder, tmp_path):
    """Training sees exactly the decisions the agent made: the head scores both the same way."""
    torch.manual_seed(0)
    tuned = TunedPolicy(TwoWayPolicy(), PolicyHead(encoder))
    for p in tuned.trainable_parameters():
        torch.nn.init.normal_(p, std=0.3)  # a head that really changes the probabilities
    labeler = Labeler(
        AgentSteps(search, tuned, max_hops=1, k=2),
        LabelConfig(trajectories=3, completions=0, max_hops=1, k=2),
    )
    out = tmp_path / "explored.jsonl"
    label_questions(labeler, load_questions(QUESTIONS)[:2], out, progress=False)
    records = read_labels(out)
    assert all(r["values"][:-1] == [None] * (len(r["steps"]) - 1) for r in records)  # explored only
    checked = 0
    for r in records:
        for step, d in zip(r["steps"], record_decisions(r)):
            if d is None:
                continue
            with torch.no_grad():
                (lp,) = tuned.all_logprobs([d])
            assert lp.exp().tolist() == pytest.approx([c["prob"] for c in step["candidates"]], abs=2e-4)
            assert d.base_logprobs != pytest.approx(
                [math.log(c["prob"]) for c in step["candidates"]], abs=1e-3
            )
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("shape", [{}, {"hidden": 0, "embeddings": False}], ids=["mlp", "linear"])
def test_saved_head_loads_back_the_same_and_bad_directories_are_clear_errors(encoder, tmp_path, shape):
    torch.manual_seed(1)
    tuned = TunedPolicy(TwoWayPolicy(), PolicyHead(encoder, PolicyHeadConfig(**shape)))
    for p in tuned.trainable_parameters():
        torch.nn.init.normal_(p, std=0.3)
    tuned.save(tmp_path / "head", {"command": "test"})
    loaded = load_policy_head(tmp_path / "head", TwoWayPolicy(), encoder=encoder)
    d = [d for d in record_decisions(_groups()[0]) if d is not None]
    assert torch.allclose(tuned.action_logprobs(d), loaded.action_logprobs(d), atol=1e-6)
    assert json.loads((tmp_path / "head" / "manifest.json").read_text())["command"] == "test"
    with pytest.raises(ModelError, match="train-policy"):
        load_policy_head(tmp_path / "missing", TwoWayPolicy(), encoder=encoder)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "manifest.json").write_text('{"kind": "something-else"}')
    with pytest.raises(ModelError, match="not a reasonrag policy head"):
        load_policy_head(tmp_path / "foreign", TwoWayPolicy(), encoder=encoder)


# -- the command line ----------------------------------------------------------------------------------------
def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_label_train_policy_then_ask_and_eval_with_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path / "cache"))
    labels = tmp_path / "labels.jsonl"
    common = ["--corpus", CORPUS, "--questions", QUESTIONS, "--split", "dev", "-k", "3", "--max-hops", "2"]
    argv = [
        "label",
        *common,
        "--out",
        str(labels),
        "--trajectories",
        "3",
        "--completions",
        "2",
        "--json",
        "--no-progress",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    out = tmp_path / "policy"
    argv = ["train-policy", "--labels", str(labels), "--out", str(out), "--alpha", "0.5", "--epochs", "2"]
    assert main([*argv, "--dev-labels", str(labels), "--json", "--no-progress"]) == 0
    trained = _last_json(capsys.readouterr().out)
    assert trained["questions"] == 2 and len(trained["history"]) == 3
    assert {"train_reward", "dev_reward", "kl"} <= set(trained["history"][-1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith("reasonrag train-policy --labels")
    assert manifest["data"]["labels"][0]["sha256"] and manifest["training"]["alpha"] == 0.5
    argv = [
        "ask",
        "Who wrote the novel The Quiet Orchard?",
        "--corpus",
        CORPUS,
        "-k",
        "3",
        "--policy",
        str(out),
    ]
    assert main([*argv, "--json"]) == 0
    assert _last_json(capsys.readouterr().out)["answer"]
    assert main(["eval", *common, "--policy", str(out), "--json", "--no-progress"]) == 0
    assert _last_json(capsys.readouterr().out)["n"] == 2
    dpo = tmp_path / "dpo"
    code = main(
        ["train-policy", "--labels", str(labels), "--out", str(dpo), "--algorithm", "dpo", "--margin", "0.01"]
    )
    err = capsys.readouterr().err
    assert code == 0 or "no preference pairs" in err  # tiny data may have no sibling pairs: a clear message
    argv = [
        "train-policy",
        "--labels",
        str(labels),
        "--out",
        str(dpo),
        "--algorithm",
        "dpo",
        "--answer-pairs",
    ]
    assert main([*argv, "--json", "--no-progress"]) == 0  # every answer step with a right candidate pairs
    with_answers = _last_json(capsys.readouterr().out)
    assert with_answers["examples"] > 0
    assert json.loads((dpo / "manifest.json").read_text())["training"]["answer_pairs"] is True
    linear = tmp_path / "linear"
    assert main(["train-policy", "--labels", str(labels), "--out", str(linear), "--head", "linear"]) == 0
    assert json.loads((linear / "manifest.json").read_text())["config"] == {
        "hidden": 0,
        "dropout": 0.1,
        "embeddings": False,
    }
    assert main(["eval", *common, "--policy", str(linear), "--json", "--no-progress"]) == 0
    assert _last_json(capsys.readouterr().out)["n"] == 2


def test_train_policy_without_data_or_with_a_bad_head_is_a_clear_error(tmp_path, capsys):
    assert main(["train-policy", "--out", str(tmp_path / "x")]) == 2
    assert "--labels" in capsys.readouterr().err
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in _groups()))
    argv = ["train-policy", "--labels", str(labels), "--out", str(tmp_path / "y"), "--head", "linear"]
    assert main([*argv, "--policy", str(tmp_path / "earlier")]) == 2
    assert "drop one of them" in capsys.readouterr().err
    assert main(["ask", "Who wrote it?", "--corpus", CORPUS, "--policy", str(tmp_path / "nope")]) == 2
    assert "train-policy" in capsys.readouterr().err


def test_online_rounds_resume_after_a_kill(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REASONRAG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "online"
    base = ["train-policy", "--online", "--corpus", CORPUS, "--split", "dev", "--out", str(out)]
    opts = [
        "--questions-per-round",
        "1",
        "--trajectories",
        "2",
        "-k",
        "2",
        "--max-hops",
        "2",
        "--epochs",
        "1",
    ]
    # Point the online loop at the tiny questions file through the corpus's questions.
    monkeypatch.setattr(Corpus, "questions", lambda self, split=None: load_questions(QUESTIONS)[:2])
    assert main([*base, *opts, "--rounds", "1", "--json", "--no-progress"]) == 0
    first = _last_json(capsys.readouterr().out)
    assert [r["round"] for r in first["rounds"]] == [1]
    assert main([*base, *opts, "--rounds", "2", "--json", "--no-progress"]) == 0  # as if killed after round 1
    second = _last_json(capsys.readouterr().out)
    assert [r["round"] for r in second["rounds"]] == [1, 2]
    assert second["rounds"][0] == first["rounds"][0]  # round 1 was not redone
    assert (out / "rounds" / "round-2.jsonl").is_file() and (out / "manifest.json").is_file()
    assert json.loads((out / "manifest.json").read_text())["rounds_done"] == 2
