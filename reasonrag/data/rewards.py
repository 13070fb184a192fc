"""Outcome rewards: answer match against gold answers, as plain functions.

The metrics follow the official SQuAD / HotpotQA evaluation (same normalisation, same yes/no rule for F1)
so numbers are comparable with published results. The `*_reward` functions have TRL's reward-function
signature, `fn(completions, **dataset_columns) -> list[float]`, so they plug into a TRL trainer as is.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "OUTCOME_METRICS",
    "cover_em",
    "cover_em_reward",
    "em_reward",
    "exact_match",
    "f1_reward",
    "f1_score",
    "normalize_answer",
]

# ASCII punctuation only, exactly like the official scripts: "–" or "’" stay, so scores match theirs.
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# The official HotpotQA F1 gives 0 when either side is one of these and the two differ.
_SPECIAL_ANSWERS = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (in that order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _golds(golden_answers: str | Sequence[str]) -> list[str]:
    """A single gold answer may be passed as a bare string; never iterate it character by character."""
    if isinstance(golden_answers, str):
        return [golden_answers]
    return list(golden_answers)


def exact_match(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in _golds(golden_answers)))


def _f1_single(pred: str, gold: str) -> float:
    if (pred in _SPECIAL_ANSWERS or gold in _SPECIAL_ANSWERS) and pred != gold:
        return 0.0
    pred_tokens = pred.split()
    gold_tokens = gold.split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """Token-level F1 of the normalised strings, the best over gold answers (official HotpotQA rules)."""
    pred = normalize_answer(prediction)
    return max((_f1_single(pred, normalize_answer(gold)) for gold in _golds(golden_answers)), default=0.0)


def cover_em(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """1.0 if some normalised gold answer appears in the normalised prediction as whole tokens.

    FlashRAG calls this `acc`; matching whole tokens keeps "1" from matching inside "1990". Gold answers
    that normalise to nothing never match, or every prediction would count as correct.
    """
    pred = f" {normalize_answer(prediction)} "
    for gold in _golds(golden_answers):
        norm = normalize_answer(gold)
        if norm and f" {norm} " in pred:
            return 1.0
    return 0.0


OUTCOME_METRICS: dict[str, Callable[[str, str | Sequence[str]], float]] = {
    "em": exact_match,
    "f1": f1_score,
    "cover_em": cover_em,
}


def _completion_text(completion: Any) -> str:
    """TRL passes plain strings, or for conversational data a list of messages: score the last one."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    raise TypeError(
        f"a completion must be a string or a list of chat messages, got {type(completion).__name__}"
    )


def _batch(
    metric: Callable[[str, str | Sequence[str]], float],
    completions: Sequence[Any],
    golden_answers: Sequence[str | Sequence[str]],
) -> list[float]:
    if len(completions) != len(golden_answers):
        raise ValueError(
            f"got {len(completions)} completions but {len(golden_answers)} golden_answers rows; "
            "they must line up one to one"
        )
    return [metric(_completion_text(c), g) for c, g in zip(completions, golden_answers, strict=True)]


def em_reward(
    completions: Sequence[Any], golden_answers: Sequence[str | Sequence[str]], **kwargs: Any
) -> list[float]:
    """TRL reward function: exact match of each completion against its row's gold answers."""
    return _batch(exact_match, completions, golden_answers)


def f1_reward(
    completions: Sequence[Any], golden_answers: Sequence[str | Sequence[str]], **kwargs: Any
) -> list[float]:
    """TRL reward function: token F1 of each completion against its row's gold answers."""
    return _batch(f1_score, completions, golden_answers)


def cover_em_reward(
    completions: Sequence[Any], golden_answers: Sequence[str | Sequence[str]], **kwargs: Any
) -> list[float]:
    """TRL reward function: cover-EM (gold answer contained in the completion) per row."""
    return _batch(cover_em, completions, golden_answers)


# -- process rewards: aggregating step scores, and the combined reward -------------------------------------
def _scores(step_scores: Sequence[float]) -> list[float]:
    scores = [float(s) for s in step_scores]
    if not scores:
        raise ValueError("a trajectory needs at least one step score to aggregate")
    if any(not 0.0 <= s <= 1.0 for s in scores):
        raise ValueError(f"step scores must lie in [0, 1], got {scores}")
    return scores


def aggregate_min(step_scores: Sequence[float]) -> float:
    """The weakest step: a path is only as good as its worst move (the seed's best-of-N rule)."""
    return min(_scores(step_scores))


def aggregate_prod(step_scores: Sequence[float]) -> float:
    """Product: every step must go right, read as independent chances."""
    out = 1.0
    for s in _scores(step_scores):
        out *= s
    return out


def aggregate_mean(step_scores: Sequence[float]) -> float:
    return sum(_scores(step_scores)) / len(step_scores)


def aggregate_last(step_scores: Sequence[float]) -> float:
    """The final step's score alone: an outcome-style judgement of where the path ended."""
    return _scores(step_scores)[-1]


AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": aggregate_min,
    "prod": aggregate_prod,
    "mean": aggregate_mean,
    "last": aggregate_last,
}


def aggregate(step_scores: Sequence[float], how: str = "min") -> float:
    """Trajectory score from step scores by `min` (default), `prod`, `mean` or `last`."""
    try:
        fn = AGGREGATIONS[how]
    except KeyError:
        raise ValueError(f"unknown aggregation {how!r}: use one of {', '.join(AGGREGATIONS)}") from None
    return fn(step_scores)


def combined_reward(outcome: float, step_scores: Sequence[float], alpha: float = 0.5) -> float:
    """`alpha * R_outcome + (1 - alpha) * mean_t r_t`: alpha 1 is outcome only, 0 process only."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if alpha == 1.0:
        return float(outcome)
    return alpha * float(outcome) + (1.0 - alpha) * aggregate_mean(step_scores)
