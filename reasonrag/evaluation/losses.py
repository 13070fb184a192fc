"""Where the wrong answers of a run were lost, from its predictions records alone.

Each answer with F1 below 0.5 is charged to the first stage that failed it, in the order the agent works:
a gold paragraph was never retrieved; every gold paragraph was retrieved but the kept evidence does not
contain a gold answer; or the kept evidence contains it and the reader read another span. Yes/no answers
never appear in evidence, so a wrong yes/no answer with all gold retrieved counts in the second row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reasonrag.data.rewards import normalize_answer

CAUSES = ("gold_paragraph_not_retrieved", "answer_not_in_kept_evidence", "wrong_span_read")


def kept_text(record: Mapping[str, Any]) -> str:
    """Every sentence the run's extract steps kept, normalised and joined."""
    texts = [
        o.get("text", "")
        for s in record.get("steps") or []
        if s.get("stage") == "extract"
        for o in s.get("observation") or []
        if isinstance(o, Mapping)
    ]
    return f" {normalize_answer(' '.join(texts))} "


def loss_cause(record: Mapping[str, Any]) -> str | None:
    """The cause a wrong answer is charged to (None for a right one, F1 of 0.5 or more)."""
    if record.get("f1", 0.0) >= 0.5:
        return None
    if record.get("retrieval_recall", 0.0) < 1.0:
        return CAUSES[0]
    kept = kept_text(record)
    golds = [normalize_answer(a) for a in record.get("golden_answers") or []]
    if not any(g and f" {g} " in kept for g in golds):
        return CAUSES[1]
    return CAUSES[2]


def where_lost(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Counts of wrong answers (F1 < 0.5) by cause, with `questions` and `wrong` for scale."""
    out = {"questions": 0, "wrong": 0, **{c: 0 for c in CAUSES}}
    for r in records:
        out["questions"] += 1
        cause = loss_cause(r)
        if cause is not None:
            out["wrong"] += 1
            out[cause] += 1
    return out
