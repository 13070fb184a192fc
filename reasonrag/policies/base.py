"""The policy interface: for a stage and a state, candidate actions with probabilities.

Every policy (the embedded one, chat models, transformers models) implements `propose`; the agent picks
greedily or by sampling, and later stages (backtracking, best-of-N, policy training) reuse the same
candidates and their log-probabilities.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# The texts of the synthesize candidates that are not answers, shared by every policy, so that whatever
# reads decisions back (policy heads, answer pairs) knows them without knowing the policy.
ANOTHER_HOP = "(another hop)"
NOT_ENOUGH = "(not enough evidence)"


@dataclass(frozen=True)
class Candidate:
    """One proposed action. `action` is plain JSON so it can live in graph state and checkpoints."""

    stage: str
    text: str  # what a person reads: the query, the kept sentences, the answer
    action: dict[str, Any] = field(default_factory=dict)
    prob: float = 1.0

    @property
    def logprob(self) -> float:
        return math.log(max(self.prob, 1e-12))


@runtime_checkable
class Policy(Protocol):
    """Proposes candidate actions for a stage, most probable first, probabilities summing to 1."""

    def propose(self, stage: str, state: dict[str, Any]) -> list[Candidate]: ...


def normalise(candidates: list[Candidate]) -> list[Candidate]:
    """Probabilities summing to one, most probable first; drops exact duplicates of an action's text."""
    seen: dict[str, Candidate] = {}
    for c in candidates:
        if c.text in seen:
            prev = seen[c.text]
            seen[c.text] = Candidate(prev.stage, prev.text, prev.action, prev.prob + c.prob)
        else:
            seen[c.text] = c
    total = sum(max(c.prob, 0.0) for c in seen.values())
    if total <= 0:
        n = len(seen)
        out = [Candidate(c.stage, c.text, c.action, 1.0 / n) for c in seen.values()]
    else:
        out = [Candidate(c.stage, c.text, c.action, max(c.prob, 0.0) / total) for c in seen.values()]
    return sorted(out, key=lambda c: -c.prob)


def choose(
    candidates: list[Candidate],
    mode: str = "greedy",
    rng: random.Random | None = None,
    temperature: float = 1.0,
) -> int:
    """Index of the chosen candidate: the most probable (greedy) or a sample (sample)."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    if mode == "greedy":
        return max(range(len(candidates)), key=lambda i: candidates[i].prob)
    if mode != "sample":
        raise ValueError(f"unknown decoding mode {mode!r}: use 'greedy' or 'sample'")
    rng = rng or random.Random()
    weights = [max(c.prob, 1e-12) ** (1.0 / max(temperature, 1e-6)) for c in candidates]
    return rng.choices(range(len(candidates)), weights=weights, k=1)[0]
