"""Training the search policy offline from explored, labeled trajectories.

Two algorithms behind one trainer interface (`PolicyTrainer`), each with its own config:

- `PolicyGradientConfig`: policy gradient with per-step advantages. A trajectory's reward is
  `alpha * R_outcome + (1 - alpha) * mean_t r_t`; outcome and step rewards are normalised within the group
  of trajectories of the same question (GRPO with process supervision), and each action is credited with
  the normalised outcome and the mean normalised step reward of its step and the steps after it. A clipped
  ratio against the exploring policy and a KL term against the starting policy keep updates small.
- `DPOConfig`: ReasonRAG's process-level preference pairs: sibling actions taken from the same state whose
  SPRE (or MC) values differ by at least a margin, trained with the DPO loss against a frozen reference.

Both work on any `TrainablePolicy` (reasonrag.policies.trainable): the embedded policy's tuning head here, a
transformers causal LM in the bring-your-own-LLM modules.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from reasonrag.data.rewards import OUTCOME_METRICS
from reasonrag.errors import InputError
from reasonrag.policies.base import ANOTHER_HOP, NOT_ENOUGH
from reasonrag.policies.trainable import Decision, TrainablePolicy, evidence_text, safe_log

PROCESS_REWARDS = ("prm", "mc", "spre")


@dataclass
class PolicyGradientConfig:
    """Policy gradient with per-step, group-normalised advantages."""

    alpha: float = 0.5  # outcome weight: 1 is outcome only, 0 is process only
    process_reward: str = "prm"  # step rewards r_t: a PRM's scores, MC values, or SPRE values
    outcome: str = "em"  # R_outcome: em, f1 or cover_em of the trajectory's answer
    epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 256  # decisions per update
    clip: float = 0.2  # PPO-style ratio clip against the exploring policy
    kl_coef: float = 0.05  # KL(pi || starting policy) weight
    weight_decay: float = 0.0
    seed: int = 0

    algorithm = "pg"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if self.process_reward not in PROCESS_REWARDS:
            raise InputError(
                f"--process-reward {self.process_reward!r}: use one of {', '.join(PROCESS_REWARDS)}"
            )
        _check_common(self)


@dataclass
class DPOConfig:
    """DPO on process-level preference pairs (sibling actions with different values)."""

    beta: float = 0.1
    margin: float = 0.1  # least value difference between the two siblings of a pair
    value: str = "spre"  # which value ranks siblings: spre or mc
    epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 128  # pairs per update
    weight_decay: float = 0.0
    seed: int = 0
    answer_pairs: bool = False  # also pair the answer candidates of every synthesize step by their outcome
    outcome: str = "em"  # the outcome that ranks answer candidates

    algorithm = "dpo"

    def __post_init__(self) -> None:
        if self.value not in ("spre", "mc"):
            raise InputError(f"--pair-value {self.value!r}: use spre or mc")
        if self.beta <= 0:
            raise InputError(f"--beta must be positive, got {self.beta}")
        _check_common(self)


def _check_common(config: Any) -> None:
    if config.epochs < 1 or config.batch_size < 1:
        raise InputError("--epochs and --batch-size must be at least 1")
    if config.lr <= 0:
        raise InputError(f"--lr must be positive, got {config.lr}")
    if config.outcome not in OUTCOME_METRICS:
        raise InputError(f"--outcome {config.outcome!r}: use one of {', '.join(OUTCOME_METRICS)}")


# -- decisions out of trajectories ------------------------------------------------------------------------
_DECISIONS: OrderedDict[int, tuple[Mapping[str, Any], list[Decision | None]]] = OrderedDict()


def record_decisions(record: Mapping[str, Any]) -> list[Decision | None]:
    """One decision per step of a labeled (or explored) trajectory; None for steps without a choice.

    The same record gives the same Decision objects every time (a small cache), so features fixed for a
    training run are found again by the examples, the reward curve and the reference.
    """
    hit = _DECISIONS.get(id(record))
    if hit is not None and hit[0] is record:
        _DECISIONS.move_to_end(id(record))
        return hit[1]
    out = _record_decisions(record)
    _DECISIONS[id(record)] = (record, out)
    while len(_DECISIONS) > 200_000:
        _DECISIONS.popitem(last=False)
    return out


def _record_decisions(record: Mapping[str, Any]) -> list[Decision | None]:
    out: list[Decision | None] = []
    context: list[str] = []
    for t, step in enumerate(record["steps"]):
        cands = step.get("candidates") or []
        chosen = step.get("chosen")
        if len(cands) > 1 and isinstance(chosen, int) and 0 <= chosen < len(cands):
            out.append(
                Decision(
                    question=record["question"],
                    stage=step["stage"],
                    hop=int(step.get("hop", 0)),
                    context=list(context),
                    candidates=[str(c.get("text", "")) for c in cands],
                    base_logprobs=[safe_log(c.get("base_prob", c.get("prob", 0.0))) for c in cands],
                    chosen=chosen,
                    behaviour_logprob=safe_log(cands[chosen].get("prob", 0.0)),
                    meta={"question_id": record.get("question_id"), "record": record.get("id"), "step": t},
                )
            )
        else:
            out.append(None)
        if step["stage"] == "extract" and isinstance(step.get("observation"), list):
            context.extend(evidence_text(o) for o in step["observation"] if isinstance(o, Mapping))
    return out


def outcome_of(record: Mapping[str, Any], metric: str) -> float:
    answer = record.get("answer") or ""
    golden = record.get("golden_answers") or []
    if not answer or not golden:
        return float(record.get("outcome", 0.0)) if metric == "em" else 0.0
    return float(OUTCOME_METRICS[metric](answer, golden))


def step_rewards(records: Sequence[Mapping[str, Any]], source: str, prm: Any = None) -> list[list[float]]:
    """r_t for every step of every record: PRM scores, or the MC/SPRE values written by `reasonrag label`.

    A step without a value (explored without rollouts) falls back to the trajectory's last value.
    """
    if source == "prm":
        if prm is None:
            raise InputError("--process-reward prm needs a PRM (the shipped one, or --prm DIR)")
        from reasonrag.prm.evaluation import score_records

        return score_records(prm, list(records))
    key = "values" if source == "mc" else "spre"
    out = []
    for r in records:
        vals = r.get(key)
        if not isinstance(vals, list) or len(vals) != len(r["steps"]):
            raise InputError(
                f"trajectory {r.get('id')!r} has no {key!r}; label with rollouts (`reasonrag label "
                "--completions K`) or use --process-reward prm"
            )
        last = next((v for v in reversed(vals) if v is not None), 0.0)
        out.append([float(v) if v is not None else float(last) for v in vals])
    return out


def _normalise(values: list[float], weights: list[float]) -> list[float]:
    total = sum(weights)
    mean = sum(v * w for v, w in zip(values, weights)) / total
    var = sum(w * (v - mean) ** 2 for v, w in zip(values, weights)) / total
    std = math.sqrt(var)
    return [(v - mean) / (std + 1e-6) if std > 1e-6 else 0.0 for v in values]


def combined_returns(
    records: Sequence[Mapping[str, Any]], rewards: Sequence[Sequence[float]], alpha: float, outcome: str
) -> list[list[float]]:
    """Per step, the group-normalised advantage `alpha * o_hat + (1 - alpha) * mean_{t' >= t} r_hat_t'`."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.get("question_id") or r["question"]].append(i)
    adv: list[list[float]] = [[0.0] * len(r["steps"]) for r in records]
    for idx in groups.values():
        weights = [float(records[i].get("count", 1)) for i in idx]
        o_hat = _normalise([outcome_of(records[i], outcome) for i in idx], weights)
        flat = [(i, t, rewards[i][t]) for i in idx for t in range(len(records[i]["steps"]))]
        flat_w = [float(records[i].get("count", 1)) for i, _, _ in flat]
        r_norm = _normalise([v for _, _, v in flat], flat_w)
        r_hat: dict[tuple[int, int], float] = {(i, t): v for (i, t, _), v in zip(flat, r_norm)}
        for o, i in zip(o_hat, idx):
            n = len(records[i]["steps"])
            for t in range(n):
                future = [r_hat[(i, u)] for u in range(t, n)]
                adv[i][t] = alpha * o + (1 - alpha) * sum(future) / len(future)
    return adv


