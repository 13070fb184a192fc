"""Sibling ranking for the verifier: the candidates of one state are trained and judged against each other.

A critic keeps the best-scoring of a state's N candidates, so what it needs is a verifier that ranks
siblings, not one that is calibrated across questions: pooled AUROC rewards telling an easy state's steps
from a hard state's, which the critic never asks. Training batches are built from whole sibling groups and
a listwise loss (the softmax mass the group puts on its right candidates) is added to the step BCE, as in
listwise learning to rank; `sibling_choice` measures the same thing on dev.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import torch

from reasonrag.data.types import STAGES
from reasonrag.prm.cross_encoder import step_prob


def stage_group(e: dict) -> str:
    """The stage a labeled step is reported and grouped under: "another hop" apart from the answers it
    competes with."""
    return "continue" if e.get("kind") == "continue" else e["stage"]


def state_key(e: dict) -> tuple[str, str, str]:
    """The state a labeled step was a candidate of: its question, its stage group, and the path before it."""
    return (
        str(e.get("question_id") or e["question"]),
        stage_group(e),
        json.dumps(e["steps"][:-1], sort_keys=True),
    )


def sibling_groups(examples: Sequence[dict]) -> list[list[int]]:
    """Indices of `examples` by state, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(state_key(e), []).append(i)
    return list(groups.values())


def grouped_batches(groups: Sequence[list[int]], batch_size: int, seed: str) -> list[list[int]]:
    """Batches of whole sibling groups (a group larger than a batch is cut), in a seeded order."""
    order = list(groups)
    random.Random(seed).shuffle(order)
    batches: list[list[int]] = []
    current: list[int] = []
    for g in order:
        g = g[:batch_size]
        if current and len(current) + len(g) > batch_size:
            batches.append(current)
            current = []
        current = current + g
    if current:
        batches.append(current)
    return batches


def listwise_loss(logits: torch.Tensor, labels: Sequence[int], groups: Sequence[int]) -> torch.Tensor:
    """Mean over the groups holding both a right and a wrong candidate of -log(the softmax mass on the
    right ones); zero (with a gradient path) when the batch has no such group."""
    losses = []
    label = torch.tensor([float(x) for x in labels])
    gid = torch.tensor(list(groups))
    for g in torch.unique(gid):
        sel = gid == g
        y = label[sel]
        if 0 < y.sum() < len(y):
            z = logits[sel]
            losses.append(torch.logsumexp(z, 0) - torch.logsumexp(z[y > 0], 0))
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def sibling_choice(scores: Sequence[float], examples: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Top-1 accuracy among the sibling candidates of each state of the agent's paths (examples with a
    `question_id`), per stage: of the states with a right candidate, how often the highest score picks a
    right one, beside the policy's own pick (the most probable) on the same states."""
    states: dict[tuple, list[tuple[float, float, int]]] = {}
    for score, e in zip(scores, examples):
        if "question_id" not in e or e.get("kind") == "continue":
            continue
        states.setdefault(state_key(e), []).append((score, step_prob(e["steps"][-1]), e["label"]))
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        groups = [
            g for (_, st, _), g in states.items() if st == stage and len(g) > 1 and any(x[2] for x in g)
        ]
        if not groups:
            continue
        by_score = [max(g, key=lambda x: x[0])[2] for g in groups]
        by_prob = [max(g, key=lambda x: x[1])[2] for g in groups]
        out[stage] = {
            "states": len(groups),
            "verifier": round(100 * sum(by_score) / len(groups), 1),
            "policy": round(100 * sum(by_prob) / len(groups), 1),
        }
    return out
