"""Bounds on every size a user sets: generous, but finite, so no option can exhaust memory or run unbounded.

The command line rejects a value outside them when it parses the arguments (before any model loads);
the Python API checks them where it takes them (`build_agent`, `run_agent`, `LabelConfig`). docs/guide.md
lists them. Each bound is well past anything measured to help (k 8 and 10 were measured and not adopted;
the shipped questions are at most 254 characters long).
"""

from __future__ import annotations

MAX_K = 100  # passages per retrieve step
MAX_HOPS = 10  # retrieve / extract / synthesize rounds
MAX_BACKTRACKS = 16  # per question (the recursion limit of run_agent allows this many)
MAX_BEST_OF = 64  # trajectories sampled by --best-of
MAX_TRAJECTORIES = 64  # label: trajectories sampled per question
MAX_COMPLETIONS = 64  # label: rollouts from every step
MAX_QUESTION_CHARS = 2000  # one question
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 4096
MAX_HIDDEN = 4096  # hidden units of a trained head
MAX_ROUNDS = 100  # train-policy --online rounds
MAX_SEED = 2**32 - 1  # what numpy and torch both accept


def check_question(question: str, hint: str = "") -> str:
    """The question, stripped; InputError (ending in `hint`) when it is empty or over MAX_QUESTION_CHARS."""
    from reasonrag.errors import InputError

    text = (question or "").strip()
    if not text:
        raise InputError(f"the question is empty{hint}")
    if len(text) > MAX_QUESTION_CHARS:
        raise InputError(
            f"the question has {len(text)} characters; the most is {MAX_QUESTION_CHARS} (ask a question, "
            "not a document)"
        )
    return text


def check_range(name: str, value: int, low: int, high: int) -> int:
    """`value` when low <= value <= high, else InputError naming the option and its bounds."""
    from reasonrag.errors import InputError

    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {value}")
    return value