def trajectory_reward(
    record: Mapping[str, Any], rewards: Sequence[float], alpha: float, outcome: str
) -> float:
    """The combined reward `alpha * R_outcome + (1 - alpha) * mean_t r_t` of one trajectory."""
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    return alpha * outcome_of(record, outcome) + (1 - alpha) * mean


@dataclass
class Pair:
    decision: Decision
    better: int
    worse: int
    gap: float


def preference_pairs(
    records: Sequence[Mapping[str, Any]], value: str = "spre", margin: float = 0.1
) -> list[Pair]:
    """Sibling actions from the same state (same question, same actions before) whose values differ."""
    key_name = "spre" if value == "spre" else "values"
    siblings: dict[tuple, dict[str, tuple[float, Decision]]] = defaultdict(dict)
    for r in records:
        vals = r.get(key_name)
        if not isinstance(vals, list):
            continue
        decisions = record_decisions(r)
        prefix: tuple = (r.get("question_id") or r["question"],)
        for t, (step, d) in enumerate(zip(r["steps"], decisions)):
            if d is not None and vals[t] is not None:
                siblings[prefix + (step["stage"],)].setdefault(d.action, (float(vals[t]), d))
            prefix = prefix + (step["stage"], step.get("action"))
    pairs = []
    for options in siblings.values():
        items = list(options.items())
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                (ta, (va, da)), (tb, (vb, _)) = items[a], items[b]
                if abs(va - vb) < margin or ta not in da.candidates or tb not in da.candidates:
                    continue
                hi, lo = (ta, tb) if va > vb else (tb, ta)
                pairs.append(Pair(da, da.candidates.index(hi), da.candidates.index(lo), abs(va - vb)))
    return pairs


