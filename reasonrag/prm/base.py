"""The process reward model interface: per-step scores in [0, 1] for whole trajectories at once.

A trajectory is plain JSON: ``{"question": str, "steps": [{"stage", "action", "observation", ...}]}`` --
the agent's own steps, or the lines of a labels file. Every PRM scores all steps of a trajectory together
(one call, batched over trajectories), with a separate head, model or prompt per stage. The generic form
`score_steps(problem, steps)` serves reasoning chains outside RAG: each step is a string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from reasonrag.data.types import STAGES

GENERIC_STAGE = "synthesize"  # the head a plain reasoning step is scored with when no stage is given


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def observation_text(step: Mapping[str, Any]) -> str:
    """What a step brought back, as text: passage titles and leads, kept sentences, or the answer."""
    obs = step.get("observation")
    if isinstance(obs, str):
        return obs
    if not isinstance(obs, list):
        return "" if obs is None else str(obs)
    parts = []
    for item in obs:
        if not isinstance(item, Mapping):
            parts.append(str(item))
        elif step.get("stage") == "retrieve":
            lead = item.get("text") or ""
            parts.append(
                f"{item.get('title', '')}: {_clip(lead, 160)}" if lead else str(item.get("title", ""))
            )
        else:
            parts.append(f"{item.get('title', '')}: {item.get('text', '')}".strip(": "))
    return " | ".join(parts)


def step_text(step: Mapping[str, Any]) -> str:
    """The text a PRM reads for one step: its action and what came back."""
    if isinstance(step, str):
        return step
    stage = step.get("stage", GENERIC_STAGE)
    action = str(step.get("action", ""))
    obs = observation_text(step)
    if stage == "retrieve":
        return f"search: {action} -> {obs}"
    if stage == "extract":
        return f"evidence: {obs or action or '(none)'}"
    if stage == "synthesize":
        return f"answer: {obs or action}"
    return f"{action} -> {obs}" if obs else action


def generic_trajectory(problem: str, steps: Sequence[str], stages: Sequence[str] | None = None) -> dict:
    """A reasoning chain outside RAG as a trajectory: each step a string, scored with `stages` heads."""
    if stages is not None and len(stages) != len(steps):
        raise ValueError(f"got {len(steps)} steps but {len(stages)} stages")
    stages = list(stages) if stages is not None else [GENERIC_STAGE] * len(steps)
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}: use one of {', '.join(STAGES)}")
    return {
        "question": problem,
        "steps": [{"stage": st, "action": text, "observation": ""} for text, st in zip(steps, stages)],
    }


def check_trajectory(traj: Mapping[str, Any]) -> None:
    """Raise ValueError unless `traj` has a question and steps with known stages."""
    if not isinstance(traj, Mapping) or not isinstance(traj.get("question"), str):
        raise ValueError("a trajectory is a dict with a 'question' string and a 'steps' list")
    steps = traj.get("steps")
    if not isinstance(steps, list):
        raise ValueError("a trajectory needs a 'steps' list")
    for i, s in enumerate(steps):
        if not isinstance(s, Mapping) or s.get("stage") not in STAGES:
            raise ValueError(f"step {i} has no known stage (use one of {', '.join(STAGES)})")


@runtime_checkable
class PRM(Protocol):
    """Scores every step of every trajectory in [0, 1]: the estimated chance the path still ends right."""

    def score(self, trajectories: Sequence[Mapping[str, Any]]) -> list[list[float]]: ...

    def score_steps(
        self, problem: str, steps: Sequence[str], stages: Sequence[str] | None = None
    ) -> list[float]: ...


class PRMBase:
    """Shared plumbing: the generic form on top of `score`.

    A trainable PRM also has `step_logits(trajectories) -> list[Tensor]` (one logit per step, with grad)
    and `save(directory)`; `reasonrag train-prm` trains any such model with step-level BCE.
    """

    def score(self, trajectories: Sequence[Mapping[str, Any]]) -> list[list[float]]:  # pragma: no cover
        raise NotImplementedError

    def score_steps(
        self, problem: str, steps: Sequence[str], stages: Sequence[str] | None = None
    ) -> list[float]:
        return self.score([generic_trajectory(problem, steps, stages)])[0]


def step_scorer(prm: PRM):
    """The `scorer(state, step)` hook of `build_agent`: the new step scored in the light of the path so far."""

    def scorer(state: Mapping[str, Any], step: Mapping[str, Any]) -> float:
        return score_candidates(prm, state, [step])[0]

    return scorer


def score_candidates(prm: PRM, state: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> list[float]:
    """Each of several candidate next steps of one state, scored after the path so far, in one call.

    PRMs that can score only the last step of each trajectory (`score_last`) do so; others score the
    whole trajectories and the last score is kept.
    """
    path = list(state.get("steps") or [])
    trajectories = [{"question": state["question"], "steps": path + [dict(s)]} for s in steps]
    if hasattr(prm, "score_last"):
        return [float(x) for x in prm.score_last(trajectories)]
    return [float(s[-1]) for s in prm.score(trajectories)]
