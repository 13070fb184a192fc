"""Monte Carlo step labels: sample trajectories, roll out completions from every step, record MC values.

For each question, `trajectories` paths are sampled from the policy. After every step, `completions`
rollouts continue from the state that step left; the step's MC value is the fraction that end in a
correct answer (soft label), its hard label is whether any did, and its SPRE value averages each
rollout's outcome discounted by `gamma ** (steps the rollout took)`. A step whose prefix (the actions up
to it) was already labeled is not rolled out again, and rollouts reuse every search and reading their
prefix computed (through caches), so the work grows with the distinct paths, not with their count.

The output is append-only JSONL, one distinct trajectory a line, close to TRL's stepwise format
(`prompt`, `completions`, `labels`) with the stages added. A question's lines are written together, so a
kill loses at most the question in flight, and a rerun resumes after the last complete question.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reasonrag.agent.nodes import AgentSteps, rollout
from reasonrag.agent.state import next_node
from reasonrag.data.files import parse_json
from reasonrag.data.limits import MAX_COMPLETIONS, MAX_HOPS, MAX_K, MAX_TRAJECTORIES, check_range
from reasonrag.data.rewards import OUTCOME_METRICS
from reasonrag.data.types import Question
from reasonrag.errors import InputError, LabelsError
from reasonrag.parallel.ray_pool import RayOptions
from reasonrag.parallel.threads import locked
from reasonrag.prm.base import step_text

LABELS_FORMAT = "reasonrag-labels/1"
REQUIRED_KEYS = ("question", "steps", "labels", "values")


@dataclass
class LabelConfig:
    """Everything that decides the labels; saved on every line so a resume cannot mix settings."""

    trajectories: int = 15
    completions: int = 16
    gamma: float = 0.9
    success: str = "em"  # outcome metric: em, f1 or cover_em
    threshold: float = 1.0  # a rollout succeeds when its metric reaches this (e.g. f1 with 0.5)
    max_hops: int = 3
    k: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("trajectories", self.trajectories, 1, MAX_TRAJECTORIES)
        check_range("completions", self.completions, 0, MAX_COMPLETIONS)
        check_range("max_hops", self.max_hops, 1, MAX_HOPS)
        check_range("k", self.k, 1, MAX_K)
        if self.success not in OUTCOME_METRICS:
            raise InputError(f"--success {self.success!r}: use one of {', '.join(OUTCOME_METRICS)}")
        if not 0.0 < self.gamma <= 1.0:
            raise InputError(f"--gamma must lie in (0, 1], got {self.gamma}")
        if not 0.0 < self.threshold <= 1.0:
            raise InputError(f"--threshold must lie in (0, 1], got {self.threshold}")


class CachedSearch:
    """A search backend that remembers results: rollouts that repeat a query reuse the first search."""

    def __init__(self, search: Any, size: int = 200_000) -> None:
        self.search_backend, self.size = search, size
        self._cache: dict[tuple, list] = {}
        self._lock = threading.Lock()  # guards the cache and counters; the backend guards itself
        self.requests = 0
        self.computed = 0

    def search(self, query: str, k: int = 5, exclude: set[str] | None = None) -> list:
        key = (query, k, frozenset(exclude or ()))
        with self._lock:
            self.requests += 1
            hit = self._cache.get(key)
        if hit is None:
            hit = self.search_backend.search(query, k=k, exclude=exclude)
            with self._lock:
                self.computed += 1
                if len(self._cache) >= self.size:
                    self._cache.clear()
                self._cache[key] = hit
        return hit


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _public_step(step: dict) -> dict:
    keys = ("stage", "hop", "action", "observation", "prob", "candidates", "chosen")
    return {k: step.get(k) for k in keys}


@dataclass
class LabelStats:
    questions: int = 0
    trajectories: int = 0  # distinct paths written
    samples: int = 0  # paths sampled (with repeats)
    labeled_steps: int = 0  # steps of the distinct paths
    positive_steps: int = 0
    rollouts: int = 0  # completions actually run
    rollouts_naive: int = 0  # completions a per-step, per-trajectory labeler would run
    nodes: int = 0  # node executions actually run (sampling and completions)
    nodes_naive: int = 0  # ... if every completion re-ran its prefix and no prefix were shared
    seconds: float = 0.0


class Labeler:
    """Labels questions with MC values; `AgentSteps` must wrap a `CachedSearch` for the reuse to count."""

    def __init__(self, steps: AgentSteps, config: LabelConfig) -> None:
        self.steps, self.config = steps, config
        self.metric = OUTCOME_METRICS[config.success]
        self.stats = LabelStats()

    def succeeded(self, state: dict, golden: list[str]) -> float:
        if state.get("status") != "answered":
            return 0.0
        return 1.0 if self.metric(state.get("answer", ""), golden) >= self.config.threshold else 0.0

    def _run(self, state: dict) -> tuple[dict, list[dict]]:
        """Run to the end; returns the final state and every state along the way (after each node)."""
        states = rollout(self.steps, state)
        self.stats.nodes += len(states)
        return (states[-1] if states else state), states

    def label_question(self, q: Question, corpus: str = "", split: str | None = None) -> list[dict]:
        cfg = self.config
        base = self.steps.run_node(
            "start",
            {"question": q.question, "mode": "sample", "seed": 0, "max_hops": cfg.max_hops, "k": cfg.k},
        )
        paths: dict[tuple, dict] = {}  # action prefix of a whole path -> its record
        counts: dict[tuple, int] = {}
        values: dict[tuple, tuple[float, float, int, int]] = {}  # prefix -> (mc, spre, rollouts, nodes)
        for i in range(cfg.trajectories):
            final, states = self._run(dict(base, seed=_seed(cfg.seed, q.id, "trajectory", i)))
            steps = final["steps"]
            key = tuple((s["stage"], s["action"]) for s in steps)
            counts[key] = counts.get(key, 0) + 1
            self.stats.samples += 1
            for t in range(len(steps)):
                prefix = key[: t + 1]
                after = states[t]
                comp_nodes = values[prefix][3] if prefix in values else None
                if prefix not in values:
                    values[prefix] = self._value(after, q, prefix)
                    comp_nodes = values[prefix][3]
                # What a labeler without prefix sharing would run: K completions per step per sample,
                # each re-running the t+1 prefix nodes first.
                k = values[prefix][2]
                self.stats.rollouts_naive += k
                self.stats.nodes_naive += k * (t + 1) + comp_nodes
            if key not in paths:
                paths[key] = {"final": final, "steps": steps}
        records = []
        outcome_golden = q.golden_answers
        for key, path in paths.items():
            steps = path["steps"]
            mc = [values[key[: t + 1]][0] for t in range(len(steps))]
            spre = [values[key[: t + 1]][1] for t in range(len(steps))]
            labels = [None if v is None else int(v > 0) for v in mc]
            records.append(
                {
                    "format": LABELS_FORMAT,
                    "id": f"{q.id}/{len(records)}",
                    "question_id": q.id,
                    "question": q.question,
                    "golden_answers": outcome_golden,
                    "corpus": corpus,
                    "split": split or q.split,
                    "prompt": q.question,
                    "completions": [step_text(s) for s in steps],
                    "stages": [s["stage"] for s in steps],
                    "labels": labels,
                    "values": [None if v is None else round(v, 4) for v in mc],
                    "spre": [None if v is None else round(v, 4) for v in spre],
                    "rollouts": [values[key[: t + 1]][2] for t in range(len(steps))],
                    "steps": [_public_step(s) for s in steps],
                    "answer": path["final"].get("answer", ""),
                    "outcome": self.succeeded(path["final"], outcome_golden),
                    "count": counts[key],
                    "n_samples": cfg.trajectories,
                    "config": asdict(cfg),
                }
            )
            self.stats.trajectories += 1
            self.stats.labeled_steps += len(steps)
            self.stats.positive_steps += sum(x for x in labels if x)
        self.stats.questions += 1
        return records

    def _value(self, state: dict, q: Question, prefix: tuple) -> tuple[float | None, float | None, int, int]:
        """(MC value, SPRE value, rollouts run, completion nodes run) of the state a step left.

        With no completions (explore only) a step that does not end the trajectory has no value (None).
        """
        cfg = self.config
        if next_node(state) is None:  # the step ended the trajectory: its value is the outcome itself
            r = self.succeeded(state, q.golden_answers)
            return r, r, 0, 0
        if cfg.completions == 0:
            return None, None, 0, 0
        wins = spre = 0.0
        nodes = 0
        for j in range(cfg.completions):
            seed = _seed(cfg.seed, q.id, "completion", repr(prefix), j)
            before = len(state["steps"])
            final, states = self._run(dict(state, seed=seed))
            r = self.succeeded(final, q.golden_answers)
            wins += r
            spre += r * cfg.gamma ** (len(final["steps"]) - before)
            nodes += len(states)
        self.stats.rollouts += cfg.completions
        return wins / cfg.completions, spre / cfg.completions, cfg.completions, nodes


# -- the labels file -------------------------------------------------------------------------------------
def validate_record(record: Any, where: str) -> dict:
    """Raise LabelsError (naming `where`) unless `record` is one line of a reasonrag labels file."""
    if not isinstance(record, dict):
        raise LabelsError(f"{where}: a labels line is a JSON object, got {type(record).__name__}")
    if record.get("format") != LABELS_FORMAT:
        raise LabelsError(
            f"{where}: not a reasonrag labels line (format {record.get('format')!r}, expected "
            f"{LABELS_FORMAT!r}); make labels with `reasonrag label`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise LabelsError(f"{where}: missing {', '.join(missing)}")
    steps, labels, values = record["steps"], record["labels"], record["values"]
    if not isinstance(steps, list) or not steps:
        raise LabelsError(f"{where}: 'steps' must be a non-empty list")
    if not (isinstance(labels, list) and isinstance(values, list)) or not len(steps) == len(labels) == len(
        values
    ):
        raise LabelsError(f"{where}: 'steps', 'labels' and 'values' must be lists of the same length")
    for i, (s, lab, v) in enumerate(zip(steps, labels, values)):
        if not isinstance(s, dict) or s.get("stage") not in ("retrieve", "extract", "synthesize"):
            raise LabelsError(f"{where}: step {i} has no known stage")
        _check_step(s, f"{where}: step {i}")
        if lab not in (0, 1, None):
            raise LabelsError(f"{where}: label {i} must be 0, 1 or null, got {lab!r}")
        if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise LabelsError(f"{where}: value {i} must be a number in [0, 1] or null, got {v!r}")
    if not isinstance(record["question"], str):
        raise LabelsError(f"{where}: 'question' must be a string")
    if not isinstance(record.get("question_id", ""), (str, int)) or isinstance(
        record.get("question_id"), bool
    ):
        raise LabelsError(f"{where}: 'question_id' must be a string")
    # How often a trajectory was sampled, of how many (resuming reads them).
    for key in ("count", "n_samples"):
        n = record.get(key, 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise LabelsError(f"{where}: '{key}' must be a whole number >= 0, got {n!r}")
    return record


def _is_prob(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= x <= 1.0


def _check_step(step: dict, where: str) -> None:
    """The fields the trainers read from a step: its action, probability, candidates and choice."""
    if not isinstance(step.get("action"), str):
        raise LabelsError(f"{where}: 'action' must be a string")
    if "prob" in step and not _is_prob(step["prob"]):  # (trainers read the candidates' probabilities)
        raise LabelsError(f"{where}: 'prob' must be a number in [0, 1], got {step.get('prob')!r}")
    cands = step.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise LabelsError(f"{where}: 'candidates' must be a non-empty list (the actions the policy proposed)")
    for j, c in enumerate(cands):
        if not isinstance(c, dict) or not isinstance(c.get("text"), str) or not _is_prob(c.get("prob")):
            raise LabelsError(f"{where}: candidate {j} must be an object with 'text' and 'prob' in [0, 1]")
    chosen = step.get("chosen")
    if not isinstance(chosen, int) or isinstance(chosen, bool) or not 0 <= chosen < len(cands):
        raise LabelsError(f"{where}: 'chosen' must be the index of one of its {len(cands)} candidate(s)")
    hop = step.get("hop", 0)
    if not isinstance(hop, int) or isinstance(hop, bool) or hop < 0:
        raise LabelsError(f"{where}: 'hop' must be a whole number >= 0")


def read_labels(paths: str | Path | Iterable[str | Path]) -> list[dict]:
    """All trajectories of one or more labels files, each line checked; errors name file and line."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    records = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise LabelsError(f"{path}: no such labels file")
        with path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise LabelsError(
                        f"{path}:{n}: not valid UTF-8 (byte {exc.start + 1} of the line)"
                    ) from None
                if not line.strip():
                    continue
                try:
                    record = parse_json(line)
                except json.JSONDecodeError as exc:
                    raise LabelsError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
                records.append(validate_record(record, f"{path}:{n}"))
    if not records:
        raise LabelsError(f"{', '.join(map(str, paths))}: no labeled trajectories")
    return records


