"""What the policy trainers need from a policy: decisions it made, and differentiable log-probs of them.

A decision is one choice of the agent, in plain text: the question, the stage and hop, the evidence kept so
far, the candidates it had (with the probabilities the *untrained* policy gave them) and the one it took.
Label records (`reasonrag label`) and explored trajectories hold everything needed to rebuild decisions, so
training never re-runs retrieval or the reader.

Any policy that can give `log pi(candidate | decision)` as a torch tensor with gradients can be trained by
the same trainers (`reasonrag.training.policy_training`): the embedded policy's tuning head does it over the
enumerated candidates; a transformers causal LM does it as the sum of the candidate text's token log-probs
given a prompt built from the decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass
class Decision:
    """One choice made by the agent, rebuilt from a trajectory step."""

    question: str
    stage: str  # retrieve | extract | synthesize
    hop: int
    context: list[str]  # the evidence kept before this step, "Title: sentence" each
    candidates: list[str]  # the candidate actions' texts, as the policy proposed them
    base_logprobs: list[float]  # log-probs the untrained (base) policy gave the candidates
    chosen: int  # index of the candidate taken
    behaviour_logprob: float = 0.0  # log-prob of the chosen candidate under the policy that explored
    meta: dict[str, Any] = field(default_factory=dict)  # question id, trajectory id, step index, ...

    @property
    def action(self) -> str:
        return self.candidates[self.chosen]


def evidence_text(item: dict[str, Any]) -> str:
    """How one kept sentence reads in a decision's context (the same in labels and in live states)."""
    return f"{item.get('title', '')}: {item.get('text', '')}"


def safe_log(p: float) -> float:
    return math.log(max(float(p), 1e-12))


@runtime_checkable
class TrainablePolicy(Protocol):
    """A policy the trainers can update.

    `action_logprobs(decisions, actions)` returns a 1-D float tensor: `log pi(candidates[a] | decision)` for
    each decision and action index `a` (the chosen one when `actions` is None), differentiable with respect
    to `trainable_parameters()`. `frozen_copy()` is the reference for KL and DPO; `save(path)` writes a
    directory that the policy's own loader reads back.
    """

    def action_logprobs(self, decisions: Sequence[Decision], actions: Sequence[int] | None = None) -> Any: ...

    def trainable_parameters(self) -> list[Any]: ...

    def frozen_copy(self) -> TrainablePolicy: ...

    def save(self, path: str | Path, manifest: dict[str, Any] | None = None) -> Path: ...