NOT_ANSWERS = (ANOTHER_HOP, NOT_ENOUGH)


def answer_pairs(
    records: Sequence[Mapping[str, Any]], outcome: str = "em", margin: float = 0.1
) -> list[Pair]:
    """Pairs of answer candidates of the same synthesize step, ranked by their own outcome.

    The value of answering with a candidate needs no rollout: it is the outcome of that answer against the
    gold one. So every answer step whose candidates hold a right and a wrong answer gives exact pairs, where
    sibling pairs need two explored trajectories that happen to differ there. Each state counts once.
    """
    metric = OUTCOME_METRICS[outcome]
    pairs: list[Pair] = []
    seen: set[tuple] = set()
    for r in records:
        golden = r.get("golden_answers") or []
        if not golden:
            continue
        for step, d in zip(r["steps"], record_decisions(r)):
            if d is None or step["stage"] != "synthesize":
                continue
            key = (r.get("question_id") or r["question"], tuple(d.context), tuple(d.candidates))
            if key in seen:
                continue
            seen.add(key)
            values = {
                i: float(metric(text, golden))
                for i, text in enumerate(d.candidates)
                if text not in NOT_ANSWERS
            }
            for hi, vh in values.items():
                for lo, vl in values.items():
                    if vh - vl >= margin:
                        pairs.append(Pair(d, hi, lo, vh - vl))
    return pairs


# -- the trainers -------------------------------------------------------------------------------------------
class PolicyTrainer(Protocol):
    """Builds training examples from trajectories and a loss over a batch of them."""

    def examples(
        self, records: Sequence[Mapping[str, Any]], rewards: Sequence[Sequence[float]] | None
    ) -> list: ...

    def loss(
        self, policy: TrainablePolicy, reference: TrainablePolicy, batch: list
    ) -> tuple[torch.Tensor, dict]: ...


def _kl(policy: Any, reference: Any, decisions: Sequence[Decision], logp: torch.Tensor) -> torch.Tensor:
    """KL(pi || ref): exact over the candidates when the policy lists them all, else the k3 estimate."""
    if hasattr(policy, "all_logprobs"):
        cur = policy.all_logprobs(decisions)
        with torch.no_grad():
            ref = reference.all_logprobs(decisions)
        return torch.stack([(c.exp() * (c - r)).sum() for c, r in zip(cur, ref)]).mean()
    with torch.no_grad():
        ref_lp = reference.action_logprobs(decisions)
    log_ratio = ref_lp - logp
    return (log_ratio.exp() - log_ratio - 1).mean()