def resume_point(path: Path, config: LabelConfig) -> set[str]:
    """Question ids already complete in `path`; cuts off a torn last line or an unfinished last question.

    Anything else that is wrong (a foreign file, other settings) is an error, and the file is left as is.
    """
    if not path.exists():
        return set()
    raw = path.read_bytes()
    lines = raw.split(b"\n")  # the last element follows the final newline: empty, or a torn write
    want = asdict(config)
    done: set[str] = set()
    good_end = offset = 0  # byte offset after the last complete question
    group_q, group_total, group_need = None, 0, 0
    for n, line in enumerate(lines[:-1], 1):
        offset += len(line) + 1
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LabelsError(f"{path}:{n}: not valid JSON; is this a reasonrag labels file?") from None
        validate_record(record, f"{path}:{n}")
        if record.get("config") != want:
            raise LabelsError(
                f"{path}:{n}: labeled with other settings ({record.get('config')}); "
                "resume with the same options, or write to a new --out"
            )
        qid = record.get("question_id")
        if qid != group_q:
            group_q, group_total, group_need = qid, 0, int(record.get("n_samples", 0))
        group_total += int(record.get("count", 0))
        if group_total >= group_need:
            done.add(qid)
            good_end = offset
    if good_end != len(raw):
        with path.open("r+b") as f:
            f.truncate(good_end)
    return done


