"""PRM beam search over steps: keep the W best partial paths by aggregated step score.

From every partial path in the beam, the policy's best candidates for the next stage are executed
(`AgentSteps.expand`) and all of them are scored by the PRM in one call; the W best children by path score
(the aggregation of their step scores, `min` by default) form the next beam, and paths that reach an
answer are set aside. With `min`, a path's score can only fall as it grows, so the search stops as soon
as the best finished path scores at least as high as every path still in the beam.

Backtracking composes with it: when the best finished path scores below the backtrack threshold, the
best pruned partial path that scored higher is reopened as a new beam (at most `max_backtracks` times).
Everything pruned stays in the result (`beam.pruned`), every scored expansion goes to the trace and to
`stream_mode="custom"` listeners.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from reasonrag.agent.nodes import AgentSteps, emit_event
from reasonrag.agent.state import apply_update, next_node
from reasonrag.data.rewards import aggregate
from reasonrag.errors import InputError

MAX_BEAM = 16


class BeamState(TypedDict, total=False):
    question: str
    max_hops: int
    k: int
    mode: str
    seed: int
    steps: list[dict]
    answer: str
    status: str
    path_score: float | None
    trace: list[dict]
    beam: dict
    nodes: int
    prm_calls: int
    backtracks: int
    seconds: float


def _score(state: dict, aggregation: str) -> float:
    return aggregate([s["score"] for s in state["steps"]], aggregation)


def _summary(state: dict, score: float) -> dict:
    last = state["steps"][-1]
    return {
        "steps": len(state["steps"]),
        "last_stage": last["stage"],
        "last_action": last["action"],
        "path_score": round(score, 4),
        "answer": state.get("answer") if next_node(state) is None else None,
    }


def beam_search(nodes: AgentSteps, state: dict, width: int, *, expand: int | None = None) -> dict:
    """Run beam search from a started state; returns the final state of the best path, with the search."""
    if not 1 <= width <= MAX_BEAM:
        raise InputError(f"beam width must lie in 1..{MAX_BEAM}, got {width}")
    if nodes.batch_scorer is None:
        raise InputError("beam search needs step scores: pass a prm (or scorer)")
    cfg = nodes.backtrack_config
    aggregation = cfg.aggregation if cfg is not None else "min"
    expand = expand or max(width, 2)
    t0 = time.perf_counter()
    finished: list[tuple[float, dict]] = []
    pruned: list[tuple[float, dict]] = []
    trace: list[dict] = []
    counts = {"nodes": 0, "prm_calls": 0, "backtracks": 0}

    def record(child: dict, score: float, kept: str) -> None:
        event = {"event": "beam", **_summary(child, score), "kept": kept}
        trace.append(event)
        emit_event(event, "beam")

    def run(beam: list[dict]) -> None:
        while beam:
            children: list[tuple[float, dict]] = []
            for parent in beam:
                stage = next_node(parent)
                options = nodes.expand(parent, stage, expand)
                scores = nodes.batch_scorer(parent, [o["step"] for o in options])
                counts["nodes"] += len(options)
                counts["prm_calls"] += len(options)
                for option, score in zip(options, scores):
                    step = dict(option["step"], score=float(score))
                    child = apply_update(parent, {**option["update"], "steps": [step]})
                    children.append((_score(child, aggregation), child))
            children.sort(key=lambda c: -c[0])
            beam = []
            for score, child in children:
                if next_node(child) is None:
                    finished.append((score, child))
                    record(child, score, "finished")
                elif len(beam) < width:
                    beam.append(child)
                    record(child, score, "beam")
                else:
                    pruned.append((score, child))
                    record(child, score, "pruned")
            best_done = max((s for s, _ in finished), default=None)
            if aggregation == "min" and best_done is not None and beam:
                if best_done >= max(_score(b, aggregation) for b in beam):
                    for b in beam:
                        pruned.append((_score(b, aggregation), b))
                        record(b, pruned[-1][0], "pruned")
                    break

    run([state])
    while cfg is not None and counts["backtracks"] < cfg.max_backtracks:
        best_done = max((s for s, _ in finished), default=-1.0)
        if best_done >= cfg.threshold or not pruned:
            break
        pruned.sort(key=lambda c: -c[0])
        score, reopened = pruned.pop(0)
        if score <= best_done:
            break
        counts["backtracks"] += 1
        event = {
            "event": "backtrack",
            "reason": f"best finished path scores {best_done:.2f}, below the threshold {cfg.threshold:.2f}",
            "reopened": _summary(reopened, score),
        }
        trace.append(event)
        emit_event(event, "backtrack")
        run([reopened])
    if not finished:
        raise RuntimeError("beam search ended without a finished path")
    best_score, best = max(finished, key=lambda c: c[0])
    return {
        "question": best["question"],
        "steps": best["steps"],
        "answer": best.get("answer", ""),
        "status": best.get("status"),
        "path_score": best_score,
        "trace": trace,
        "beam": {
            "width": width,
            "expand": expand,
            "aggregation": aggregation,
            "finished": [_summary(c, s) for s, c in sorted(finished, key=lambda c: -c[0])],
            "pruned": [_summary(c, s) for s, c in sorted(pruned, key=lambda c: -c[0])],
        },
        "nodes": counts["nodes"],
        "prm_calls": counts["prm_calls"],
        "backtracks": counts["backtracks"],
        "seconds": round(time.perf_counter() - t0, 4),
    }


def beam_graph(nodes: AgentSteps, width: int, *, expand: int | None = None, checkpointer: Any = None):
    """A compiled graph whose one node runs `beam_search`: the final state holds the whole search."""
    from langgraph.graph import END, START, StateGraph

    if not 1 <= width <= MAX_BEAM:
        raise InputError(f"beam width must lie in 1..{MAX_BEAM}, got {width}")

    def search(state: BeamState) -> dict:
        started = apply_update({}, nodes.start(dict(state)))
        started["steps"] = []
        return beam_search(nodes, started, width, expand=expand)

    graph = StateGraph(BeamState)
    graph.add_node("beam_search", search)
    graph.add_edge(START, "beam_search")
    graph.add_edge("beam_search", END)
    return graph.compile(checkpointer=checkpointer, name="reasonrag-beam")
