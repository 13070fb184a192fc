"""The agent: a LangGraph StateGraph of retrieve -> extract -> synthesize, looping for more hops.

State holds plain types only (strings, numbers, lists, dicts), so any checkpointer can save it and every
step of the trajectory -- stage, action, what it saw, what came back, its probability and score -- is in
the state, in checkpoints and in the stream.
"""

from __future__ import annotations

import hashlib
import operator
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from .errors import InputError
from .policy import STAGES, Candidate, Policy, choose

NOT_ENOUGH_EVIDENCE = "not enough evidence"
MAX_BACKTRACKS_BOUND = 16  # run_agent's recursion limit allows this many backtracks (the config caps lower)


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
    abandoned: Annotated[list[dict], operator.add]
    finished: Annotated[list[dict], operator.add]  # every ending reached: answer, status, path score
    trace: Annotated[list[dict], operator.add]  # steps and backtracks, in the order they happened
    path_score: float | None
    selected_from: str  # "path" or the abandoned ending whose answer was kept


StepScorer = Callable[[dict, dict], float]


def _rng(state: dict, stage: str) -> random.Random:
    """A generator fixed by (seed, question, position in the trajectory): sampled runs are reproducible."""
    key = f"{state.get('seed', 0)}|{state['question']}|{len(state.get('steps', []))}|{stage}"
    if state.get("backtracks"):
        key += f"|{state['backtracks']}"
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _emit(payload: dict, kind: str = "step") -> None:
    """Send a finished step (or a backtrack) to `stream_mode="custom"` listeners, if any."""
    try:
        from langgraph.config import get_stream_writer

        get_stream_writer()({kind: payload})
    except Exception:  # noqa: BLE001 - outside a streaming run there is nobody to tell
        pass


def _step(
    state: dict, stage: str, cands: list[Candidate], idx: int, observation: Any, started: float
) -> dict:
    chosen = cands[idx]
    return {
        "stage": stage,
        "hop": state.get("hop", 0),
        "action": chosen.text,
        "detail": chosen.action,
        "prob": round(chosen.prob, 6),
        "candidates": [_candidate_record(c) for c in cands],
        "chosen": idx,
        "observation": observation,
        "score": None,
        "seconds": round(time.perf_counter() - started, 4),
    }


def _candidate_record(c: Candidate) -> dict:
    """A candidate as the trace keeps it; a tuned policy's base probability too (policy training reads it)."""
    out = {"text": c.text, "prob": round(c.prob, 6)}
    if isinstance(c.action, dict) and "base_prob" in c.action:
        out["base_prob"] = round(float(c.action["base_prob"]), 6)
    return out


def _lead(sentences: list[str], limit: int = 200) -> str:
    """A passage's opening, kept in the step so a PRM (or a person) can judge the retrieval from the trace."""
    text = " ".join(str(x).strip() for x in sentences[:2]).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def merged_search(search: Any, queries: list[str], k: int, exclude: set[str]) -> list:
    """Top-k for one query, or the round-robin union of several queries' results (no duplicates)."""
    if len(queries) == 1:
        return search.search(queries[0], k=k, exclude=exclude)
    ranked = [search.search(q, k=k, exclude=exclude) for q in queries]
    hits, ids = [], set()
    for rank in range(k):
        for result in ranked:
            if rank < len(result) and result[rank].passage.id not in ids:
                hits.append(result[rank])
                ids.add(result[rank].passage.id)
    return hits[:k]


@dataclass
class BacktrackConfig:
    """When the path score falls below `threshold`, go back to the last branch point with an untried action.

    The path score aggregates the step scores so far (`min` by default, as the seed's rule). At most
    `max_backtracks` per question; candidates below `min_prob` are never tried. When no backtrack is left
    and the path still scores below the threshold, the answer of the best-scoring ending found is kept.
    """

    threshold: float = 0.2  # chosen on dev (benchmarks/results/backtrack_dev*.json)
    max_backtracks: int = 3
    aggregation: str = "min"
    min_prob: float = 0.02
    # Stages whose decisions a backtrack may revisit. Without "synthesize", a weak answer is not swapped
    # for the next-best answer to the same evidence but sends the agent back for other evidence.
    stages: tuple[str, ...] = STAGES

    def __post_init__(self) -> None:
        from .rewards import AGGREGATIONS

        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"backtrack threshold must lie in [0, 1], got {self.threshold}")
        if self.max_backtracks < 0:
            raise InputError(f"max_backtracks must be at least 0, got {self.max_backtracks}")
        self.stages = tuple(self.stages)
        if not self.stages or not set(self.stages) <= set(STAGES):
            raise InputError(f"backtrack stages must be some of {', '.join(STAGES)}; got {self.stages}")
        if self.aggregation not in AGGREGATIONS:
            raise InputError(
                f"unknown aggregation {self.aggregation!r}: use one of {', '.join(AGGREGATIONS)}"
            )


