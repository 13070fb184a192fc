"""The online loop: explore with the current policy, label, update; round after round, resumable.

Every round writes its explored trajectories to `OUT/rounds/round-R.jsonl` (appended question by question,
so `reasonrag label`'s resume applies), then trains on them starting from the policy the last round left,
saves the policy to OUT atomically and records the round in `OUT/rounds.json`. Killed at any point, the
same command picks up at the question or round where it stopped; the KL anchor is the policy the first round
started from, kept in `OUT/reference`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reasonrag.data.types import Question
from reasonrag.errors import InputError, ModelError
from reasonrag.training.labeling import LabelConfig, Labeler, label_questions, read_labels
from reasonrag.training.policy_training import (
    DPOConfig,
    PolicyGradientConfig,
    step_rewards,
    train_policy,
    trajectory_reward,
)


@dataclass
class OnlineConfig:
    rounds: int = 3
    questions_per_round: int = 50
    trajectories: int = 4  # sampled per question per round
    completions: int = 0  # MC rollouts per step (0: explore only, rewards from the PRM)
    max_hops: int = 3
    k: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.questions_per_round < 1:
            raise InputError("--rounds and --questions-per-round must be at least 1")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _read_rounds(path: Path) -> dict[str, Any]:
    """The rounds done so far (none without the file); a damaged file is an error naming it, not a guess."""
    if not path.is_file():
        return {"rounds": []}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise ModelError(f"{path}: unreadable ({exc}); remove the directory to start over") from None
    if not isinstance(state, dict) or not isinstance(state.get("rounds"), list):
        raise ModelError(f"{path}: not the rounds of `train-policy --online`; remove it to start over")
    return state


def train_online(
    out: str | Path,
    questions: Sequence[Question],
    policy: Any,
    make_labeler: Callable[[Any, LabelConfig], Labeler],
    config: PolicyGradientConfig | DPOConfig,
    online: OnlineConfig,
    *,
    prm: Any = None,
    corpus: str = "",
    manifest: dict[str, Any] | None = None,
    load_policy: Callable[[Path], Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict[str, Any]:
    """Run (or resume) the rounds; returns {"rounds": [...]} as also written to OUT/rounds.json.

    `make_labeler(policy, label_config)` builds the explorer around the current policy; `load_policy(dir)`
    reads a saved policy back (to resume and to load the reference).
    """
    out = Path(out)
    (out / "rounds").mkdir(parents=True, exist_ok=True)
    need = online.rounds * online.questions_per_round
    if len(questions) < need:
        raise InputError(
            f"{online.rounds} rounds x {online.questions_per_round} questions need {need} questions; "
            f"only {len(questions)} given"
        )
    state_path = out / "rounds.json"
    state = _read_rounds(state_path)
    done = len(state["rounds"])
    reference_dir = out / "reference"
    if not (reference_dir / "manifest.json").is_file():
        # Saved from a copy: the policy's own manifest (every later save's base) must not claim this role.
        anchor = policy.frozen_copy() if hasattr(policy, "frozen_copy") else policy
        anchor.save(reference_dir, {"role": "the policy the first round started from (KL anchor)"})
    reference = load_policy(reference_dir).frozen_copy() if load_policy else policy.frozen_copy()
    if done and load_policy:  # from the policy of the last round recorded as done (older runs: OUT)
        snapshot = _snapshot(out, done)
        policy = load_policy(snapshot if (snapshot / "manifest.json").is_file() else out)
        log(f"resuming after round {done} of {online.rounds}")
    saved = {**(manifest or {}), "online": asdict(online)}
    process = getattr(config, "process_reward", "prm")
    alpha, outcome = getattr(config, "alpha", 0.5), getattr(config, "outcome", "em")
    for r in range(done, online.rounds):
        t0 = time.perf_counter()
        qs = list(questions[r * online.questions_per_round : (r + 1) * online.questions_per_round])
        label_config = LabelConfig(
            trajectories=online.trajectories,
            completions=online.completions,
            max_hops=online.max_hops,
            k=online.k,
            seed=online.seed + r,
        )
        path = out / "rounds" / f"round-{r + 1}.jsonl"
        label_questions(make_labeler(policy, label_config), qs, path, corpus=corpus, progress=progress)
        explore_s = time.perf_counter() - t0
        records = read_labels(path)
        needs_rewards = isinstance(config, PolicyGradientConfig)
        rewards = step_rewards(records, process, prm) if needs_rewards or prm is not None else None
        explored = None
        if rewards is not None:
            total = sum(int(x.get("count", 1)) for x in records)
            explored = sum(
                trajectory_reward(x, rw, alpha, outcome) * int(x.get("count", 1))
                for x, rw in zip(records, rewards)
            ) / max(total, 1)
        success = sum(float(x.get("outcome", 0)) * int(x.get("count", 1)) for x in records) / max(
            sum(int(x.get("count", 1)) for x in records), 1
        )
        result = train_policy(
            policy, records, config, rewards=rewards, reference=reference, progress=progress
        )
        entry = {
            "round": r + 1,
            "questions": len(qs),
            "trajectories": len(records),
            "explore_success": round(success, 4),
            "explore_reward": None if explored is None else round(explored, 4),
            "explore_seconds": round(explore_s, 2),
            "train_seconds": result.seconds,
            "seconds": round(time.perf_counter() - t0, 2),
            "history": result.history,
        }
        # This round's policy is kept whole before the round counts as done, so a kill at any point resumes
        # from the policy the round it records ended with (never a half-saved or a later one).
        policy.save(_snapshot(out, r + 1), {**saved, "rounds_done": r + 1})
        state["rounds"].append(entry)
        _write_json(state_path, state)
        policy.save(out, {**saved, "rounds_done": r + 1})
        log(
            f"round {r + 1}/{online.rounds}: {len(qs)} questions, explored success {success:.3f}"
            + (f", combined reward {explored:.3f}" if explored is not None else "")
            + f", {entry['seconds']:.0f}s"
        )
    rounds_done = len(state["rounds"])
    if rounds_done and _saved_rounds(out) != rounds_done:  # a kill came after the last round was recorded
        policy.save(out, {**saved, "rounds_done": rounds_done})
    return state


def _snapshot(out: Path, n: int) -> Path:
    return out / "rounds" / f"policy-{n}"


def _saved_rounds(out: Path) -> int | None:
    """The rounds the policy saved in OUT has had (None when its manifest is missing or unreadable)."""
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("rounds_done")
    except (OSError, ValueError, AttributeError):
        return None