def summarise_labels(records: list[dict]) -> dict[str, Any]:
    """Trajectories binned by step count, with success rate and mean MC value per bin."""
    bins: dict[int, dict[str, float]] = {}
    for r in records:
        n = len(r["steps"])
        b = bins.setdefault(n, {"trajectories": 0, "samples": 0, "successes": 0.0, "value_sum": 0.0})
        b["trajectories"] += 1
        b["samples"] += r.get("count", 1)
        b["successes"] += r.get("outcome", 0.0) * r.get("count", 1)
        b["value_sum"] += sum(v for v in r["values"] if v is not None) / len(r["values"])
    out = {}
    for n in sorted(bins):
        b = bins[n]
        out[str(n)] = {
            "trajectories": int(b["trajectories"]),
            "samples": int(b["samples"]),
            "success_rate": round(b["successes"] / max(b["samples"], 1), 4),
            "mean_value": round(b["value_sum"] / b["trajectories"], 4),
        }
    stages: dict[str, list[int]] = {}
    for r in records:
        for s, lab in zip(r["steps"], r["labels"]):
            if lab is not None:
                stages.setdefault(s["stage"], []).append(lab)
    return {
        "by_steps": out,
        "positive_rate_by_stage": {k: round(sum(v) / len(v), 4) for k, v in sorted(stages.items())},
    }


