"""Answer a split and measure it: outcome rewards, retrieval and evidence recall, hops and latency."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reasonrag.agent.graph import run_agent
from reasonrag.data.rewards import cover_em, exact_match, f1_score
from reasonrag.data.types import Question


def retrieval_recall(question: Question, state: dict) -> float | None:
    """Share of the gold passages that any retrieve step brought in; None without gold passages."""
    gold = set(question.metadata.get("gold_passages") or [])
    if not gold:
        return None
    return len(gold & set(state.get("seen", []))) / len(gold)


def evidence_recall(question: Question, state: dict) -> float | None:
    """Share of the gold supporting sentences that extraction kept; None without sentence-level gold."""
    facts = {(pid, int(i)) for pid, i in question.metadata.get("supporting_facts") or []}
    if not facts:
        return None
    kept = {(e["passage_id"], int(e["sentence_index"])) for e in state.get("evidence", [])}
    return len(facts & kept) / len(facts)


def trajectory_record(question: Question, state: dict, seconds: float) -> dict[str, Any]:
    """One line of the predictions file: the answer, its scores and the whole trajectory."""
    answer = state.get("answer", "")
    return {
        "id": question.id,
        "question": question.question,
        "golden_answers": question.golden_answers,
        "answer": answer,
        "em": exact_match(answer, question.golden_answers),
        "f1": f1_score(answer, question.golden_answers),
        "cover_em": cover_em(answer, question.golden_answers),
        "retrieval_recall": retrieval_recall(question, state),
        "evidence_recall": evidence_recall(question, state),
        "hops": sum(1 for s in state.get("steps", []) if s["stage"] == "retrieve"),
        "status": state.get("status"),
        "backtracks": state.get("backtracks", 0),
        "nodes": state.get("nodes") or sum(len(s.get("critic") or [None]) for s in _all_steps(state)),
        "prm_calls": state.get("prm_calls") or sum(_prm_calls(s) for s in _all_steps(state)),
        "seconds": round(seconds, 4),
        "steps": state.get("steps", []),
    }


def _all_steps(state: dict) -> list[dict]:
    """The path's steps and every abandoned one: all the node executions a question cost."""
    return list(state.get("steps", [])) + [s for a in state.get("abandoned") or [] for s in a["steps"]]


def _prm_calls(step: dict) -> int:
    """Step scores computed for a step: each critic candidate, else the step itself if it was scored."""
    return len(step.get("critic") or []) or int(step.get("score") is not None)


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(100 * sum(vals) / len(vals), 2) if vals else None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-question records into the numbers `reasonrag eval` reports (percentages)."""
    latencies = [r["seconds"] for r in records]
    return {
        "n": len(records),
        "em": _mean(r["em"] for r in records),
        "f1": _mean(r["f1"] for r in records),
        "cover_em": _mean(r["cover_em"] for r in records),
        "retrieval_recall": _mean(r["retrieval_recall"] for r in records),
        "evidence_recall": _mean(r["evidence_recall"] for r in records),
        "mean_hops": round(sum(r["hops"] for r in records) / max(len(records), 1), 3),
        "backtrack_rate": _mean(float(r.get("backtracks", 0) > 0) for r in records),
        "mean_backtracks": round(sum(r.get("backtracks", 0) for r in records) / max(len(records), 1), 3),
        "nodes_per_question": round(sum(r.get("nodes", 0) for r in records) / max(len(records), 1), 2),
        "prm_calls_per_question": round(
            sum(r.get("prm_calls", 0) for r in records) / max(len(records), 1), 2
        ),
        "seconds_per_question": round(sum(latencies) / max(len(records), 1), 4),
        "latency_p50_s": round(_percentile(latencies, 50), 4),
        "latency_p95_s": round(_percentile(latencies, 95), 4),
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def evaluate(
    graph,
    questions: list[Question],
    *,
    max_hops: int = 3,
    predictions: str | Path | None = None,
    progress: bool = True,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the agent on every question and summarise. Predictions, if asked for, are written atomically."""
    from tqdm import tqdm

    records = []
    bar = tqdm(questions, desc="eval", unit="q", disable=not progress, file=sys.stderr)
    for q in bar:
        t0 = time.perf_counter()
        state = run_agent(graph, q.question, max_hops=max_hops, **(inputs or {}))
        records.append(trajectory_record(q, state, time.perf_counter() - t0))
        bar.set_postfix(em=f"{_mean(r['em'] for r in records):.1f}")
    summary = summarise(records)
    if any(s.get("score") is not None for r in records for s in r["steps"]):
        from reasonrag.prm.evaluation import prm_auroc_of_records

        summary["prm_auroc"] = prm_auroc_of_records(records, {q.id: q for q in questions})
    summary["peak_memory_mb"] = peak_memory_mb()
    if predictions:
        path = Path(predictions)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)
    return summary
