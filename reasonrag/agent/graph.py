"""The agent graph: retrieve -> extract -> synthesize, looping for more hops, compiled with LangGraph.

`build_agent` is the entry point: it wires a retriever, a policy and (optionally) a PRM into the node
functions of `reasonrag.agent.nodes` and compiles them, with backtracking or best-of-N when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.graph import END, START, StateGraph

from reasonrag.agent.nodes import AgentSteps, BacktrackConfig
from reasonrag.agent.state import MAX_BACKTRACKS_BOUND, AgentState, StepScorer, recursion_limit
from reasonrag.data.limits import MAX_BEST_OF, MAX_HOPS, MAX_K, check_range
from reasonrag.data.types import STAGES
from reasonrag.errors import InputError
from reasonrag.policies.base import Policy


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
    critic: int = 0,
    beam: int = 0,
    critic_stages: tuple[str, ...] | None = None,
    stop_threshold: float | None = None,
):
    """Build and compile the agent graph.

    `corpus` names a shipped corpus or a path (ignored when `retriever` is given). `retriever` may be
    our DenseRetriever or any langchain-core BaseRetriever. `policy` defaults to the embedded policy.
    `prm` (any PRM) scores every step as it is made; `scorer(state, step) -> float` is the same hook as a
    plain function. With step scores, `backtrack=True` (or a `BacktrackConfig`) turns on min-step
    backtracking, and `best_of=N` samples N trajectories and keeps one by `select` (min, prod, mean,
    last, orm, combined, vote or weighted; see `reasonrag.agent.best_of_n`). PRM-guided step search:
    `critic=N` executes the policy's N best candidates at every step and keeps the one the PRM scores
    highest; `beam=W` keeps the W best partial paths by aggregated step score (`reasonrag.agent.beam`).
    `stop_threshold=T` is scored stopping: at each answer step the PRM scores the policy's best answer,
    and the agent answers when it scores at least T and hops again otherwise.
    Returns a compiled LangGraph graph:
    `graph.invoke({"question": ...})`; it works as a subgraph of a larger graph.
    """
    batch_scorer = None
    if prm is not None and scorer is None:
        from reasonrag.prm.base import score_candidates, step_scorer

        scorer = step_scorer(prm)
        batch_scorer = lambda state, steps: score_candidates(prm, state, steps)  # noqa: E731
    check_range("best_of", best_of, 1, MAX_BEST_OF)
    if (critic > 1 or beam > 1) and scorer is None:
        raise InputError("PRM-guided search (critic, beam) needs step scores: pass a prm (or scorer)")
    if beam > 1 and best_of > 1:
        raise InputError("beam search and best-of-N are two ways to spend samples: use one of them")
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
        critic=critic,
        batch_scorer=batch_scorer,
        critic_stages=critic_stages,
        stop_threshold=stop_threshold,
    )
    if beam > 1:
        from reasonrag.agent.beam import beam_graph

        return beam_graph(nodes, beam, checkpointer=checkpointer)
    if best_of > 1:
        from reasonrag.agent.best_of_n import best_of_n_graph

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
    graph.add_edge("start", "retrieve")
    if nodes.backtrack_config is None:
        graph.add_edge(START, "start")
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
        # A run whose input is {"reject_step": N} goes back from step N of the thread's path instead of
        # starting a new question: how a client of a server rejects a step.
        graph.add_node("reject", nodes.reject)
        graph.add_conditional_edges(
            START, lambda s: "reject" if s.get("reject_step") else "start", ["reject", "start"]
        )
        graph.add_conditional_edges("retrieve", route(lambda s: "extract"), ["extract", "backtrack"])
        graph.add_conditional_edges("extract", route(lambda s: "synthesize"), ["synthesize", "backtrack"])
        graph.add_conditional_edges(
            "synthesize",
            route(lambda s: "retrieve" if s.get("status") == "running" else "finish"),
            ["retrieve", "finish", "backtrack"],
        )
        for node in ("backtrack", "reject"):
            graph.add_conditional_edges(
                node, lambda s: s["forced"]["stage"], ["retrieve", "extract", "synthesize"]
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
    critic: int = 0,
    batch_scorer: Any = None,
    critic_stages: tuple[str, ...] | None = None,
    stop_threshold: float | None = None,
) -> AgentSteps:
    """The node functions `build_agent` compiles, with the same defaults (for rollouts outside the graph)."""
    from reasonrag.retrieval.retriever import as_search_backend

    check_range("max_hops", max_hops, 1, MAX_HOPS)
    check_range("k", k, 1, MAX_K)
    if retriever is None:
        from reasonrag.data.corpus import Corpus
        from reasonrag.retrieval.retriever import DenseRetriever

        corpus_obj = Corpus.load(corpus) if isinstance(corpus, str) else corpus
        retriever = DenseRetriever(corpus_obj, encoder)
    search = as_search_backend(retriever)
    if policy is None:
        from reasonrag.policies.embedded import EmbeddedPolicy

        policy = EmbeddedPolicy()
    return AgentSteps(
        search,
        policy,
        max_hops=max_hops,
        k=k,
        scorer=scorer,
        backtrack=backtrack,
        critic=critic,
        batch_scorer=batch_scorer,
        critic_stages=tuple(critic_stages or STAGES),
        stop_threshold=stop_threshold,
    )


def run_agent(graph, question: str, *, max_hops: int = 3, config: dict | None = None, **inputs: Any) -> dict:
    """Invoke the graph on one question with an explicit recursion limit; returns the final state."""
    config = dict(config or {})
    config.setdefault("recursion_limit", recursion_limit(max_hops, MAX_BACKTRACKS_BOUND))
    return graph.invoke({"question": question, "max_hops": max_hops, **inputs}, config=config)