def judge_records(judge: Any, records: list[dict]) -> None:
    """Grade every step of `records` with an LLM judge (any PRM), written as `judge` beside `values`.

    The records carry `golden_answers`, so the judge grades with the gold answer in view, as MC does.
    """
    for record, scores in zip(records, judge.score(records)):
        record["judge"] = [round(float(x), 4) for x in scores]


def compare_judge(records: list[dict]) -> dict[str, Any]:
    """How the judge's grades track the MC labels, overall and per stage: agreement (grade >= 0.5 against
    the hard label), AUROC of the grades against the hard labels, and mean |grade - MC value|."""
    from reasonrag.prm.evaluation import auroc

    rows: dict[str, list[tuple[float, int, float | None]]] = {}
    for r in records:
        if not isinstance(r.get("judge"), list):
            continue
        for step, grade, label, value in zip(r["steps"], r["judge"], r["labels"], r["values"]):
            if grade is not None and label is not None:
                rows.setdefault(step["stage"], []).append((float(grade), int(label), value))

    def stats(items: list[tuple[float, int, float | None]]) -> dict[str, Any]:
        diffs = [abs(g - v) for g, _, v in items if v is not None]
        auc = auroc([g for g, _, _ in items], [y for _, y, _ in items])
        return {
            "steps": len(items),
            "agreement": round(sum((g >= 0.5) == bool(y) for g, y, _ in items) / len(items), 4),
            "auroc": None if auc is None else round(auc, 4),
            "mean_abs_diff": round(sum(diffs) / len(diffs), 4) if diffs else None,
        }

    everything = [row for items in rows.values() for row in items]
    if not everything:
        return {"steps": 0}
    return {**stats(everything), "by_stage": {stage: stats(items) for stage, items in sorted(rows.items())}}