class AgentSteps:
    """The graph's node functions, usable outside LangGraph too.

    The compiled graph runs these; labeling (`reasonrag label`) calls them directly to roll out many
    completions from one intermediate state, so what is labeled is exactly what the agent does.
    """

    def __init__(
        self,
        search: Any,
        policy: Policy,
        *,
        max_hops: int = 3,
        k: int = 5,
        scorer: StepScorer | None = None,
        backtrack: BacktrackConfig | None = None,
    ) -> None:
        self.search, self.policy, self.max_hops, self.k, self.scorer = search, policy, max_hops, k, scorer
        self.backtrack_config = backtrack if scorer is not None else None

    # -- shared by the three stages ----------------------------------------------------------------------
    def _pick(
        self, state: dict, stage: str, propose: Callable[[], list[Candidate]]
    ) -> tuple[list, int, list]:
        """The candidates and the chosen index: forced by a backtrack, else proposed and chosen."""
        forced = state.get("forced")
        if (
            forced
            and forced.get("stage") == stage
            and forced.get("step_index") == len(state.get("steps") or [])
        ):
            cands = [Candidate(stage, c["text"], c["action"], c["prob"]) for c in forced["candidates"]]
            return cands, int(forced["index"]), list(forced["tried"])
        cands = propose()
        idx = choose(cands, state["mode"], _rng(state, stage))
        return cands, idx, [idx]

    def _record(
        self, state: dict, step: dict, cands: list[Candidate], tried: list[int], update: dict
    ) -> dict:
        """Score the step, announce it, and (when backtracking) note the branch point it was."""
        if self.scorer is not None:
            step["score"] = float(self.scorer(state, step))
        _emit(step)
        update["steps"] = [step]
        if self.backtrack_config is not None:
            update["branches"] = [
                {
                    "step_index": len(state.get("steps") or []),
                    "stage": step["stage"],
                    "restore": {
                        "hop": state["hop"],
                        "n_retrieved": len(state["retrieved"]),
                        "n_seen": len(state["seen"]),
                        "n_evidence": len(state["evidence"]),
                        "answer": state.get("answer", ""),
                        "status": state.get("status", "running"),
                    },
                    "candidates": [{"text": c.text, "action": c.action, "prob": c.prob} for c in cands],
                    "tried": tried,
                }
            ]
            update["forced"] = None
            update["trace"] = [{"event": "step", **step}]
        return update

    def start(self, state: AgentState) -> dict:
        question = (state.get("question") or "").strip()
        if not question:
            raise InputError("the question is empty")
        return {
            "question": question,
            "hop": 0,
            "max_hops": int(state.get("max_hops") or self.max_hops),
            "k": int(state.get("k") or self.k),
            "mode": state.get("mode") or "greedy",
            "seed": int(state.get("seed") or 0),
            "retrieved": [],
            "seen": [],
            "evidence": [],
            "answer": "",
            "status": "running",
            "backtracks": 0,
            "forced": None,
            "path_score": None,
        }

    def retrieve(self, state: AgentState) -> dict:
        t0 = time.perf_counter()
        cands, idx, tried = self._pick(state, "retrieve", lambda: self.policy.propose("retrieve", state))
        action = cands[idx].action
        queries = action.get("queries") or [action.get("query", cands[idx].text)]
        hits = merged_search(self.search, queries, state["k"], set(state["seen"]))
        passages = [
            {
                "id": h.passage.id,
                "title": h.passage.title,
                "sentences": list(h.passage.sentences),
                "score": round(float(h.score), 4),
                "hop": state["hop"],
            }
            for h in hits
        ]
        observation = [
            {"id": p["id"], "title": p["title"], "score": p["score"], "text": _lead(p["sentences"])}
            for p in passages
        ]
        update = {
            "retrieved": state["retrieved"] + passages,
            "seen": state["seen"] + [p["id"] for p in passages],
        }
        return self._record(
            state, _step(state, "retrieve", cands, idx, observation, t0), cands, tried, update
        )

    def extract(self, state: AgentState) -> dict:
        t0 = time.perf_counter()
        cands, idx, tried = self._pick(state, "extract", lambda: self.policy.propose("extract", state))
        kept = [dict(s, hop=state["hop"]) for s in cands[idx].action.get("sentences", [])]
        observation = [
            {
                "passage_id": s["passage_id"],
                "sentence_index": s["sentence_index"],
                "title": s["title"],
                "text": s["text"],
                "score": s.get("score"),
            }
            for s in kept
        ]
        update = {"evidence": state["evidence"] + kept}
        return self._record(state, _step(state, "extract", cands, idx, observation, t0), cands, tried, update)

    def _answer_candidates(self, state: dict) -> list[Candidate]:
        cands = self.policy.propose("synthesize", state)
        if (
            state["hop"] + 1 >= state["max_hops"]
        ):  # the budget is spent: an answer (or "not enough") is forced
            final = [c for c in cands if c.action.get("type") != "continue"]
            cands = final or [Candidate("synthesize", NOT_ENOUGH_EVIDENCE, {"type": "insufficient"}, 1.0)]
        return cands

    def synthesize(self, state: AgentState) -> dict:
        t0 = time.perf_counter()
        cands, idx, tried = self._pick(state, "synthesize", lambda: self._answer_candidates(state))
        action = cands[idx].action
        update: dict[str, Any] = {}
        if action.get("type") == "continue":
            update.update(hop=state["hop"] + 1, status="running")
            observation = "another hop"
        elif action.get("type") == "answer" and action.get("answer"):
            update.update(answer=action["answer"], status="answered")
            observation = action["answer"]
        else:
            update.update(answer=NOT_ENOUGH_EVIDENCE, status="insufficient")
            observation = NOT_ENOUGH_EVIDENCE
        step = _step(state, "synthesize", cands, idx, observation, t0)
        update = self._record(state, step, cands, tried, update)
        if self.backtrack_config is not None and update.get("status") != "running":
            score = self.path_score(list(state.get("steps") or []) + [step])
            update["finished"] = [{"answer": update["answer"], "status": update["status"], "score": score}]
            update["path_score"] = score
        return update

    # -- backtracking ------------------------------------------------------------------------------------
    def path_score(self, steps: list[dict]) -> float | None:
        from .rewards import aggregate

        scores = [s.get("score") for s in steps]
        if not scores or any(x is None for x in scores) or self.backtrack_config is None:
            return None
        return aggregate(scores, self.backtrack_config.aggregation)

    def backtrack_target(self, state: dict) -> int | None:
        """Index (in `branches`) of the branch point to go back to, or None to go on."""
        cfg = self.backtrack_config
        if cfg is None or state.get("backtracks", 0) >= cfg.max_backtracks:
            return None
        score = self.path_score(state.get("steps") or [])
        if score is None or score >= cfg.threshold:
            return None
        branches = state.get("branches") or []
        for bi in range(len(branches) - 1, -1, -1):
            if self._untried(branches[bi], automatic=True):
                return bi
        return None

    def _untried(self, branch: dict, automatic: bool = False) -> list[int]:
        """Untried candidates above the floor; an automatic backtrack also keeps to the configured stages."""
        cfg = self.backtrack_config
        if automatic and cfg is not None and branch["stage"] not in cfg.stages:
            return []
        floor = cfg.min_prob if cfg else 0.0
        return [
            j for j, c in enumerate(branch["candidates"]) if j not in branch["tried"] and c["prob"] >= floor
        ]

    def backtrack(
        self, state: AgentState, branch_index: int | None = None, reason: str | None = None
    ) -> dict:
        """Go back to a branch point and take its best untried candidate; the abandoned steps are kept."""
        bi = self.backtrack_target(state) if branch_index is None else branch_index
        if bi is None:
            raise InputError("there is no branch point with an untried action to go back to")
        branch = state["branches"][bi]
        untried = self._untried(branch)
        if not untried:
            raise InputError(f"step {branch['step_index'] + 1} has no untried action left")
        j = max(untried, key=lambda i: branch["candidates"][i]["prob"])
        steps = state.get("steps") or []
        cut = branch["step_index"]
        score = self.path_score(steps)
        if reason is None:
            cfg = self.backtrack_config
            reason = (
                f"path score {score:.2f} ({cfg.aggregation} of step scores) fell below {cfg.threshold:.2f} "
                f"after step {len(steps)} ({steps[-1]['stage']})"
            )
        r = branch["restore"]
        event = {
            "event": "backtrack",
            "reason": reason,
            "to_step": cut + 1,
            "stage": branch["stage"],
            "abandoned_steps": len(steps) - cut,
            "path_score": score,
            "now_trying": branch["candidates"][j]["text"],
        }
        _emit(event, "backtrack")
        return {
            "steps": {"truncate": cut, "add": []},
            "branches": {"truncate": bi, "add": []},
            "abandoned": [
                {"from_step": cut + 1, "steps": steps[cut:], "path_score": score, "reason": reason}
            ],
            "trace": [event],
            "retrieved": state["retrieved"][: r["n_retrieved"]],
            "seen": state["seen"][: r["n_seen"]],
            "evidence": state["evidence"][: r["n_evidence"]],
            "hop": r["hop"],
            "answer": r["answer"],
            "status": r["status"],
            "forced": {
                "stage": branch["stage"],
                "step_index": cut,
                "index": j,
                "candidates": branch["candidates"],
                "tried": list(branch["tried"]) + [j],
            },
            "backtracks": state.get("backtracks", 0) + 1,
        }

    def finish(self, state: AgentState) -> dict:
        """The answer: the path's own, unless it scores below the threshold and a better ending was found."""
        cfg = self.backtrack_config
        current = state.get("path_score")
        if cfg is None or current is None or current >= cfg.threshold:
            return {"selected_from": "path"}
        endings = [e for e in state.get("finished") or [] if e.get("score") is not None]
        best = max(endings, key=lambda e: e["score"], default=None)
        if best is None or best["score"] <= current:
            return {"selected_from": "path"}
        return {
            "answer": best["answer"],
            "status": best["status"],
            "path_score": best["score"],
            "selected_from": "best ending found",
        }

    def run_node(self, node: str, state: dict) -> dict:
        """Run one node on a plain state and return the new state (steps appended, as the graph does)."""
        return apply_update(state, getattr(self, node)(state))


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
        if key in ("steps", "branches"):
            new[key] = path_reducer(state.get(key), value)
        elif key in ("abandoned", "finished", "trace"):
            new[key] = (state.get(key) or []) + value
        else:
            new[key] = value
    return new


