"""How good is a PRM: per-stage AUROC and F1 against held-out MC labels and against gold evidence.

Gold step correctness: a retrieve step is right when it brought in a gold paragraph, an extract step when
it kept a gold supporting sentence (a sentence of a gold paragraph where only paragraphs are known), a
synthesize step when its answer matches. A synthesize step that asks for another hop has no gold label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reasonrag.data.rewards import exact_match
from reasonrag.data.types import STAGES, Question

CONTINUE, INSUFFICIENT = "another hop", "not enough evidence"


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None unless both classes occur."""
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    pos = sum(1 for _, y in pairs if y)
    neg = len(pairs) - pos
    if pos == 0 or neg == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(pairs):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        mid = (i + j) / 2 + 1
        rank_sum += mid * sum(1 for k in range(i, j + 1) if pairs[k][1])
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def f1_at(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> float | None:
    """F1 of "score >= threshold" as a prediction of the label; None without positives."""
    tp = sum(1 for s, y in zip(scores, labels) if s >= threshold and y)
    fp = sum(1 for s, y in zip(scores, labels) if s >= threshold and not y)
    fn = sum(1 for s, y in zip(scores, labels) if s < threshold and y)
    if tp + fn == 0:
        return None
    return 2 * tp / max(2 * tp + fp + fn, 1)


def gold_step_labels(steps: Sequence[Mapping[str, Any]], question: Question) -> list[int | None]:
    """1/0 per step by gold evidence (see the module doc), None where gold says nothing."""
    meta = question.metadata or {}
    gold_passages = set(meta.get("gold_passages") or [])
    facts = {(pid, int(i)) for pid, i in meta.get("supporting_facts") or []}
    out: list[int | None] = []
    for step in steps:
        stage, obs = step.get("stage"), step.get("observation")
        if stage == "retrieve":
            ids = {o.get("id") for o in obs or [] if isinstance(o, Mapping)}
            out.append(int(bool(ids & gold_passages)) if gold_passages else None)
        elif stage == "extract":
            kept = [o for o in obs or [] if isinstance(o, Mapping) and "passage_id" in o]
            if facts:
                out.append(int(any((o["passage_id"], int(o["sentence_index"])) in facts for o in kept)))
            elif gold_passages:
                out.append(int(any(o["passage_id"] in gold_passages for o in kept)))
            else:
                out.append(None)
        elif stage == "synthesize":
            if not isinstance(obs, str) or obs == CONTINUE:
                out.append(None)
            elif obs == INSUFFICIENT:
                out.append(0)
            else:
                out.append(int(exact_match(obs, question.golden_answers) >= 1.0))
        else:
            out.append(None)
    return out


def _metrics(scores: list[float], labels: list[int]) -> dict[str, Any]:
    a = auroc(scores, labels)
    f = f1_at(scores, labels)
    return {
        "n": len(labels),
        "positive_rate": round(sum(labels) / len(labels), 4) if labels else None,
        "auroc": None if a is None else round(a, 4),
        "f1": None if f is None else round(f, 4),
    }


def per_stage(
    scores: Sequence[Sequence[float]], labels: Sequence[Sequence[int | None]], stages: Sequence[Sequence[str]]
) -> dict[str, dict[str, Any]]:
    """AUROC/F1 per stage over every step that has a label."""
    by: dict[str, tuple[list[float], list[int]]] = {s: ([], []) for s in STAGES}
    for ss, ls, st in zip(scores, labels, stages):
        for s, y, stage in zip(ss, ls, st):
            if y is not None and s is not None:
                by[stage][0].append(float(s))
                by[stage][1].append(int(y))
    return {stage: _metrics(*by[stage]) for stage in STAGES if by[stage][1]}


def score_records(prm: Any, records: Sequence[Mapping[str, Any]], batch_size: int = 64) -> list[list[float]]:
    """Every step of every record scored, `batch_size` trajectories per PRM call."""
    scores: list[list[float]] = []
    for i in range(0, len(records), batch_size):
        scores.extend(prm.score(records[i : i + batch_size]))
    return scores


def evaluate_prm(
    prm: Any, records: list[dict], questions: Mapping[str, Question] | None = None, batch_size: int = 64
) -> dict[str, Any]:
    """A PRM against MC labels (hard: any rollout succeeded) and gold evidence, per stage.

    Also reports how well the MC values themselves track gold step correctness.
    """
    scores = score_records(prm, records, batch_size)
    stages = [[s["stage"] for s in r["steps"]] for r in records]
    out: dict[str, Any] = {
        "trajectories": len(records),
        "vs_mc": per_stage(scores, [r["labels"] for r in records], stages),
    }
    if questions:
        keep = [i for i, r in enumerate(records) if r.get("question_id") in questions]
        gold = [gold_step_labels(records[i]["steps"], questions[records[i]["question_id"]]) for i in keep]
        st = [stages[i] for i in keep]
        out["vs_gold"] = per_stage([scores[i] for i in keep], gold, st)
        mc_values = [[v if v is not None else 0.0 for v in records[i]["values"]] for i in keep]
        out["mc_vs_gold"] = per_stage(mc_values, gold, st)
    return out


def prm_auroc_of_records(records: list[dict], questions: Mapping[str, Question]) -> dict[str, float | None]:
    """Per-stage AUROC of the step scores in eval records (`steps[*].score`) against gold evidence."""
    scores, labels, stages = [], [], []
    for r in records:
        steps = r.get("steps") or []
        if not steps or any(s.get("score") is None for s in steps) or r["id"] not in questions:
            continue
        scores.append([s["score"] for s in steps])
        labels.append(gold_step_labels(steps, questions[r["id"]]))
        stages.append([s["stage"] for s in steps])
    return {stage: m["auroc"] for stage, m in per_stage(scores, labels, stages).items()}


def _as_step(stage: str, observed: Any) -> dict:
    """A critic alternative's compact observation as a step `gold_step_labels` can judge."""
    if stage == "retrieve":
        return {"stage": stage, "observation": [{"id": i} for i in observed or []]}
    if stage == "extract":
        return {
            "stage": stage,
            "observation": [{"passage_id": p, "sentence_index": i} for p, i in observed or []],
        }
    return {"stage": stage, "observation": observed}


def sibling_top1(records: Sequence[Mapping[str, Any]], questions: Mapping[str, Question]) -> dict[str, Any]:
    """How well the choice among sibling candidates goes, per stage, where the critic executed several.

    Of the states with at least one right candidate (by gold, as `gold_step_labels` judges a step), the
    share where the pick is right: the PRM's pick (the executed step) and the policy's (its most probable
    executed candidate), on the same states; `states` counts them.
    """
    hits: dict[str, dict[str, list[int]]] = {s: {"prm": [], "policy": []} for s in STAGES}
    for r in records:
        question = questions.get(r.get("id"))
        if question is None:
            continue
        for step in r.get("steps") or []:
            alternatives = [a for a in step.get("critic") or [] if "observed" in a]
            if len(alternatives) < 2:
                continue
            stage = step["stage"]
            labels = gold_step_labels([_as_step(stage, a["observed"]) for a in alternatives], question)
            prm_pick = max(range(len(alternatives)), key=lambda j: (alternatives[j]["score"], -j))
            policy_pick = max(range(len(alternatives)), key=lambda j: (alternatives[j]["prob"], -j))
            # "Another hop" has no gold label: a state where either pick is one is left out
            if not any(labels) or labels[prm_pick] is None or labels[policy_pick] is None:
                continue
            hits[stage]["prm"].append(int(labels[prm_pick]))
            hits[stage]["policy"].append(int(labels[policy_pick]))
    out: dict[str, Any] = {"states": {s: len(hits[s]["prm"]) for s in STAGES}}
    for chooser in ("prm", "policy"):
        out[chooser] = {
            s: round(100 * sum(hits[s][chooser]) / len(hits[s][chooser]), 1) if hits[s][chooser] else None
            for s in STAGES
        }
    return out