@dataclass
class LabelWorker:
    """What labels one question: a labeler, and the judge that grades its steps (if any)."""

    labeler: Labeler
    judge: Any = None
    corpus: str = ""


def _counters(worker: LabelWorker) -> dict[str, int]:
    """The cost counters of a worker's policy, search and judge (reader windows, searches, judge calls)."""
    policy, search = worker.labeler.steps.policy, worker.labeler.steps.search
    return {
        "reader_windows_requested": getattr(policy, "read_requests", 0) or 0,
        "reader_windows_computed": getattr(policy, "reads", 0) or 0,
        "searches_requested": getattr(search, "requests", 0) or 0,
        "searches_computed": getattr(search, "computed", 0) or 0,
        "judge_requests": getattr(worker.judge, "requests", 0) or 0,
    }


def label_one(worker: LabelWorker, q: Question) -> tuple[list[dict], dict[str, int]]:
    """One question's records, and what labeling it cost (LabelStats fields and the counters above).

    The cost is measured on the worker's own labeler; shared caches make the counters a whole-run total
    instead (see `label_questions`)."""
    before = {**asdict(worker.labeler.stats), **_counters(worker)}
    t0 = time.perf_counter()
    records = worker.labeler.label_question(q, corpus=worker.corpus)
    if worker.judge is not None:
        judge_records(worker.judge, records)
    after = {**asdict(worker.labeler.stats), **_counters(worker)}
    cost = {k: after[k] - before[k] for k in after if k != "seconds"}
    return records, {**cost, "question_seconds": time.perf_counter() - t0}


def thread_worker_factory(labeler: Labeler, judge: Any = None, corpus: str = "") -> Callable[[], LabelWorker]:
    """Workers for `concurrency` threads: each its own Labeler (and stats), all sharing one policy and one
    search cache, with one lock around whatever is not thread-safe (`reasonrag.parallel.threads.locked`)."""
    steps = labeler.steps
    lock = threading.RLock()  # one for all: the retriever, reader and PRM may share an encoder's tokenizer
    policy = locked(steps.policy, lock)
    scorer = locked(steps.scorer, lock)
    search = steps.search
    if isinstance(search, CachedSearch):
        search.search_backend = locked(search.search_backend, lock)
    else:
        search = locked(search, lock)

    def make() -> LabelWorker:
        fresh = AgentSteps(
            search,
            policy,
            max_hops=steps.max_hops,
            k=steps.k,
            scorer=scorer,
            backtrack=steps.backtrack_config,
        )
        return LabelWorker(Labeler(fresh, labeler.config), judge, corpus)

    return make