def rollout(steps: AgentSteps, state: dict, max_nodes: int = 64) -> list[dict]:
    """Run the agent from any intermediate state to the end, outside LangGraph (same node functions).

    Returns the state after each node run, in order (the last is the final state; empty if `state` was
    already final), so a caller can label every intermediate state without running anything twice.
    """
    states: list[dict] = []
    node = next_node(state)
    while node is not None:
        if len(states) >= max_nodes:
            raise RuntimeError(f"rollout did not finish within {max_nodes} nodes")
        state = steps.run_node(node, state)
        states.append(state)
        node = next_node(state)
    return states


def build_agent(
    corpus: str | Any = "hotpotqa",
    *,
    retriever: Any = None,
    policy: Policy | None = None,
    max_hops: int = 3,
    k: int = 5,
    prm: Any = None,
    scorer: StepScorer | None = None,
    backtrack: bool | BacktrackConfig | None = None,
    best_of: int = 1,
    select: str = "min",
    alpha: float = 0.5,
    checkpointer: Any = None,
    encoder: str | None = None,
):
    """Build and compile the agent graph.

    `corpus` names a shipped corpus or a path (ignored when `retriever` is given). `retriever` may be
    our DenseRetriever or any langchain-core BaseRetriever. `policy` defaults to the embedded policy.
    `prm` (any PRM) scores every step as it is made; `scorer(state, step) -> float` is the same hook as a
    plain function. With step scores, `backtrack=True` (or a `BacktrackConfig`) turns on min-step
    backtracking, and `best_of=N` samples N trajectories and keeps one by `select` (min, prod, mean,
    last, orm, combined or vote; see `reasonrag.selection`). Returns a compiled LangGraph graph:
    `graph.invoke({"question": ...})`; it works as a subgraph of a larger graph.
    """
    if prm is not None and scorer is None:
        from .prm import step_scorer

        scorer = step_scorer(prm)
    if backtrack and scorer is None:
        raise InputError("backtracking needs step scores: pass a prm (or scorer)")
    if backtrack is True:
        backtrack = BacktrackConfig()
    nodes = agent_steps(
        corpus,
        retriever=retriever,
        policy=policy,
        max_hops=max_hops,
        k=k,
        scorer=scorer,
        encoder=encoder,
        backtrack=backtrack or None,
    )
    if best_of > 1:
        from .selection import best_of_n_graph

        inner = compile_steps(nodes, None)
        graph = best_of_n_graph(inner, nodes, best_of, select, alpha, prm=prm, checkpointer=checkpointer)
    else:
        graph = compile_steps(nodes, checkpointer)
    return graph