@dataclass
class Example:
    decision: Decision
    advantage: float


class PolicyGradientTrainer:
    def __init__(self, config: PolicyGradientConfig) -> None:
        self.config = config

    def examples(
        self, records: Sequence[Mapping[str, Any]], rewards: Sequence[Sequence[float]] | None
    ) -> list:
        if rewards is None:
            raise InputError("policy gradient needs step rewards")
        adv = combined_returns(records, rewards, self.config.alpha, self.config.outcome)
        out = []
        for r, a in zip(records, adv):
            count = int(r.get("count", 1))
            for d, value in zip(record_decisions(r), a):
                if d is not None:
                    out.extend(Example(d, value) for _ in range(max(count, 1)))
        return out

    def loss(self, policy, reference, batch: list[Example]) -> tuple[torch.Tensor, dict]:
        decisions = [e.decision for e in batch]
        logp = policy.action_logprobs(decisions)
        adv = torch.tensor([e.advantage for e in batch], dtype=logp.dtype)
        behaviour = torch.tensor([d.behaviour_logprob for d in decisions], dtype=logp.dtype)
        ratio = (logp - behaviour).clamp(max=20).exp()
        clip = self.config.clip
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
        kl = _kl(policy, reference, decisions, logp)
        loss = -surrogate + self.config.kl_coef * kl
        return loss, {"surrogate": float(surrogate.detach()), "kl": float(kl.detach())}


class DPOTrainer:
    def __init__(self, config: DPOConfig) -> None:
        self.config = config

    def examples(
        self, records: Sequence[Mapping[str, Any]], rewards: Sequence[Sequence[float]] | None
    ) -> list:
        pairs = preference_pairs(records, self.config.value, self.config.margin)
        if self.config.answer_pairs:
            pairs += answer_pairs(records, self.config.outcome, self.config.margin)
        return pairs

    def loss(self, policy, reference, batch: list[Pair]) -> tuple[torch.Tensor, dict]:
        decisions = [p.decision for p in batch] * 2
        actions = [p.better for p in batch] + [p.worse for p in batch]
        logp = policy.action_logprobs(decisions, actions)
        with torch.no_grad():
            ref = reference.action_logprobs(decisions, actions)
        n = len(batch)
        margin = (logp[:n] - ref[:n]) - (logp[n:] - ref[n:])
        loss = -torch.nn.functional.logsigmoid(self.config.beta * margin).mean()
        return loss, {"pair_accuracy": float((margin > 0).float().mean())}


def make_trainer(config: PolicyGradientConfig | DPOConfig) -> PolicyTrainer:
    if isinstance(config, PolicyGradientConfig):
        return PolicyGradientTrainer(config)
    if isinstance(config, DPOConfig):
        return DPOTrainer(config)
    raise InputError(f"unknown policy training config {type(config).__name__}")


# -- measuring a policy on trajectories ------------------------------------------------------------------
def estimated_reward(
    policy: Any,
    records: Sequence[Mapping[str, Any]],
    rewards: Sequence[Sequence[float]],
    alpha: float,
    outcome: str = "em",
    batch: int = 512,
) -> float:
    """The combined reward the policy would get on these questions, by self-normalised importance
    weighting of the explored trajectories (weights per question, clipped): the training reward curve."""
    was = getattr(policy, "training", False)
    if hasattr(policy, "eval"):
        policy.eval()
    try:
        decisions_of = [record_decisions(r) for r in records]
        flat = [(i, d) for i, ds in enumerate(decisions_of) for d in ds if d is not None]
        logw = [0.0] * len(records)
        with torch.no_grad():
            for s in range(0, len(flat), batch):
                part = flat[s : s + batch]
                lp = policy.action_logprobs([d for _, d in part]).tolist()
                for (i, d), v in zip(part, lp):
                    logw[i] += v - d.behaviour_logprob
    finally:
        if hasattr(policy, "train"):
            policy.train(was)
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.get("question_id") or r["question"]].append(i)
    per_question = []
    for idx in groups.values():
        w = [min(math.exp(min(logw[i], 5.0)), 20.0) * float(records[i].get("count", 1)) for i in idx]
        rew = [trajectory_reward(records[i], rewards[i], alpha, outcome) for i in idx]
        per_question.append(sum(a * b for a, b in zip(w, rew)) / max(sum(w), 1e-12))
    return sum(per_question) / max(len(per_question), 1)


