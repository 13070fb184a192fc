"""The agent: a LangGraph StateGraph of retrieve -> extract -> synthesize, looping for more hops.

State holds plain types only (strings, numbers, lists, dicts), so any checkpointer can save it and every
step of the trajectory -- stage, action, what it saw, what came back, its probability and score -- is in
the state, in checkpoints and in the stream.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

from reasonrag.agent.state import (
    LIST_CHANNELS,
    NOT_ENOUGH_EVIDENCE,
    RESET,
    USER_REASON,
    AgentState,
    BatchScorer,
    StepScorer,
    apply_update,
    next_node,
)
from reasonrag.data.limits import MAX_BACKTRACKS, MAX_HOPS, MAX_K, check_question, check_range
from reasonrag.data.types import STAGES
from reasonrag.errors import InputError, RejectError
from reasonrag.policies.base import Candidate, Policy, choose


def _rng(state: dict, stage: str) -> random.Random:
    """A generator fixed by (seed, question, position in the trajectory): sampled runs are reproducible."""
    key = f"{state.get('seed', 0)}|{state['question']}|{len(state.get('steps', []))}|{stage}"
    if state.get("backtracks"):
        key += f"|{state['backtracks']}"
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def emit_event(payload: dict, kind: str = "step") -> None:
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


def observed(step: dict) -> Any:
    """What a step brought back, compactly (passage ids, kept sentences as [id, index], or the answer): kept
    for each critic alternative, so its correctness can be judged later from the gold."""
    obs = step.get("observation")
    if step["stage"] == "retrieve":
        return [o["id"] for o in obs]
    if step["stage"] == "extract":
        return [[o["passage_id"], o["sentence_index"]] for o in obs]
    return obs


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
        from reasonrag.data.rewards import AGGREGATIONS

        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"backtrack threshold must lie in [0, 1], got {self.threshold}")
        check_range("max_backtracks", self.max_backtracks, 0, MAX_BACKTRACKS)
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

    With `critic=N` (and a PRM), every stage is PRM-guided: the policy's N most probable candidate
    actions are all executed (a search each, for retrieve), the N resulting steps are scored by the PRM
    in one batch, and the best-scoring one is kept; the others stay in the step as `critic` alternatives
    and, when backtracking, are the next ones tried (best score first).
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
        critic: int = 0,
        batch_scorer: BatchScorer | None = None,
        critic_stages: tuple[str, ...] = STAGES,
        stop_threshold: float | None = None,
    ) -> None:
        self.search, self.policy, self.max_hops, self.k, self.scorer = search, policy, max_hops, k, scorer
        self.backtrack_config = backtrack if scorer is not None else None
        if critic < 0:
            raise InputError(f"critic must be at least 0, got {critic}")
        if critic > 1 and scorer is None and batch_scorer is None:
            raise InputError("the critic needs step scores: pass a prm (or scorer)")
        self.critic = int(critic)
        self.critic_stages = tuple(critic_stages)
        if not set(self.critic_stages) <= set(STAGES):
            raise InputError(f"critic stages must be some of {', '.join(STAGES)}; got {critic_stages}")
        self.batch_scorer = batch_scorer or (
            (lambda state, steps: [float(scorer(state, s)) for s in steps]) if scorer is not None else None
        )
        self.prm_calls = 0  # candidate steps scored by the critic (beside one score per step taken)
        if stop_threshold is not None and not 0.0 <= stop_threshold <= 1.0:
            raise InputError(f"stop threshold must lie in [0, 1], got {stop_threshold}")
        if stop_threshold is not None and self.batch_scorer is None:
            raise InputError("scored stopping needs step scores: pass a prm (or scorer)")
        self.stop_threshold = stop_threshold

    # -- shared by the three stages ----------------------------------------------------------------------
    def propose(self, state: dict, stage: str) -> list[Candidate]:
        """The policy's candidates for `stage`; at the last hop only answers (or "not enough") are left."""
        cands = self.policy.propose(stage, state)
        if stage == "synthesize" and state["hop"] + 1 >= state["max_hops"]:
            final = [c for c in cands if c.action.get("type") != "continue"]
            cands = final or [Candidate("synthesize", NOT_ENOUGH_EVIDENCE, {"type": "insufficient"}, 1.0)]
        return cands

    def _pick(self, state: dict, stage: str) -> tuple[list, int, list, bool]:
        """The candidates, the chosen index, the tried indices, and whether a backtrack forced the choice."""
        forced = state.get("forced")
        if (
            forced
            and forced.get("stage") == stage
            and forced.get("step_index") == len(state.get("steps") or [])
        ):
            cands = [Candidate(stage, c["text"], c["action"], c["prob"]) for c in forced["candidates"]]
            return cands, int(forced["index"]), list(forced["tried"]), True
        cands = self.propose(state, stage)
        idx = choose(cands, state["mode"], _rng(state, stage))
        return cands, idx, [idx], False

    def _execute(self, state: dict, stage: str, cand: Candidate) -> tuple[Any, dict]:
        """Carry out one candidate action: what came back (the observation) and the state update."""
        action = cand.action
        if stage == "retrieve":
            queries = action.get("queries") or [action.get("query", cand.text)]
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
            return observation, update
        if stage == "extract":
            have = {(e["passage_id"], e["sentence_index"]) for e in state["evidence"]}
            kept, chosen = [], set()
            for s in action.get("sentences", []):
                key = (s["passage_id"], s["sentence_index"])
                if key not in chosen:  # a sentence is kept once, however often a policy names it
                    chosen.add(key)
                    kept.append(dict(s, hop=state["hop"]))
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
            fresh = [s for s in kept if (s["passage_id"], s["sentence_index"]) not in have]
            return observation, {"evidence": state["evidence"] + fresh}
        if action.get("type") == "continue":
            return "another hop", {"hop": state["hop"] + 1, "status": "running"}
        if action.get("type") == "answer" and action.get("answer"):
            return action["answer"], {"answer": action["answer"], "status": "answered"}
        return NOT_ENOUGH_EVIDENCE, {"answer": NOT_ENOUGH_EVIDENCE, "status": "insufficient"}

    def expand(self, state: dict, stage: str, n: int, cands: list[Candidate] | None = None) -> list[dict]:
        """The `n` most probable candidates of `stage`, each executed: `{"index", "step", "update"}` each.

        The building block of PRM-guided search (the critic here, beam search in `reasonrag.agent.beam`)
        and of labeling alternatives: nothing is scored or chosen.
        """
        t0 = time.perf_counter()
        cands = cands if cands is not None else self.propose(state, stage)
        top = sorted(range(len(cands)), key=lambda i: (-cands[i].prob, i))[: max(n, 1)]
        out = []
        for i in top:
            observation, update = self._execute(state, stage, cands[i])
            out.append({"index": i, "step": _step(state, stage, cands, i, observation, t0), "update": update})
        return out

    def _node(self, state: dict, stage: str) -> dict:
        t0 = time.perf_counter()
        cands, idx, tried, forced = self._pick(state, stage)
        if stage == "synthesize" and self.stop_threshold is not None and not forced:
            stopped = self._answer_or_hop(state, cands, t0)
            if stopped is not None:
                return stopped
        if self.critic > 1 and stage in self.critic_stages and not forced and len(cands) > 1:
            options = self.expand(state, stage, self.critic, cands)
            scores = self.batch_scorer(state, [o["step"] for o in options])
            self.prm_calls += len(options)
            best = max(range(len(options)), key=lambda j: (scores[j], -j))
            chosen = options[best]
            step, update = chosen["step"], chosen["update"]
            step["score"] = float(scores[best])
            step["critic"] = [
                {
                    "text": cands[o["index"]].text,
                    "prob": round(cands[o["index"]].prob, 6),
                    "score": round(float(sc), 4),
                    "observed": observed(o["step"]),
                }
                for o, sc in zip(options, scores)
            ]
            critic_scores = {o["index"]: float(sc) for o, sc in zip(options, scores)}
            return self._record(state, step, cands, [chosen["index"]], dict(update), critic_scores)
        observation, update = self._execute(state, stage, cands[idx])
        return self._record(
            state, _step(state, stage, cands, idx, observation, t0), cands, tried, dict(update)
        )

    def _answer_or_hop(self, state: dict, cands: list[Candidate], t0: float) -> dict | None:
        """Scored stopping: answer now when the PRM scores the best answer at least `stop_threshold`, else
        hop again, whatever the policy preferred. The policy's best answer is scored (its N best with the
        critic on synthesize, which then picks among them). None when there is no choice to make (the
        last hop, or no answer proposed)."""
        answers = sorted(
            (i for i, c in enumerate(cands) if c.action.get("type") == "answer"),
            key=lambda i: (-cands[i].prob, i),
        )
        hop = next((i for i, c in enumerate(cands) if c.action.get("type") == "continue"), None)
        if hop is None or not answers:
            return None
        n = self.critic if self.critic > 1 and "synthesize" in self.critic_stages else 1
        options = []
        for i in answers[:n]:
            observation, update = self._execute(state, "synthesize", cands[i])
            options.append((i, _step(state, "synthesize", cands, i, observation, t0), update))
        scores = [float(x) for x in self.batch_scorer(state, [o[1] for o in options])]
        self.prm_calls += len(options)
        best = max(range(len(options)), key=lambda j: (scores[j], -j))
        critic_scores = {o[0]: sc for o, sc in zip(options, scores)}
        stop = {"threshold": self.stop_threshold, "best_answer": options[best][1]["action"]}
        stop["best_answer_score"] = round(scores[best], 4)
        if scores[best] >= self.stop_threshold:
            index, step, update = options[best]
            step["score"] = scores[best]
        else:
            index = hop
            observation, update = self._execute(state, "synthesize", cands[hop])
            step = _step(state, "synthesize", cands, hop, observation, t0)
        step["stop"] = stop
        if n > 1:
            step["critic"] = [
                {
                    "text": o[1]["action"],
                    "prob": o[1]["prob"],
                    "score": round(sc, 4),
                    "observed": observed(o[1]),
                }
                for o, sc in zip(options, scores)
            ]
        return self._record(state, step, cands, [index], dict(update), critic_scores)

    def _record(
        self,
        state: dict,
        step: dict,
        cands: list[Candidate],
        tried: list[int],
        update: dict,
        critic_scores: dict[int, float] | None = None,
    ) -> dict:
        """Score the step, announce it, and (when backtracking) note the branch point it was."""
        if self.scorer is not None and step.get("score") is None:
            step["score"] = float(self.scorer(state, step))
        emit_event(step)
        update["steps"] = [step]
        if self.backtrack_config is not None:
            records = [{"text": c.text, "action": c.action, "prob": c.prob} for c in cands]
            for i, sc in (critic_scores or {}).items():
                records[i]["critic_score"] = sc
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
                    "candidates": records,
                    "tried": tried,
                }
            ]
            update["forced"] = None
            update["trace"] = [{"event": "step", **step}]
        if (
            step["stage"] == "synthesize"
            and self.backtrack_config is not None
            and update.get("status") != "running"
        ):
            score = self.path_score(list(state.get("steps") or []) + [step])
            update["finished"] = [{"answer": update["answer"], "status": update["status"], "score": score}]
            update["path_score"] = score
        return update

    def start(self, state: AgentState) -> dict:
        """A fresh state for the question; on a thread that answered one before, nothing of it remains."""
        question = check_question(state.get("question") or "")
        return {
            **{channel: RESET for channel in LIST_CHANNELS},
            "selected_from": None,
            "question": question,
            "hop": 0,
            "max_hops": check_range("max_hops", int(state.get("max_hops") or self.max_hops), 1, MAX_HOPS),
            "k": check_range("k", int(state.get("k") or self.k), 1, MAX_K),
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
            "reject_step": None,
        }

    def retrieve(self, state: AgentState) -> dict:
        return self._node(state, "retrieve")

    def extract(self, state: AgentState) -> dict:
        return self._node(state, "extract")

    def synthesize(self, state: AgentState) -> dict:
        return self._node(state, "synthesize")

    # -- backtracking ------------------------------------------------------------------------------------
    def path_score(self, steps: list[dict]) -> float | None:
        from reasonrag.data.rewards import aggregate

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
        # The critic's scores, where it scored the candidates, rank them; else the policy's probabilities.
        j = max(
            untried,
            key=lambda i: (
                branch["candidates"][i].get("critic_score", -1.0),
                branch["candidates"][i]["prob"],
            ),
        )
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
        emit_event(event, "backtrack")
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

    def reject(self, state: AgentState) -> dict:
        """A run started with `{"reject_step": N}` on a thread that answered: step N is rejected, and the
        agent goes back to its branch point to take the next-best untried action (as `/reject N` in chat).
        """
        number = int(state.get("reject_step") or 0)
        steps, branches = state.get("steps") or [], state.get("branches") or []
        if not 1 <= number <= len(steps):
            raise RejectError(f"no step {number} to reject: the path has steps 1 to {len(steps)}")
        if len(branches) != len(steps):
            raise RejectError(
                "this path was made without step scores, so it has no branch points to go back to"
            )
        if not self._untried(branches[number - 1]):
            raise RejectError(f"step {number} has no untried alternative left")
        return {**self.backtrack(state, branch_index=number - 1, reason=USER_REASON), "reject_step": None}

    def finish(self, state: AgentState) -> dict:
        """The answer: the path's own, unless it scores below the threshold and a better ending was found.

        An answer a person rejected is never taken back this way."""
        cfg = self.backtrack_config
        current = state.get("path_score")
        if cfg is None or current is None or current >= cfg.threshold:
            return {"selected_from": "path"}
        rejected = {
            a["steps"][-1].get("observation")
            for a in state.get("abandoned") or []
            if a.get("reason") == USER_REASON and a.get("steps") and a["steps"][-1]["stage"] == "synthesize"
        }
        endings = [
            e
            for e in state.get("finished") or []
            if e.get("score") is not None and e.get("answer") not in rejected
        ]
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
