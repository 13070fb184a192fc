"""One way to name a language model, on the command line (`--llm`, `--judge`) and in Python.

    provider:model        any chat model LangChain's `init_chat_model` knows: openai:gpt-4o-mini,
                          anthropic:claude-3-5-haiku-latest, ollama:llama3.1, ... (pip install
                          "reasonrag[llm]" plus the provider's package, e.g. langchain-openai)
    hf:PATH_OR_NAME       a Hugging Face causal LM, run locally by transformers (a directory, or a hub
                          name -- downloaded only because you named it); a bare directory path works too
    gguf:PATH             a local GGUF file (a quantised SmolLM2, Qwen2.5, Llama...), run by transformers
                          (pip install "reasonrag[gguf]") or by llama.cpp (see `reasonrag.llm.local`);
                          a bare path ending in .gguf works too

`llm_policy(spec)` gives the agent's policy for either kind, `llm_judge(spec)` an LLM-judge PRM, and
`load_llm(spec)` the model itself. A missing package or an unreachable provider is a `ReasonRAGError`
whose message says what to install or check, never a traceback. `register_llm` adds a provider of your
own (a local server, a fake model in tests) under a name that then works everywhere a spec does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from reasonrag.errors import InputError, LLMUnavailableError, ModelError
from reasonrag.llm.tags import one_line

_REGISTRY: dict[str, Callable[..., Any]] = {}
INSTALL_LLM = 'pip install "reasonrag[llm]"'


@dataclass(frozen=True)
class LLMSpec:
    """A parsed model name: `kind` is "chat" (LangChain), "hf" (transformers) or "gguf" (a local GGUF file)."""

    kind: str
    provider: str | None
    model: str
    text: str


def register_llm(provider: str, factory: Callable[..., Any]) -> None:
    """Make `provider:NAME` specs build chat models with `factory(NAME, **kwargs)`."""
    if not provider or ":" in provider:
        raise InputError(f"a provider name is a word without ':', got {provider!r}")
    _REGISTRY[provider.lower()] = factory


def parse_llm_spec(spec: str) -> LLMSpec:
    """`provider:model`, `hf:PATH_OR_NAME`, `gguf:PATH`, or a local model directory or .gguf file."""
    text = (spec or "").strip()
    if not text:
        raise InputError(
            "--llm needs a model: provider:model (e.g. openai:gpt-4o-mini), hf:PATH_OR_NAME or gguf:PATH"
        )
    if text.lower().startswith("gguf:") or text.lower().endswith(".gguf"):
        from reasonrag.llm.local import gguf_path

        target = text[5:].strip() if text.lower().startswith("gguf:") else text
        if not target:
            raise InputError("gguf: needs the path of a .gguf file, e.g. gguf:/path/to/model.gguf")
        return LLMSpec("gguf", "gguf", str(gguf_path(f"gguf:{target}")), text)
    if text.lower().startswith("hf:"):
        target = text[3:].strip()
        if not target:
            raise InputError("hf: needs a model directory or hub name, e.g. hf:/path/to/model")
        return LLMSpec("hf", "hf", target, text)
    if Path(text).expanduser().is_dir():
        return LLMSpec("hf", "hf", text, text)
    if text.startswith((os.sep, ".", "~")):
        raise ModelError(f"no model directory at {text}")
    provider, sep, model = text.partition(":")
    if sep and provider.strip() and model.strip():
        return LLMSpec("chat", provider.strip().lower(), model.strip(), text)
    return LLMSpec("chat", None, text, text)  # init_chat_model infers the provider (gpt-4o -> openai)


def load_chat_model(spec: str, **kwargs: Any) -> Any:
    """A LangChain chat model from `provider:model`; keyword arguments go to the model (temperature...)."""
    parsed = parse_llm_spec(spec)
    if parsed.kind != "chat":
        raise InputError(f"{spec} names a local model; a chat model is named provider:model")
    if parsed.provider in _REGISTRY:
        return _REGISTRY[parsed.provider](parsed.model, **kwargs)
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise LLMUnavailableError(
            f"{spec} needs LangChain: {INSTALL_LLM} (and the provider's package, e.g. langchain-openai)"
        ) from None
    try:
        if parsed.provider:
            return init_chat_model(parsed.model, model_provider=parsed.provider, **kwargs)
        return init_chat_model(parsed.model, **kwargs)
    except ImportError as exc:
        raise LLMUnavailableError(f"{spec}: {one_line(str(exc), 300)}") from None
    except ValueError as exc:
        raise InputError(f"{spec}: {one_line(str(exc), 400)}") from None
    except Exception as exc:  # noqa: BLE001 - a provider's own check (a missing API key, say)
        raise LLMUnavailableError(f"{spec}: {one_line(f'{type(exc).__name__}: {exc}', 300)}") from None


def config_from_options(cls: type, options: dict[str, Any]) -> Any:
    """A config dataclass from keyword options, with a clear error naming the unknown ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}: use {', '.join(sorted(known))}")
    return cls(**options)


# -- the policy -------------------------------------------------------------------------------------------
def content_text(message: Any) -> str:
    """The text of a chat message whose content is a string or a list of content blocks."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
        return "".join(parts)
    return "" if content is None else str(content)


def model_name(model: Any) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def call_error(name: str, exc: BaseException, provider: str | None = None) -> LLMUnavailableError:
    """One clear line for a failed model call (no server, no key, no model), with a hint where one helps."""
    message = one_line(f"{type(exc).__name__}: {exc}", 300)
    hint = ""
    low = message.lower()
    if provider == "ollama" or "ollama" in name.lower() or "11434" in low:
        hint = " (is `ollama serve` running, and the model pulled with `ollama pull MODEL`?)"
    elif "api key" in low or "api_key" in low or "authentication" in low or "401" in low:
        hint = " (set the provider's API key, e.g. OPENAI_API_KEY)"
    elif "connect" in low or "timed out" in low or "timeout" in low:
        hint = " (the provider cannot be reached: check the network or the server address)"
    return LLMUnavailableError(f"the language model {name} failed: {message}{hint}")
