"""Train a PRM from step labels: step-level binary cross-entropy on labeled steps only.

Works for any PRM with `step_logits(trajectories)` and `save(directory)`: the encoder PRM (heads only)
and the transformers PRM. Targets are the hard labels (any rollout succeeded) or the soft MC values;
steps without a label are masked out. After every epoch the model is measured on the dev labels, and
the best epoch by mean per-stage AUROC is what ends up in the output directory (written atomically,
so an interrupted run leaves the last best model intact).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from reasonrag.errors import InputError, LabelsError
from reasonrag.prm.evaluation import per_stage, score_records

TARGETS = ("soft", "hard", "gold", "mix")


@dataclass
class PRMTrainingConfig:
    # "hard": any rollout succeeded; "soft": the fraction (MC value); "gold": step correctness by gold
    # evidence (like PRM800K's human step labels); "mix": gold_weight * gold + (1 - gold_weight) * soft.
    target: str = "soft"
    gold_weight: float = 0.5
    epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32  # trajectories per step
    patience: int = 6  # epochs without a better dev AUROC before stopping
    seed: int = 0
    fraction: float = 1.0  # share of the training trajectories used (data-scaling runs)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise InputError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not 0.0 <= self.gold_weight <= 1.0:
            raise InputError(f"--gold-weight must lie in [0, 1], got {self.gold_weight}")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("--epochs and --batch-size must be at least 1")
        if not 0.0 < self.fraction <= 1.0:
            raise InputError(f"--fraction must lie in (0, 1], got {self.fraction}")


def targets(record: dict, target: str, gold_weight: float = 0.5) -> list[float | None]:
    """Per-step training targets; None masks a step out of the loss."""
    soft = [None if v is None else float(v) for v in record["values"]]
    if target == "hard":
        return [None if v is None else float(v) for v in record["labels"]]
    if target == "soft":
        return soft
    gold = record.get("gold")
    if gold is None:
        raise InputError(
            "--target gold/mix needs gold step labels: the labels' questions must carry gold evidence"
        )
    if target == "gold":
        return [None if g is None else float(g) for g in gold]
    return [
        s if g is None else (float(g) if s is None else gold_weight * float(g) + (1 - gold_weight) * s)
        for g, s in zip(gold, soft)
    ]


def attach_gold(records: list[dict], questions: dict) -> int:
    """Add each record's gold step labels (from its question's gold evidence); returns how many got them."""
    from reasonrag.prm.evaluation import gold_step_labels

    n = 0
    for r in records:
        q = questions.get(r.get("question_id"))
        if q is not None:
            r["gold"] = gold_step_labels(r["steps"], q)
            n += 1
    return n


def subsample(records: list[dict], fraction: float, seed: int) -> list[dict]:
    """A share of the training questions (whole questions, so no question is half in)."""
    if fraction >= 1.0:
        return records
    qids = sorted({r.get("question_id", r.get("id")) for r in records})
    random.Random(seed).shuffle(qids)
    keep = set(qids[: max(1, round(fraction * len(qids)))])
    return [r for r in records if r.get("question_id", r.get("id")) in keep]


def batch_loss(
    model: Any, batch: list[dict], target: str, gold_weight: float = 0.5
) -> tuple[torch.Tensor, int]:
    logits = model.step_logits(batch)
    xs, ys = [], []
    for lg, r in zip(logits, batch):
        ts = targets(r, target, gold_weight)
        mask = torch.tensor([t is not None for t in ts])
        if mask.any():
            xs.append(lg[mask])
            ys.append(torch.tensor([t for t in ts if t is not None], dtype=lg.dtype))
    if not xs:
        return torch.zeros((), requires_grad=True), 0
    x, y = torch.cat(xs), torch.cat(ys)
    return F.binary_cross_entropy_with_logits(x, y), int(y.numel())


def check_dev_labels(dev: list[dict], target: str = "soft") -> None:
    """Raise unless some stage of `dev` holds both a positive and a negative step: otherwise no AUROC is
    defined and no epoch could be told better than another."""
    key = "gold" if target in ("gold", "mix") else "labels"
    seen: dict[str, set[int]] = {}
    for r in dev:
        for step, label in zip(r["steps"], r.get(key) or []):
            if label is not None:
                seen.setdefault(step["stage"], set()).add(int(label))
    if not any(classes == {0, 1} for classes in seen.values()):
        which = "gold step labels" if key == "gold" else "MC step labels"
        found = ", ".join(f"{stage}: {sorted(c)}" for stage, c in sorted(seen.items())) or "none"
        raise LabelsError(
            f"the dev labels hold no stage with both a positive and a negative {which} ({found}), so no "
            "epoch can be chosen on them; label more dev questions, or more --completions per step"
        )


def dev_metrics(model: Any, records: list[dict], batch_size: int = 64, against: str = "mc") -> dict[str, Any]:
    """Per-stage AUROC on dev against the MC labels, or against gold step labels ("gold")."""
    scores = score_records(model, records, batch_size)
    stages = [[s["stage"] for s in r["steps"]] for r in records]
    labels = [r["gold"] if against == "gold" else r["labels"] for r in records]
    metrics = per_stage(scores, labels, stages)
    aurocs = [m["auroc"] for m in metrics.values() if m["auroc"] is not None]
    return {
        "against": against,
        "per_stage": metrics,
        "mean_auroc": round(sum(aurocs) / len(aurocs), 4) if aurocs else None,
    }


def train_prm(
    model: Any,
    train: list[dict],
    dev: list[dict],
    out: str | Path,
    config: PRMTrainingConfig | None = None,
    *,
    progress: bool = True,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit `model` on `train`, keep the best epoch on `dev` in `out`; returns the training history."""
    from tqdm import tqdm

    config = config or PRMTrainingConfig()
    train = subsample(train, config.fraction, config.seed)
    if not train:
        raise InputError("no training trajectories")
    if not dev:
        raise InputError("no dev trajectories: early stopping needs --dev-labels")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, Any]] = []
    best, best_epoch, waited = -1.0, 0, 0
    t0 = time.perf_counter()
    labeled = sum(
        sum(1 for t in targets(r, config.target, config.gold_weight) if t is not None) for r in train
    )
    against = "gold" if config.target in ("gold", "mix") else "mc"
    if against == "gold" and not all("gold" in r for r in dev):
        raise InputError("--target gold/mix stops early on gold step labels: the dev labels need them too")
    check_dev_labels(dev, config.target)
    if hasattr(model, "cache_features"):
        model.cache_features(train + dev)
    bar = tqdm(
        range(1, config.epochs + 1), desc="train-prm", unit="epoch", disable=not progress, file=sys.stderr
    )
    for epoch in bar:
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        total, count = 0.0, 0
        for i in range(0, len(order), config.batch_size):
            batch = [train[j] for j in order[i : i + config.batch_size]]
            loss, n = batch_loss(model, batch, config.target, config.gold_weight)
            if n == 0:
                continue
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * n
            count += n
        dev_m = dev_metrics(model, dev, against=against)
        entry = {"epoch": epoch, "train_loss": round(total / max(count, 1), 5), **dev_m}
        history.append(entry)
        score = dev_m["mean_auroc"] if dev_m["mean_auroc"] is not None else -entry["train_loss"]
        bar.set_postfix(
            {
                k: v
                for k, v in (("loss", entry["train_loss"]), ("dev_auroc", dev_m["mean_auroc"]))
                if v is not None
            }
        )
        if score > best:
            best, best_epoch, waited = score, epoch, 0
            model.save(
                out,
                extra={
                    **(manifest or {}),
                    "training": {
                        "config": asdict(config),
                        "train_trajectories": len(train),
                        "train_labeled_steps": labeled,
                        "dev_trajectories": len(dev),
                        "best_epoch": epoch,
                        "dev": dev_m,
                        "seconds": round(time.perf_counter() - t0, 1),
                    },
                },
            )
        else:
            waited += 1
            if waited >= config.patience:
                break
    if hasattr(model, "cache_features"):
        model.cache_features(None)
    return {
        "out": str(out),
        "best_epoch": best_epoch,
        "best_dev_mean_auroc": best,
        "epochs_run": len(history),
        "train_trajectories": len(train),
        "train_labeled_steps": labeled,
        "seconds": round(time.perf_counter() - t0, 1),
        "history": history,
    }