def compile_steps(nodes: AgentSteps, checkpointer: Any = None):
    """Compile node functions into the agent graph (`build_agent` does this; chat keeps `nodes` at hand)."""
    graph = StateGraph(AgentState)
    graph.add_node("start", nodes.start)
    graph.add_node("retrieve", nodes.retrieve)
    graph.add_node("extract", nodes.extract)
    graph.add_node("synthesize", nodes.synthesize)
    graph.add_edge(START, "start")
    graph.add_edge("start", "retrieve")
    if nodes.backtrack_config is None:
        graph.add_edge("retrieve", "extract")
        graph.add_edge("extract", "synthesize")

        def after_synthesize(state: AgentState) -> str:
            return "retrieve" if state.get("status") == "running" else END

        graph.add_conditional_edges("synthesize", after_synthesize, ["retrieve", END])
    else:

        def route(normal: Callable[[dict], str]) -> Callable[[dict], str]:
            def decide(state: dict) -> str:
                return "backtrack" if nodes.backtrack_target(state) is not None else normal(state)

            return decide

        graph.add_node("backtrack", nodes.backtrack)
        graph.add_node("finish", nodes.finish)
        graph.add_conditional_edges("retrieve", route(lambda s: "extract"), ["extract", "backtrack"])
        graph.add_conditional_edges("extract", route(lambda s: "synthesize"), ["synthesize", "backtrack"])
        graph.add_conditional_edges(
            "synthesize",
            route(lambda s: "retrieve" if s.get("status") == "running" else "finish"),
            ["retrieve", "finish", "backtrack"],
        )
        graph.add_conditional_edges(
            "backtrack", lambda s: s["forced"]["stage"], ["retrieve", "extract", "synthesize"]
        )
        graph.add_edge("finish", END)
    compiled = graph.compile(checkpointer=checkpointer, name="reasonrag")
    return compiled


