"""The plain data types every module shares: passages, questions, hits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of a corpus. `sentences` always holds at least one sentence."""

    id: str
    title: str
    text: str
    sentences: tuple[str, ...]

    @property
    def contents(self) -> str:
        """FlashRAG's `contents` field: what the encoder sees."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class Question:
    """One question with its gold answers; gold evidence lives in `metadata`.

    metadata keys reasonrag reads (all optional):
      - "gold_passages": list of passage ids that support the answer
      - "supporting_facts": list of [passage_id, sentence_index] pairs (sentence-level gold evidence)
      - "type": the dataset's question type (bridge, comparison, ...)
    """

    id: str
    question: str
    golden_answers: list[str]
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A retrieved passage with its similarity score (higher is better)."""

    passage: Passage
    score: float


STAGES = ("retrieve", "extract", "synthesize")
