"""Answer a split and measure it: outcome rewards, retrieval and evidence recall, hops and latency."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonrag.agent.graph import run_agent
from reasonrag.data.rewards import cover_em, exact_match, f1_score
from reasonrag.data.types import Question
from reasonrag.errors import InputError
from reasonrag.parallel.ray_pool import RayOptions


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


def answer_question(
    graph, question: Question, *, max_hops: int = 3, inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Answer one question with the agent: one predictions record (a unit a worker pool can share out)."""
    t0 = time.perf_counter()
    state = run_agent(graph, question.question, max_hops=max_hops, **(inputs or {}))
    return trajectory_record(question, state, time.perf_counter() - t0)


@dataclass
class EvalWorker:
    """What answers questions: a compiled agent and how to run it (one per thread, or per Ray actor)."""

    graph: Any
    max_hops: int = 3
    inputs: dict[str, Any] | None = None


def answer_one(worker: EvalWorker, question: Question) -> dict[str, Any]:
    return answer_question(worker.graph, question, max_hops=worker.max_hops, inputs=worker.inputs)


def summarise_run(records: list[dict[str, Any]], questions: list[Question]) -> dict[str, Any]:
    """The summary of a run: `summarise`, plus PRM AUROC when the steps were scored.

    Records are taken in the order of `questions`, so the order they were made or written in does not
    matter.
    """
    by_id = {r["id"]: r for r in records}
    ordered = [by_id[q.id] for q in questions if q.id in by_id]
    summary = summarise(ordered)
    if any("golden_answers" in r for r in ordered):
        from reasonrag.evaluation.losses import where_lost

        summary["where_lost"] = where_lost(ordered)
    if any(s.get("score") is not None for r in ordered for s in r["steps"]):
        from reasonrag.prm.evaluation import prm_auroc_of_records, sibling_top1

        by_question = {q.id: q for q in questions}
        summary["prm_auroc"] = prm_auroc_of_records(ordered, by_question)
        if any(s.get("critic") for r in ordered for s in r["steps"]):
            summary["sibling_top1"] = sibling_top1(ordered, by_question)
    return summary


def evaluate(
    graph,
    questions: list[Question],
    *,
    max_hops: int = 3,
    predictions: str | Path | None = None,
    progress: bool = True,
    inputs: dict[str, Any] | None = None,
    setting: dict[str, Any] | None = None,
    concurrency: int = 1,
    ray: RayOptions | None = None,
    ray_worker: Callable[[], EvalWorker] | None = None,
) -> dict[str, Any]:
    """Run the agent on every question and summarise.

    With `predictions`, each record is appended to that JSONL file as soon as it is made; questions the
    file already answers (made with the same `setting`, see `reasonrag.evaluation.predictions`) are not
    run again, and the summary is computed from the file, so an interrupted run resumes where it stopped.

    `concurrency` > 1 answers that many questions at once on threads sharing `graph` (whose components
    must then be thread-safe or locked: `reasonrag.parallel.threads.locked`); `ray` answers them on a Ray
    cluster, each actor building its own agent with `ray_worker()`. Records are written as they finish,
    in any order; the summary does not depend on it.
    """
    from tqdm import tqdm

    from reasonrag.evaluation.predictions import appending, check_predictions_path, read_predictions
    from reasonrag.parallel import ray_pool, threads

    setting = dict(setting or {})
    done: dict[str, dict[str, Any]] = {}
    if predictions is not None:
        predictions = check_predictions_path(predictions)
        done = read_predictions(predictions, setting, questions)
    wanted = {q.id for q in questions}
    records = [r for qid, r in done.items() if qid in wanted]
    todo = [q for q in questions if q.id not in done]
    if ray is not None:
        if ray_worker is None:
            raise InputError(
                "evaluating on Ray needs ray_worker: a picklable function that builds an EvalWorker"
            )
        results = ray_pool.map_unordered(answer_one, todo, ray_worker, ray)
    else:
        worker = EvalWorker(graph, max_hops, inputs)
        results = threads.map_unordered(answer_one, todo, lambda: worker, concurrency)
    bar = tqdm(total=len(todo), desc="eval", unit="q", disable=not progress, file=sys.stderr)
    with appending(predictions, setting) as write:
        for _, record in results:
            write(record)
            records.append(record)
            bar.update(1)
            bar.set_postfix(em=f"{_mean(r['em'] for r in records):.1f}")
    bar.close()
    if predictions is not None:
        records = list(read_predictions(predictions, setting, questions).values())
    summary = summarise_run([r for r in records if r["id"] in wanted], questions)
    summary["resumed"] = len(wanted & set(done))
    summary["peak_memory_mb"] = peak_memory_mb()
    return summary