def agent_steps(
    corpus: str | Any = "hotpotqa",
    *,
    retriever: Any = None,
    policy: Policy | None = None,
    max_hops: int = 3,
    k: int = 5,
    scorer: StepScorer | None = None,
    encoder: str | None = None,
    backtrack: BacktrackConfig | None = None,
) -> AgentSteps:
    """The node functions `build_agent` compiles, with the same defaults (for rollouts outside the graph)."""
    from .retriever import as_search_backend

    if max_hops < 1:
        raise InputError(f"max_hops must be at least 1, got {max_hops}")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if retriever is None:
        from .corpus import Corpus
        from .retriever import DenseRetriever

        corpus_obj = Corpus.load(corpus) if isinstance(corpus, str) else corpus
        retriever = DenseRetriever(corpus_obj, encoder)
    search = as_search_backend(retriever)
    if policy is None:
        from .embedded_policy import EmbeddedPolicy

        policy = EmbeddedPolicy()
    return AgentSteps(search, policy, max_hops=max_hops, k=k, scorer=scorer, backtrack=backtrack)


def recursion_limit(max_hops: int, max_backtracks: int = 0) -> int:
    """LangGraph's step bound for a run of `max_hops` hops: set explicitly, never the library default.

    Each backtrack may redo a whole path, so the bound grows with the number of backtracks allowed.
    """
    return (3 * max_hops + 5) * (max_backtracks + 1) + 2 * max_backtracks


def run_agent(graph, question: str, *, max_hops: int = 3, config: dict | None = None, **inputs: Any) -> dict:
    """Invoke the graph on one question with an explicit recursion limit; returns the final state."""
    config = dict(config or {})
    config.setdefault("recursion_limit", recursion_limit(max_hops, MAX_BACKTRACKS_BOUND))
    return graph.invoke({"question": question, "max_hops": max_hops, **inputs}, config=config)
