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
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from .errors import InputError
from .policy import Candidate, Policy, choose

NOT_ENOUGH_EVIDENCE = "not enough evidence"


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
    steps: Annotated[list[dict], operator.add]  # the trajectory
    answer: str
    status: str  # "running", "answered", "insufficient"


StepScorer = Callable[[dict, dict], float]


def _rng(state: dict, stage: str) -> random.Random:
    """A generator fixed by (seed, question, position in the trajectory): sampled runs are reproducible."""
    key = f"{state.get('seed', 0)}|{state['question']}|{len(state.get('steps', []))}|{stage}"
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _emit(step: dict) -> None:
    """Send a finished step to `stream_mode="custom"` listeners, if any."""
    try:
        from langgraph.config import get_stream_writer

        get_stream_writer()({"step": step})
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
        "candidates": [{"text": c.text, "prob": round(c.prob, 6)} for c in cands],
        "chosen": idx,
        "observation": observation,
        "score": None,
        "seconds": round(time.perf_counter() - started, 4),
    }


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


class AgentSteps:
    """The graph's node functions, usable outside LangGraph too.

    The compiled graph runs these; labeling (`reasonrag label`) calls them directly to roll out many
    completions from one intermediate state, so what is labeled is exactly what the agent does.
    """

    def __init__(
        self, search: Any, policy: Policy, *, max_hops: int = 3, k: int = 5, scorer: StepScorer | None = None
    ) -> None:
        self.search, self.policy, self.max_hops, self.k, self.scorer = search, policy, max_hops, k, scorer

    def finish_step(self, state: dict, step: dict) -> dict:
        if self.scorer is not None:
            step["score"] = float(self.scorer(state, step))
        _emit(step)
        return step

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
        }

    def retrieve(self, state: AgentState) -> dict:
        t0 = time.perf_counter()
        cands = self.policy.propose("retrieve", state)
        idx = choose(cands, state["mode"], _rng(state, "retrieve"))
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
        step = self.finish_step(state, _step(state, "retrieve", cands, idx, observation, t0))
        return {
            "retrieved": state["retrieved"] + passages,
            "seen": state["seen"] + [p["id"] for p in passages],
            "steps": [step],
        }

    def extract(self, state: AgentState) -> dict:
        t0 = time.perf_counter()
        cands = self.policy.propose("extract", state)
        idx = choose(cands, state["mode"], _rng(state, "extract"))
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
        step = self.finish_step(state, _step(state, "extract", cands, idx, observation, t0))
        return {"evidence": state["evidence"] + kept, "steps": [step]}

    def synthesize(self, state: AgentState) -> dict:
        t0 = time.perf_counter()
        cands = self.policy.propose("synthesize", state)
        last_hop = state["hop"] + 1 >= state["max_hops"]
        if last_hop:  # the budget is spent: an answer (or an explicit "not enough evidence") is forced
            final = [c for c in cands if c.action.get("type") != "continue"]
            cands = final or [Candidate("synthesize", NOT_ENOUGH_EVIDENCE, {"type": "insufficient"}, 1.0)]
        idx = choose(cands, state["mode"], _rng(state, "synthesize"))
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
        step = self.finish_step(state, _step(state, "synthesize", cands, idx, observation, t0))
        update["steps"] = [step]
        return update

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
    """Merge a node's update into a state the way the graph's reducers do (steps are appended)."""
    new = dict(state)
    for key, value in update.items():
        new[key] = (state.get(key) or []) + value if key == "steps" else value
    return new


def rollout(steps: AgentSteps, state: dict, max_nodes: int = 64) -> dict:
    """Run the agent from any intermediate state to the end, outside LangGraph (same node functions)."""
    node = next_node(state)
    for _ in range(max_nodes):
        if node is None:
            return state
        state = steps.run_node(node, state)
        node = next_node(state)
    raise RuntimeError(f"rollout did not finish within {max_nodes} nodes")


def build_agent(
    corpus: str | Any = "hotpotqa",
    *,
    retriever: Any = None,
    policy: Policy | None = None,
    max_hops: int = 3,
    k: int = 5,
    scorer: StepScorer | None = None,
    checkpointer: Any = None,
    encoder: str | None = None,
):
    """Build and compile the agent graph.

    `corpus` names a shipped corpus or a path (ignored when `retriever` is given). `retriever` may be
    our DenseRetriever or any langchain-core BaseRetriever. `policy` defaults to the embedded policy.
    `scorer(state, step) -> float` scores each step as it is made (process reward models plug in here;
    see `reasonrag.prm.step_scorer`).
    Returns a compiled LangGraph graph: `graph.invoke({"question": ...})`.
    """
    nodes = agent_steps(
        corpus, retriever=retriever, policy=policy, max_hops=max_hops, k=k, scorer=scorer, encoder=encoder
    )

    def after_synthesize(state: AgentState) -> str:
        return "retrieve" if state.get("status") == "running" else END

    graph = StateGraph(AgentState)
    graph.add_node("start", nodes.start)
    graph.add_node("retrieve", nodes.retrieve)
    graph.add_node("extract", nodes.extract)
    graph.add_node("synthesize", nodes.synthesize)
    graph.add_edge(START, "start")
    graph.add_edge("start", "retrieve")
    graph.add_edge("retrieve", "extract")
    graph.add_edge("extract", "synthesize")
    graph.add_conditional_edges("synthesize", after_synthesize, ["retrieve", END])
    return graph.compile(checkpointer=checkpointer, name="reasonrag")


def agent_steps(
    corpus: str | Any = "hotpotqa",
    *,
    retriever: Any = None,
    policy: Policy | None = None,
    max_hops: int = 3,
    k: int = 5,
    scorer: StepScorer | None = None,
    encoder: str | None = None,
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
    return AgentSteps(search, policy, max_hops=max_hops, k=k, scorer=scorer)


def recursion_limit(max_hops: int) -> int:
    """LangGraph's step bound for a run of `max_hops` hops: set explicitly, never the library default."""
    return 3 * max_hops + 4


def run_agent(graph, question: str, *, max_hops: int = 3, config: dict | None = None, **inputs: Any) -> dict:
    """Invoke the graph on one question with an explicit recursion limit; returns the final state."""
    config = dict(config or {})
    config.setdefault("recursion_limit", recursion_limit(max_hops))
    return graph.invoke({"question": question, "max_hops": max_hops, **inputs}, config=config)
