"""The transformers policy on a tiny random Llama: prompts, sampling with log-probs, training plumbing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from llm_fakes import tiny_llama_policy

from reasonrag.data.rewards import normalize_answer
from reasonrag.errors import InputError, ModelError
from reasonrag.policies.base import Candidate
from reasonrag.policies.chat_model import (
    PRIMERS,
    candidates_from,
    parse_reply,
    view_of_decision,
    view_of_state,
)
from reasonrag.policies.llm import llm_policy
from reasonrag.policies.trainable import Decision, TrainablePolicy
from reasonrag.policies.transformers_lm import TransformersPolicy, target_completion

Q = "Where was the director of the film Harbor Lights born?"
HL = "Harbor Lights is a 1987 drama film directed by Miriam Okafor."
BORN = "She was born in Enugu, Nigeria."
RETRIEVED = [
    {
        "id": "hl",
        "title": "Harbor Lights (film)",
        "sentences": [HL, "It was shot in Lisbon."],
        "score": 0.5,
        "hop": 1,
    },
    {
        "id": "mo",
        "title": "Miriam Okafor",
        "sentences": ["Miriam Okafor is a film director.", BORN],
        "score": 0.5,
        "hop": 1,
    },
]
EVIDENCE = [{"passage_id": "hl", "title": "Harbor Lights (film)", "sentence_index": 0, "text": HL, "hop": 0}]
STATE = {"question": Q, "hop": 1, "max_hops": 3, "retrieved": RETRIEVED, "evidence": [], "seen": []}


def decision(
    stage: str, candidates: list[str], chosen: int = 0, context: list[str] | None = None, **meta
) -> Decision:
    return Decision(
        question=Q,
        stage=stage,
        hop=1,
        context=list(context or []),
        candidates=candidates,
        base_logprobs=[math.log(1 / len(candidates))] * len(candidates),
        chosen=chosen,
        behaviour_logprob=math.log(1 / len(candidates)),
        meta=meta,
    )


@pytest.fixture(scope="module")
def policy() -> TransformersPolicy:
    return tiny_llama_policy()


def test_is_a_policy_and_a_trainable_policy(policy):
    assert isinstance(policy, TrainablePolicy) and hasattr(policy, "propose")


def test_prompts_use_the_chat_template_when_the_tokenizer_has_one():
    view = view_of_state("retrieve", STATE)
    templated = tiny_llama_policy(chat_template=True).prompt_text(view)
    assert templated.startswith("<|system|>") and templated.endswith("<|assistant|>\n<query>")
    plain = tiny_llama_policy().prompt_text(view)
    assert "<|system|>" not in plain and plain.endswith("Reply:\n<query>")


def test_retrieve_samples_distinct_completions_weighted_by_their_log_probs(policy):
    cands = policy.propose("retrieve", STATE)
    # Real alternatives for backtracking and best-of-N: distinct queries, most probable first.
    assert len(cands) > 1
    assert len({c.text for c in cands}) == len(cands)
    assert [c.prob for c in cands] == sorted((c.prob for c in cands), reverse=True) and cands[-1].prob > 0
    assert all(c.action == {"query": c.text} for c in cands)
    # The same sampling by hand: each distinct completion weighs exp(its summed token log-probs).
    view = view_of_state("retrieve", STATE)
    prompt = policy.prompt_ids(view)
    completions = policy._sample(prompt, 0)
    assert len(completions) == policy.config.n_candidates  # n samples, merged by the query they decide
    with torch.no_grad():
        logps = policy.sequence_logprobs([prompt] * len(completions), completions).tolist()
    parsed = [
        parse_reply(view, PRIMERS["retrieve"] + policy.tokenizer.decode(c, skip_special_tokens=True))
        for c in completions
    ]
    expected = candidates_from(view, [(p, math.exp(lp)) for p, lp in zip(parsed, logps)])
    assert [c.text for c in cands] == [c.text for c in expected]
    assert [c.prob for c in cands] == pytest.approx([c.prob for c in expected], abs=1e-5)
    # ... which propose reads off generate's own logits, with no second forward pass.
    scored = policy._sample_scored(prompt, 0)
    assert [ids for ids, _ in scored] == completions
    assert [lp for _, lp in scored] == pytest.approx(logps, abs=1e-4)


def test_sampling_is_seeded_by_the_prompt(policy):
    again = tiny_llama_policy()
    assert again.propose("retrieve", STATE) == policy.propose("retrieve", STATE)
    other = tiny_llama_policy(seed=0, n_candidates=4, temperature=0.8)
    other.config.seed = 1
    assert other.propose("retrieve", STATE) != policy.propose("retrieve", STATE)
    greedy = tiny_llama_policy(temperature=0.0)
    assert len(greedy.propose("retrieve", STATE)) == 1


def test_action_logprobs_sum_the_completion_tokens_normalised_over_the_candidates(policy):
    d = decision(
        "synthesize",
        ["Enugu", "(another hop)", "(not enough evidence)"],
        context=[f"Harbor Lights (film): {HL}"],
    )
    view = view_of_decision(d)
    got = policy.action_logprobs([d, d, d], [0, 1, 2])
    sums = []
    for text in ["<answer>Enugu</answer>", f"<query>{Q}</query>", "<answer>insufficient</answer>"]:
        prompt, completion = policy.prompt_ids(view), policy.completion_ids(text)
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = policy.model(input_ids=ids).logits[0].float()
        sums.append(
            sum(
                torch.log_softmax(logits[len(prompt) - 1 + i], -1)[tok].item()
                for i, tok in enumerate(completion)
            )
        )
        assert completion[-1] == policy.tokenizer.sep_token_id  # the completion ends with the model's eos
    total = math.log(sum(math.exp(x) for x in sums))
    assert got.tolist() == pytest.approx([x - total for x in sums], abs=1e-4)
    prompt = policy.prompt_ids(view)
    with torch.no_grad():
        plain = policy.sequence_logprobs([prompt], [policy.completion_ids("<answer>Enugu</answer>")])
    assert plain.item() == pytest.approx(sums[0], abs=1e-4)


def test_batched_log_probs_equal_one_at_a_time_and_carry_gradients(policy):
    ds = [
        decision("retrieve", ["Miriam Okafor birthplace", "Harbor Lights"]),
        decision(
            "synthesize",
            ["Enugu", "Lisbon"],
            context=[f"Harbor Lights (film): {HL}", f"Miriam Okafor: {BORN}"],
        ),
        decision("extract", [f"Harbor Lights (film): {HL} | Miriam Okafor: {BORN}", "(no evidence)"]),
    ]
    together = policy.action_logprobs(ds)
    alone = torch.cat([policy.action_logprobs([d]) for d in ds])
    assert together.detach().tolist() == pytest.approx(alone.detach().tolist(), abs=1e-4)
    together.sum().backward()
    assert all(p.grad is not None for p in policy.trainable_parameters())
    policy.model.zero_grad()


def test_target_completions_decide_each_candidate():
    d = decision(
        "extract",
        [f"Harbor Lights (film): {HL} | Miriam Okafor: {BORN}", f"Miriam Okafor: {BORN}", "(no evidence)"],
    )
    view = view_of_decision(d)
    assert [s["text"] for s in view.sentences] == [f"Harbor Lights (film): {HL}", f"Miriam Okafor: {BORN}"]
    assert [target_completion(view, c) for c in d.candidates] == [
        "[1] [2]</evidence>",
        "[2]</evidence>",
        "none</evidence>",
    ]
    for text in d.candidates:  # and reading the completion back gives the same candidate
        (cand,) = candidates_from(
            view, [(parse_reply(view, "<evidence>" + target_completion(view, text)), 1.0)]
        )
        assert cand.text == text
    synth = view_of_decision(decision("synthesize", ["x"]))
    assert target_completion(synth, "(another hop: Okafor birthplace)") == "<query>Okafor birthplace</query>"
    with pytest.raises(InputError):
        target_completion(view, "Not a shown sentence.")


def test_taught_actions_are_proposed_through_the_real_generate_path():
    """A few steps of maximising the log-probs of one answer and one evidence choice: the live
    prompts equal the decision prompts, so propose (generate, parse, weigh) returns what was taught."""
    policy = tiny_llama_policy(n_candidates=3)
    synth_state = dict(
        STATE,
        evidence=EVIDENCE
        + [dict(EVIDENCE[0], passage_id="mo", title="Miriam Okafor", sentence_index=1, text=BORN)],
    )
    extract_view = view_of_state("extract", STATE)
    teach = [
        decision(
            "synthesize",
            ["Enugu", "Lisbon"],
            context=[f"Harbor Lights (film): {HL}", f"Miriam Okafor: {BORN}"],
        ),
        decision("extract", [f"Miriam Okafor: {BORN}", "(no evidence)"], sentences=extract_view.sentences),
    ]
    prompts = [policy.prompt_ids(view_of_decision(d)) for d in teach]
    completions = [policy.completion_ids(target_completion(view_of_decision(d), d.action)) for d in teach]
    opt = torch.optim.Adam(policy.trainable_parameters(), lr=1e-2)
    policy.train()
    for _ in range(100):  # supervised: the taught completions' own log-probs
        loss = -policy.sequence_logprobs(prompts, completions).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    answer = policy.propose("synthesize", synth_state)[0]
    assert (
        answer.action["type"] == "answer" and normalize_answer(answer.text) == "enugu" and answer.prob > 0.5
    )
    kept = policy.propose("extract", STATE)[0]
    assert [(s["passage_id"], s["sentence_index"], s["text"]) for s in kept.action["sentences"]] == [
        ("mo", 1, BORN)
    ]


def test_frozen_copy_keeps_the_weights_and_takes_no_gradients(policy):
    d = decision("synthesize", ["Enugu", "Lisbon"])
    ref = policy.frozen_copy()
    assert ref.action_logprobs([d]).item() == pytest.approx(policy.action_logprobs([d]).item(), abs=1e-5)
    assert not ref.trainable_parameters()


def test_save_and_load_round_trip(policy, tmp_path: Path):
    d = decision("synthesize", ["Enugu", "Lisbon"])
    with torch.no_grad():
        before = policy.action_logprobs([d, d], [0, 1]).tolist()
    path = policy.save(tmp_path / "policy", {"training": {"algorithm": "dpo"}})
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "reasonrag-transformers-policy" and manifest["training"] == {
        "algorithm": "dpo"
    }
    for again in (TransformersPolicy.from_pretrained(path), llm_policy(f"hf:{path}"), llm_policy(str(path))):
        assert again.config == policy.config
        with torch.no_grad():
            assert again.action_logprobs([d, d], [0, 1]).tolist() == pytest.approx(before, abs=1e-5)
    assert llm_policy(f"hf:{path}", n_candidates=2).config.n_candidates == 2


def test_lora_trains_only_adapters_and_saves_a_merged_model(tmp_path: Path):
    pytest.importorskip("peft")
    base = tiny_llama_policy()
    lora = tiny_llama_policy(lora_r=4)
    names = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    d = decision("synthesize", ["Enugu", "Lisbon"])
    with torch.no_grad():
        assert lora.action_logprobs([d]).item() == pytest.approx(base.action_logprobs([d]).item(), abs=1e-5)
    opt = torch.optim.Adam(lora.trainable_parameters(), lr=1e-2)
    for _ in range(3):
        loss = -lora.action_logprobs([d]).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        trained = lora.action_logprobs([d]).item()
    assert trained > base.action_logprobs([d]).item()
    loaded = TransformersPolicy.from_pretrained(lora.save(tmp_path / "lora"), lora_r=0)
    assert not hasattr(loaded.model, "peft_config")  # merged: loads without peft
    with torch.no_grad():
        assert loaded.action_logprobs([d]).item() == pytest.approx(trained, abs=1e-4)


def test_a_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="no model directory"):
        llm_policy(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(ModelError, match="no model directory"):
        llm_policy("./no/such/model")


def test_extract_without_new_sentences_needs_no_model(policy):
    assert policy.propose("extract", dict(STATE, retrieved=[])) == [
        Candidate("extract", "(no evidence)", {"sentences": []}, 1.0)
    ]


# -- training through reasonrag.policy_training ------------------------------------------------------------
def _record(
    rid: str, query: int, answer: int, values: list[float], spre: list[float], outcome: float
) -> dict:
    queries, answers = ["director birthplace", "Harbor Lights"], ["Nigeria", "Portugal"]
    kept = {
        "passage_id": "hl",
        "title": "Harbor Lights (film)",
        "sentence_index": 0,
        "text": HL,
        "score": 0.9,
    }
    steps = [
        {
            "stage": "retrieve",
            "hop": 0,
            "action": queries[query],
            "candidates": [{"text": q, "prob": 0.5} for q in queries],
            "chosen": query,
            "observation": [{"id": "hl", "title": "Harbor Lights (film)", "score": 0.7, "text": HL}],
        },
        {
            "stage": "extract",
            "hop": 0,
            "action": HL,
            "candidates": [{"text": HL, "prob": 1.0}],
            "chosen": 0,
            "observation": [kept],
        },
        {
            "stage": "synthesize",
            "hop": 0,
            "action": answers[answer],
            "candidates": [{"text": a, "prob": 0.5} for a in answers],
            "chosen": answer,
            "observation": answers[answer],
        },
    ]
    return {
        "id": rid,
        "question_id": "q1",
        "question": Q,
        "golden_answers": ["Nigeria"],
        "steps": steps,
        "labels": [int(v > 0) for v in values],
        "values": values,
        "spre": spre,
        "answer": answers[answer],
        "outcome": outcome,
        "count": 1,
    }


RECORDS = [
    _record("a", 0, 0, [0.5, 0.5, 1.0], [0.45, 0.5, 1.0], 1.0),  # searched the birthplace, answered right
    _record("b", 0, 1, [0.5, 0.5, 0.0], [0.45, 0.5, 0.0], 0.0),  # same search, answered wrong
    _record("c", 1, 1, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 0.0),  # a vaguer search, then wrong
]


def explored_by(policy: TransformersPolicy) -> list[dict]:
    """RECORDS as if `policy` had explored them: each candidate's probability is the policy's own."""
    import copy

    from reasonrag.training.policy_training import record_decisions

    records = copy.deepcopy(RECORDS)
    retrieve, _, synthesize = record_decisions(RECORDS[0])  # (decisions are cached per record object)
    with torch.no_grad():
        probs = (
            policy.action_logprobs([retrieve, retrieve, synthesize, synthesize], [0, 1, 0, 1]).exp().tolist()
        )
    for r in records:
        for c, p in zip(r["steps"][0]["candidates"], probs[:2]):
            c["prob"] = p
        for c, p in zip(r["steps"][2]["candidates"], probs[2:]):
            c["prob"] = p
    return records


ACTIONS = ["good query", "vague query", "right answer", "wrong answer"]


def _logps(policy: TransformersPolicy) -> tuple[dict[str, float], dict[str, float]]:
    """Each action's log pi (`action_logprobs`, normalised over its decision's candidates) and its plain
    summed token log-prob (its completion given the decision prompt)."""
    from reasonrag.training.policy_training import record_decisions

    retrieve, _, synthesize = record_decisions(RECORDS[0])
    pairs = [(retrieve, 0), (retrieve, 1), (synthesize, 0), (synthesize, 1)]
    views = [view_of_decision(d) for d, _ in pairs]
    prompts = [policy.prompt_ids(v) for v in views]
    completions = [
        policy.completion_ids(target_completion(v, d.candidates[a])) for v, (d, a) in zip(views, pairs)
    ]
    with torch.no_grad():
        pi = policy.action_logprobs([d for d, _ in pairs], [a for _, a in pairs]).tolist()
        plain = policy.sequence_logprobs(prompts, completions).tolist()
    return dict(zip(ACTIONS, pi)), dict(zip(ACTIONS, plain))


def _moved(before: dict[str, float], after: dict[str, float]) -> str:
    return ", ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in ACTIONS)


def test_training_moves_logprobs():
    """DPO on SPRE sibling pairs and policy gradient on combined rewards, through the shared trainer
    (`reasonrag.policy_training.train_policy`): the preferred / positive-advantage actions gain
    log-probability and the others lose it."""
    from reasonrag.training.policy_training import DPOConfig, PolicyGradientConfig, step_rewards, train_policy

    dpo = tiny_llama_policy()
    (pi0, plain0) = _logps(dpo)
    result = train_policy(dpo, RECORDS, DPOConfig(beta=0.5, epochs=6, lr=5e-3, batch_size=8), progress=False)
    (pi1, plain1) = _logps(dpo)
    assert (
        result.examples == 2
    )  # the right answer over the wrong after one search; the good query over the vague
    for after, before in ((pi1, pi0), (plain1, plain0)):
        assert (
            after["right answer"] > before["right answer"] and after["wrong answer"] < before["wrong answer"]
        )
        assert after["good query"] > before["good query"] and after["vague query"] < before["vague query"]

    pg = tiny_llama_policy()
    records = explored_by(pg)  # on-policy: the importance ratios start at one
    (pg0, pg_plain0) = _logps(pg)
    config = PolicyGradientConfig(
        alpha=0.5, process_reward="mc", epochs=3, lr=5e-3, kl_coef=0.01, batch_size=16
    )
    history = train_policy(pg, records, config, rewards=step_rewards(records, "mc"), progress=False).history
    (pg1, pg_plain1) = _logps(pg)
    # The answers' advantages have one sign each (the queries' are mixed: the good one led to both endings).
    assert pg1["right answer"] > pg0["right answer"] and pg1["wrong answer"] < pg0["wrong answer"]
    assert history[-1]["train_reward"] > history[0]["train_reward"]
    print(  # shown with -s: the numbers behind this test
        f"\nDPO log pi: {_moved(pi0, pi1)}\nDPO summed token log-probs: {_moved(plain0, plain1)}"
        f"\nPG log pi: {_moved(pg0, pg1)}\nPG summed token log-probs: {_moved(pg_plain0, pg_plain1)}"
        f"\nPG estimated combined reward: {history[0]['train_reward']} -> {history[-1]['train_reward']}"
    )
