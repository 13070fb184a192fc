"""The agent's state: plain types only, so any checkpointer saves it, and the reducers that grow and cut the path.

Every step of the trajectory (stage, action, what it saw, what came back, its probability and score) lives
in this state, so checkpoints, traces and streams all see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypedDict

from reasonrag.data.limits import MAX_BACKTRACKS

NOT_ENOUGH_EVIDENCE = "not enough evidence"
USER_REASON = "rejected by the user"  # why a step a person rejected was abandoned
# run_agent's recursion limit allows this many backtracks (the config caps lower)
MAX_BACKTRACKS_BOUND = MAX_BACKTRACKS


# The channels that grow by appending (reducer: `path_reducer`); `start` empties them with RESET, so a new
# question on a thread (a conversation) carries nothing of the last one.
LIST_CHANNELS = ("steps", "branches", "abandoned", "finished", "trace")
RESET = {"truncate": 0, "add": []}


def path_reducer(old: list | None, new: list | dict) -> list:
    """Append a list; or, for a backtrack, `{"truncate": n, "add": [...]}` cuts the path back to n items."""
    old = old or []
    if isinstance(new, dict):
        return old[: int(new.get("truncate", len(old)))] + list(new.get("add", []))
    return old + list(new)


class AgentState(TypedDict, total=False):
    question: str
    question_id: str
    hop: int  # the current hop, from 0
    max_hops: int
    k: int  # passages per retrieve step
    mode: str  # "greedy" or "sample"
    seed: int
    retrieved: list[dict]  # every passage retrieved so far: {id, title, sentences, score, hop}
    seen: list[str]  # ids of every passage retrieved so far
    evidence: list[dict]  # kept sentences: {passage_id, title, sentence_index, text, score, hop}
    steps: Annotated[list[dict], path_reducer]  # the trajectory (the path taken; abandoned steps move out)
    answer: str
    status: str  # "running", "answered", "insufficient"
    # Backtracking (only written when a scorer is given): branch points of the path, with their candidates
    # and which were tried; abandoned branches with their scores and why; every event in order.
    branches: Annotated[list[dict], path_reducer]
    forced: dict | None  # the candidate a backtrack chose for the step it returns to
    backtracks: int
    abandoned: Annotated[list[dict], path_reducer]
    finished: Annotated[list[dict], path_reducer]  # every ending reached: answer, status, path score
    trace: Annotated[list[dict], path_reducer]  # steps and backtracks, in the order they happened
    path_score: float | None
    selected_from: str  # "path" or the abandoned ending whose answer was kept
    reject_step: int | None  # input of a run that rejects step N of the thread's path (see AgentSteps.reject)


StepScorer = Callable[[dict, dict], float]
# Several candidate next steps of one state scored together (one PRM call): the critic's and beam's hook.
BatchScorer = Callable[[dict, list], list]


def next_node(state: dict) -> str | None:
    """The node that runs next after `state`, or None when the trajectory is finished."""
    steps = state.get("steps") or []
    if not steps:
        return "retrieve"
    last = steps[-1]["stage"]
    if last == "retrieve":
        return "extract"
    if last == "extract":
        return "synthesize"
    return "retrieve" if state.get("status") == "running" else None


def apply_update(state: dict, update: dict) -> dict:
    """Merge a node's update into a state the way the graph's reducers do."""
    new = dict(state)
    for key, value in update.items():
        if key in LIST_CHANNELS:
            new[key] = path_reducer(state.get(key), value)
        else:
            new[key] = value
    return new


def recursion_limit(max_hops: int, max_backtracks: int = 0) -> int:
    """LangGraph's step bound for a run of `max_hops` hops: set explicitly, never the library default.

    Each backtrack may redo a whole path, so the bound grows with the number of backtracks allowed.
    """
    return (3 * max_hops + 5) * (max_backtracks + 1) + 2 * max_backtracks
