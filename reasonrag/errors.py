"""Errors with stable codes, so the CLI and callers can tell failures apart without parsing messages."""

from __future__ import annotations


class ReasonRAGError(Exception):
    """Base of every error reasonrag raises on purpose; `code` is stable across releases."""

    code = "REASONRAG_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class CorpusError(ReasonRAGError):
    """A corpus file is malformed: the message names the file and line."""

    code = "INVALID_CORPUS"


class QuestionsError(ReasonRAGError):
    """A questions file is malformed: the message names the file and line."""

    code = "INVALID_QUESTIONS"


class UnknownCorpusError(ReasonRAGError):
    """A corpus name is neither shipped nor a path; the message lists the known ones."""

    code = "UNKNOWN_CORPUS"


class EncoderUnavailableError(ReasonRAGError):
    """The sentence encoder cannot be loaded offline; the message says how to get it."""

    code = "ENCODER_UNAVAILABLE"


class InvalidIndexError(ReasonRAGError):
    """A saved index is stale or unreadable."""

    code = "INVALID_INDEX"


class RetrieverUnavailableError(ReasonRAGError):
    """A retrieval server cannot be reached, or does not answer with the /retrieve contract."""

    code = "RETRIEVER_UNAVAILABLE"


class MissingDependencyError(ReasonRAGError):
    """An optional extra is not installed; the message names the pip command that installs it."""

    code = "MISSING_DEPENDENCY"


class ModelError(ReasonRAGError):
    """A trained artifact (reader, PRM, policy) is missing or does not match its manifest."""

    code = "INVALID_MODEL"


class InputError(ReasonRAGError):
    """Bad user input on the command line or in the Python API (empty question, bad option)."""

    code = "INVALID_INPUT"


class LabelsError(ReasonRAGError):
    """A step-labels file is malformed or not ours; the message names the file and line."""

    code = "INVALID_LABELS"


class LLMOutputError(ReasonRAGError):
    """A language model's reply could not be read (no usable tag) after the allowed retries."""

    code = "LLM_OUTPUT"


class LLMUnavailableError(ReasonRAGError):
    """A language model cannot be loaded or reached: a missing package, key, server or model."""

    code = "LLM_UNAVAILABLE"


class PredictionsError(ReasonRAGError):
    """An eval predictions file is not ours or was made with another setting; names the file and line."""

    code = "INVALID_PREDICTIONS"


class PortInUseError(ReasonRAGError):
    """A server cannot listen where it was asked: the port is taken (or the address is not this host's)."""

    code = "PORT_IN_USE"


class RejectError(InputError, ValueError):
    """A step cannot be rejected (no such step, no branch point, no alternative left). A ValueError too, so
    servers that show only built-in errors' messages (the LangGraph Agent Server) show this one."""

    code = "CANNOT_REJECT"
