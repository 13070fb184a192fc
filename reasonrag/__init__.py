"""reasonrag: agentic RAG driven by stage-specific process rewards.

The public API lives here. Heavy modules (torch, transformers, faiss) load on first use, so
`import reasonrag` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    CorpusError,
    EncoderUnavailableError,
    InputError,
    InvalidIndexError,
    LabelsError,
    ModelError,
    QuestionsError,
    ReasonRAGError,
    UnknownCorpusError,
)
from .types import Hit, Passage, Question

__version__ = "0.1.0"

_LAZY = {
    "build_agent": "agent",
    "run_agent": "agent",
    "AgentState": "agent",
    "NOT_ENOUGH_EVIDENCE": "agent",
    "Corpus": "corpus",
    "load_passages": "corpus",
    "load_questions": "corpus",
    "known_corpora": "corpus",
    "DenseIndex": "index",
    "open_index": "index",
    "DenseRetriever": "retriever",
    "ReasonRAGRetriever": "retriever",
    "LangChainRetrieverAdapter": "retriever",
    "load_encoder": "encoder",
    "Policy": "policy",
    "Candidate": "policy",
    "EmbeddedPolicy": "embedded_policy",
    "EmbeddedPolicyConfig": "embedded_policy",
    "Reader": "reader",
    "Chunk": "reader",
    "normalize_answer": "rewards",
    "exact_match": "rewards",
    "f1_score": "rewards",
    "cover_em": "rewards",
    "evaluate": "evaluate",
    "BacktrackConfig": "agent",
    "compile_steps": "agent",
    "PRM": "prm",
    "load_prm": "prm",
    "step_scorer": "prm",
    "EncoderPRM": "encoder_prm",
    "TransformersPRM": "transformers_prm",
    "PRMTrainingConfig": "prm_training",
    "train_prm": "prm_training",
    "evaluate_prm": "prm_eval",
    "LabelConfig": "labeling",
    "Labeler": "labeling",
    "read_labels": "labeling",
    "aggregate": "rewards",
    "combined_reward": "rewards",
    "select_sample": "selection",
}

__all__ = [
    "AgentState",
    "BacktrackConfig",
    "EncoderPRM",
    "LabelConfig",
    "Labeler",
    "LabelsError",
    "PRM",
    "PRMTrainingConfig",
    "TransformersPRM",
    "aggregate",
    "combined_reward",
    "compile_steps",
    "evaluate_prm",
    "load_prm",
    "read_labels",
    "select_sample",
    "step_scorer",
    "train_prm",
    "Candidate",
    "Chunk",
    "Corpus",
    "CorpusError",
    "DenseIndex",
    "DenseRetriever",
    "EmbeddedPolicy",
    "EmbeddedPolicyConfig",
    "EncoderUnavailableError",
    "Hit",
    "InputError",
    "InvalidIndexError",
    "LangChainRetrieverAdapter",
    "ModelError",
    "NOT_ENOUGH_EVIDENCE",
    "Passage",
    "Policy",
    "Question",
    "QuestionsError",
    "Reader",
    "ReasonRAGError",
    "ReasonRAGRetriever",
    "UnknownCorpusError",
    "build_agent",
    "cover_em",
    "evaluate",
    "exact_match",
    "f1_score",
    "known_corpora",
    "load_encoder",
    "load_passages",
    "load_questions",
    "normalize_answer",
    "open_index",
    "run_agent",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'reasonrag' has no attribute {name!r}")