# -- the loop ---------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one entry per epoch
    examples: int = 0
    seconds: float = 0.0
    config: dict = field(default_factory=dict)


def train_policy(
    policy: TrainablePolicy,
    records: Sequence[Mapping[str, Any]],
    config: PolicyGradientConfig | DPOConfig,
    *,
    rewards: Sequence[Sequence[float]] | None = None,
    dev_records: Sequence[Mapping[str, Any]] | None = None,
    dev_rewards: Sequence[Sequence[float]] | None = None,
    reference: TrainablePolicy | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Update `policy` in place; the history holds loss and the estimated combined reward per epoch.

    `rewards` are the step rewards of `records` (see `step_rewards`); DPO needs none. `reference` (default:
    a frozen copy of the policy as given) anchors the KL term and the DPO loss.
    """
    from tqdm import tqdm

    trainer = make_trainer(config)
    examples = trainer.examples(records, rewards)
    if not examples:
        what = (
            "preference pairs (no siblings differ by --margin)"
            if isinstance(config, DPOConfig)
            else "decisions"
        )
        raise InputError(f"nothing to train on: the trajectories give no {what}")
    reference = reference if reference is not None else policy.frozen_copy()
    if hasattr(policy, "head") and hasattr(policy.head, "cache_features"):
        if hasattr(getattr(reference, "head", None), "share_features"):
            reference.head.share_features(policy.head)
        decisions = [e.decision for e in examples]
        for rs in (records, dev_records or []):
            decisions.extend(d for r in rs for d in record_decisions(r) if d is not None)
        policy.head.cache_features(list({id(d): d for d in decisions}.values()))
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    alpha = getattr(config, "alpha", 0.5)
    outcome = getattr(config, "outcome", "em")
    result = TrainResult(examples=len(examples), config={"algorithm": config.algorithm, **asdict(config)})
    t0 = time.perf_counter()

    def curve(epoch: int, losses: list[float], extra: dict) -> dict:
        entry: dict[str, Any] = {
            "epoch": epoch,
            "loss": round(sum(losses) / len(losses), 5) if losses else None,
        }
        entry.update({k: round(v, 5) for k, v in extra.items()})
        if rewards is not None:
            entry["train_reward"] = round(estimated_reward(policy, records, rewards, alpha, outcome), 5)
        if dev_records and dev_rewards is not None:
            entry["dev_reward"] = round(estimated_reward(policy, dev_records, dev_rewards, alpha, outcome), 5)
            # The outcome alone, comparable across alphas: what choosing alpha on dev looks at.
            entry["dev_success"] = (
                entry["dev_reward"]
                if alpha == 1.0
                else round(estimated_reward(policy, dev_records, dev_rewards, 1.0, outcome), 5)
            )
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        return entry

    result.history.append(curve(0, [], {}))
    if on_epoch:
        on_epoch(result.history[-1])
    bar = tqdm(
        range(1, config.epochs + 1), desc="train-policy", unit="epoch", disable=not progress, file=sys.stderr
    )
    for epoch in bar:
        order = list(range(len(examples)))
        rng.shuffle(order)
        losses: list[float] = []
        sums: dict[str, float] = defaultdict(float)
        if hasattr(policy, "train"):
            policy.train()
        for s in range(0, len(order), config.batch_size):
            batch = [examples[i] for i in order[s : s + config.batch_size]]
            loss, metrics = trainer.loss(policy, reference, batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            for k, v in metrics.items():
                sums[k] += v
        steps = max(len(losses), 1)
        entry = curve(epoch, losses, {k: v / steps for k, v in sums.items()})
        result.history.append(entry)
        bar.set_postfix(
            {
                k: v
                for k, v in (("loss", entry["loss"]), ("reward", entry.get("train_reward")))
                if v is not None
            }
        )
        if on_epoch:
            on_epoch(entry)
    if hasattr(policy, "eval"):
        policy.eval()
    if hasattr(policy, "head") and hasattr(policy.head, "cache_features"):
        policy.head.cache_features(None)
    result.seconds = round(time.perf_counter() - t0, 2)
    return result