def label_questions(
    labeler: Labeler,
    questions: list[Question],
    out: str | Path,
    *,
    corpus: str = "",
    progress: bool = True,
    judge: Any = None,
    concurrency: int = 1,
    ray: RayOptions | None = None,
    ray_worker: Callable[[], LabelWorker] | None = None,
) -> dict[str, Any]:
    """Label every question not already in `out` (appending), then summarise the whole file.

    With a `judge` (an LLM-judge PRM), every new record also gets the judge's grades (`judge_records`) and
    the summary compares the two label sources (`judge_vs_mc`). `concurrency` > 1 labels that many
    questions at once on threads (for policies that wait on a model server); `ray` labels them on a Ray
    cluster, each actor building its own worker with `ray_worker()`. Either way a question's lines are
    written together as it finishes, and the file holds the same lines as a one-at-a-time run (in
    another order), since every sample's seed depends only on the seed, the question and the position."""
    from tqdm import tqdm

    from reasonrag.parallel import ray_pool, threads

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = resume_point(out, labeler.config)
    todo = [q for q in questions if q.id not in done]
    main = LabelWorker(labeler, judge, corpus)
    if ray is not None:
        if ray_worker is None:
            raise InputError(
                "labeling on Ray needs ray_worker: a picklable function that builds a LabelWorker"
            )
        workers = ray_pool.planned_workers(ray, len(todo)) if todo else 0
        results = ray_pool.map_unordered(label_one, todo, ray_worker, ray)
    else:
        workers = concurrency
        make = thread_worker_factory(labeler, judge, corpus) if concurrency > 1 else lambda: main
        results = threads.map_unordered(label_one, todo, make, concurrency)
    shared_before = _counters(main) if ray is None else {}
    total: dict[str, int] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="label", unit="q", disable=not progress, file=sys.stderr)
    with out.open("a", encoding="utf-8") as f:
        for _, (records, cost) in results:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
            for key, value in cost.items():
                total[key] = total.get(key, 0) + value
            bar.update(1)
            bar.set_postfix(steps=total.get("labeled_steps", 0), rollouts=total.get("rollouts", 0))
    bar.close()
    seconds = time.perf_counter() - t0
    if ray is None:  # local workers share the policy, search and judge: their counters are whole-run totals
        total.update({k: v - shared_before[k] for k, v in _counters(main).items()})
    s = LabelStats(**{f: total.get(f, 0) for f in asdict(LabelStats()) if f != "seconds"}, seconds=seconds)
    labeler.stats = s
    summary = {
        "out": str(out),
        "questions_new": s.questions,
        "questions_resumed": len(done & {q.id for q in questions}),
        "trajectories_new": s.trajectories,
        "samples_new": s.samples,
        "labeled_steps_new": s.labeled_steps,
        "positive_steps_new": s.positive_steps,
        "rollouts": s.rollouts,
        "rollouts_without_prefix_sharing": s.rollouts_naive,
        "nodes": s.nodes,
        "nodes_without_reuse": s.nodes_naive,
        "reader_windows_requested": total.get("reader_windows_requested", 0),
        "reader_windows_computed": total.get("reader_windows_computed", 0),
        "searches_requested": total.get("searches_requested", 0),
        "searches_computed": total.get("searches_computed", 0),
        "seconds": round(s.seconds, 2),
        "rollouts_per_second": round(s.rollouts / s.seconds, 2) if s.seconds > 0 else None,
        "questions_per_second": round(s.questions / s.seconds, 4) if s.seconds > 0 else None,
        "seconds_per_question": round(total["question_seconds"] / s.questions, 3) if s.questions else None,
        "workers": workers,
        "on_ray": ray is not None,
        "config": asdict(labeler.config),
    }
    summary.update(summarise_labels(read_labels(out)) if out.stat().st_size else {})
    if judge is not None and out.stat().st_size:
        summary["judge_vs_mc"] = compare_judge(read_labels(out))
        summary["judge_requests"] = total.get("judge_requests", 0)
    return summary
