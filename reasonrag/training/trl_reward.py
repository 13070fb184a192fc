"""Our combined reward as a TRL reward function, for GRPO on the prompts `reasonrag export` writes.

TRL's `GRPOTrainer(reward_funcs=[fn])` calls `fn(prompts, completions, **columns)` and wants one float per
completion. `combined_reward_function` gives such an `fn`: it reads each completion as the policy's
tagged reply (`<answer>...</answer>` and so on), and scores it

    alpha * R_outcome + (1 - alpha) * mean_t r_t

R_outcome is the answer's match against the row's `golden_answers` (EM, F1 or cover-EM); r_t are a PRM's
scores of the row's earlier steps (`context`) with the new step appended, so the process part judges the
path the reply completes. Without a PRM the reward is the outcome alone. A reply that decides no action
earns 0. The outcome is known only for an answer, so GRPO with this reward is meant for the synthesize
rows; on a retrieve or extract row the reward is the PRM's view of the path (outcome 0).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reasonrag.data.rewards import OUTCOME_METRICS, combined_reward
from reasonrag.errors import InputError, LLMOutputError
from reasonrag.llm.tags import parse_decision, parse_query


def completion_text(completion: Any) -> str:
    """The text of a completion: a string (standard) or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content", ""))
    return "".join(str(m.get("content", "")) for m in completion if isinstance(m, Mapping))


def reply_step(stage: str, text: str) -> dict | None:
    """The step a reply decides, as a PRM reads it; None when it decides nothing."""
    try:
        if stage == "synthesize":
            kind, value = parse_decision(text)
            answer = value if kind == "answer" else ("(another hop)" if kind == "continue" else "")
            return {
                "stage": stage,
                "action": answer or "not enough evidence",
                "observation": answer,
                "kind": kind,
            }
        if stage == "retrieve":
            return {"stage": stage, "action": parse_query(text), "observation": ""}
    except LLMOutputError:
        return None
    return {"stage": stage, "action": text.strip(), "observation": ""} if text.strip() else None


def combined_reward_function(
    prm: Any = None, *, alpha: float = 0.5, outcome: str = "f1"
) -> Callable[..., list[float]]:
    """A TRL reward function (`fn(prompts, completions, **columns) -> list[float]`) of our combined reward."""
    if outcome not in OUTCOME_METRICS:
        raise InputError(f"outcome {outcome!r}: use one of {', '.join(OUTCOME_METRICS)}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    metric = OUTCOME_METRICS[outcome]

    def reasonrag_combined_reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        stage: Sequence[str],
        question: Sequence[str],
        golden_answers: Sequence[Sequence[str]],
        context: Sequence[str] | None = None,
        **_: Any,
    ) -> list[float]:
        steps = [reply_step(st, completion_text(c)) for st, c in zip(stage, completions)]
        outcomes = [
            float(metric(s["observation"], list(gold))) if s and s.get("kind") == "answer" else 0.0
            for s, gold in zip(steps, golden_answers)
        ]
        if prm is None:
            return [o if s is not None else 0.0 for s, o in zip(steps, outcomes)]
        paths = [
            {"question": q, "steps": [*json.loads(context[i] if context else "[]"), s]}
            for i, (q, s) in enumerate(zip(question, steps))
            if s is not None
        ]
        scores = iter(prm.score(paths)) if paths else iter(())
        out = []
        for s, o in zip(steps, outcomes):
            out.append(combined_reward(o, next(scores), alpha) if s is not None else 0.0)
        return out

    return reasonrag_combined_reward
