"""Best-of-N: sample N trajectories and keep one by a selection rule.

Rules: `min` (the seed's rule: the path whose weakest step scores best), `prod`, `mean`, `last` (PRM
step scores aggregated), `orm` (the final step scored alone, without its path: an outcome-style judge),
`combined` (`alpha * orm + (1 - alpha) * mean step score`), `vote` (the most frequent answer, ties
broken by the best `min` score) and `weighted` (votes weighted by each path's `min` score). The N samples share their prefixes' work through the policy's reading
cache and a search cache, and are scored by the PRM as they are made.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypedDict

from reasonrag.data.rewards import aggregate, combined_reward, normalize_answer
from reasonrag.errors import InputError

SELECTORS = ("min", "prod", "mean", "last", "orm", "combined", "vote", "weighted")


def check_selector(select: str) -> str:
    if select not in SELECTORS:
        raise InputError(f"unknown selection rule {select!r}: use one of {', '.join(SELECTORS)}")
    return select


def selection_scores(samples: Sequence[dict], select: str, alpha: float = 0.5) -> list[float]:
    """The score each sample gets under a rule (higher is better); `vote` scores by answer frequency."""
    check_selector(select)
    if select == "vote":
        keys = [normalize_answer(s.get("answer") or "") for s in samples]
        counts = {k: keys.count(k) for k in keys}
        # Ties between equally frequent answers go to the better path by min step score.
        return [counts[k] + 1e-3 * (s.get("min") or 0.0) if k else 0.0 for k, s in zip(keys, samples)]
    if select == "weighted":
        # Score-weighted voting: an answer's votes are its samples' path scores (min of the step scores),
        # so many weak paths to one answer can lose to a few strong ones.
        keys = [normalize_answer(s.get("answer") or "") for s in samples]
        for s in samples:
            if s.get("min") is None:
                raise InputError("selection rule 'weighted' needs step scores: give the agent a PRM")
        mass: dict[str, float] = {}
        for k, s in zip(keys, samples):
            mass[k] = mass.get(k, 0.0) + float(s["min"])
        return [mass[k] + 1e-3 * float(s["min"]) if k else 0.0 for k, s in zip(keys, samples)]
    out = []
    for s in samples:
        scores = s.get("scores") or []
        if not scores or any(x is None for x in scores):
            raise InputError(f"selection rule {select!r} needs step scores: give the agent a PRM")
        if select == "orm":
            out.append(float(s["orm"]))
        elif select == "combined":
            out.append(combined_reward(float(s["orm"]), scores, alpha))
        else:
            out.append(aggregate(scores, select))
    return out


def select_sample(samples: Sequence[dict], select: str, alpha: float = 0.5) -> int:
    """Index of the kept sample: best score under the rule, the earliest on ties."""
    scores = selection_scores(samples, select, alpha)
    return max(range(len(samples)), key=lambda i: (scores[i], -i))


def summarise_sample(state: dict, orm: float | None) -> dict[str, Any]:
    steps = state.get("steps") or []
    scores = [s.get("score") for s in steps]
    has = bool(scores) and all(x is not None for x in scores)
    return {
        "answer": state.get("answer", ""),
        "status": state.get("status"),
        "scores": scores,
        "min": aggregate(scores, "min") if has else None,
        "orm": orm,
        "nodes": len(steps) + sum(len(a["steps"]) for a in state.get("abandoned") or []),
        "backtracks": state.get("backtracks", 0),
    }


class BestOfNState(TypedDict, total=False):
    question: str
    mode: str
    max_hops: int
    k: int
    seed: int
    steps: list[dict]
    answer: str
    status: str
    samples: list[dict]
    selected: int
    select: str
    nodes: int
    backtracks: int
    seconds: float


def best_of_n_graph(
    inner, nodes, n: int, select: str, alpha: float, *, prm: Any = None, checkpointer: Any = None
):
    """A graph that runs `inner` N times with sampling and keeps one trajectory by `select`."""
    from langgraph.graph import END, START, StateGraph

    from reasonrag.agent.state import recursion_limit

    check_selector(select)
    if n < 1:
        raise InputError(f"best_of must be at least 1, got {n}")
    if select != "vote" and nodes.scorer is None:
        raise InputError(f"selection rule {select!r} needs step scores: pass a prm (or scorer)")

    def orm_scores(question: str, finals: list[dict]) -> list[float | None]:
        """Each sample's final step scored alone, all N in one PRM call."""
        lasts = [(f.get("steps") or [None])[-1] for f in finals]
        if prm is not None:
            alone = [{"question": question, "steps": [last]} for last in lasts if last is not None]
            scores = iter(prm.score(alone)) if alone else iter(())
            return [float(next(scores)[0]) if last is not None else None for last in lasts]
        if nodes.scorer is not None:
            return [
                float(nodes.scorer({"question": question, "steps": []}, last)) if last is not None else None
                for last in lasts
            ]
        return [None] * len(finals)

    def sample_n(state: BestOfNState) -> dict:
        t0 = time.perf_counter()
        max_hops = int(state.get("max_hops") or nodes.max_hops)
        base_seed = int(state.get("seed") or 0)
        limit = recursion_limit(max_hops, 16)
        finals, seconds = [], []
        for i in range(n):
            t_sample = time.perf_counter()
            finals.append(
                inner.invoke(
                    {
                        "question": state["question"],
                        "max_hops": max_hops,
                        "k": state.get("k") or nodes.k,
                        "mode": "sample",
                        "seed": base_seed + i,
                    },
                    config={"recursion_limit": limit},
                )
            )
            seconds.append(round(time.perf_counter() - t_sample, 4))
        orms = orm_scores(finals[0]["question"], finals)
        samples = [dict(summarise_sample(f, orm), seconds=sec) for f, orm, sec in zip(finals, orms, seconds)]
        chosen = select_sample(samples, select, alpha)
        best = finals[chosen]
        return {
            "question": best["question"],
            "steps": best.get("steps", []),
            "answer": best.get("answer", ""),
            "status": best.get("status"),
            "samples": samples,
            "selected": chosen,
            "select": select,
            "nodes": sum(s["nodes"] for s in samples),
            "backtracks": sum(s["backtracks"] for s in samples),
            "seconds": round(time.perf_counter() - t0, 4),
        }

    graph = StateGraph(BestOfNState)
    graph.add_node("sample_n", sample_n)
    graph.add_edge(START, "sample_n")
    graph.add_edge("sample_n", END)
    return graph.compile(checkpointer=checkpointer, name="reasonrag-best-of-n")
