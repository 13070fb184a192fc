"""One way to name a language model, on the command line (`--llm`, `--judge`) and in Python.

    provider:model        any chat model LangChain's `init_chat_model` knows: openai:gpt-4o-mini,
                          anthropic:claude-3-5-haiku-latest, ollama:llama3.1, ... (pip install
                          "reasonrag[llm]" plus the provider's package, e.g. langchain-openai)
    hf:PATH_OR_NAME       a Hugging Face causal LM, run locally by transformers (a directory, or a hub
                          name -- downloaded only because you named it); a bare directory path works too

`llm_policy(spec)` gives the agent's policy for either kind, `llm_judge(spec)` an LLM-judge PRM, and
`load_llm(spec)` the model itself. A missing package or an unreachable provider is a `ReasonRAGError`
whose message says what to install or check, never a traceback. `register_llm` adds a provider of your
own (a local server, a fake model in tests) under a name that then works everywhere a spec does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, LLMUnavailableError, ModelError
from .tags import one_line

_REGISTRY: dict[str, Callable[..., Any]] = {}
INSTALL_LLM = 'pip install "reasonrag[llm]"'


@dataclass(frozen=True)
class LLMSpec:
    """A parsed model name: `kind` is "chat" (LangChain) or "hf" (transformers)."""

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
    """`provider:model`, `hf:PATH_OR_NAME`, or a local model directory."""
    text = (spec or "").strip()
    if not text:
        raise InputError("--llm needs a model: provider:model (e.g. openai:gpt-4o-mini) or hf:PATH_OR_NAME")
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
        raise InputError(f"{spec} names a transformers model; a chat model is named provider:model")
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


def load_llm(spec: str, **kwargs: Any) -> Any:
    """The model a spec names: a LangChain chat model, or for `hf:` a `TransformersPolicy` (model and
    tokenizer together, ready to propose and to train)."""
    parsed = parse_llm_spec(spec)
    if parsed.kind == "hf":
        from .transformers_policy import TransformersPolicy

        return TransformersPolicy.from_pretrained(parsed.model, **kwargs)
    return load_chat_model(spec, **kwargs)


def policy_config_class(spec: str | Any) -> type:
    """The config dataclass of the policy a spec gives (for `--policy-option KEY=VALUE`)."""
    if isinstance(spec, str) and parse_llm_spec(spec).kind == "hf":
        from .transformers_policy import TransformersPolicyConfig

        return TransformersPolicyConfig
    from .chat_policy import ChatPolicyConfig

    return ChatPolicyConfig


def llm_policy(spec: str | Any, config: Any = None, **options: Any) -> Any:
    """The agent's policy on a language model: a spec string, a LangChain chat model, or a
    `TransformersPolicy`. `options` set config fields, e.g. `llm_policy("ollama:llama3.1", n_candidates=4)`."""
    from .chat_policy import ChatPolicy, config_from_options

    if not isinstance(spec, str) and hasattr(spec, "propose"):  # already a policy (a TransformersPolicy)
        if config is not None or options:
            spec.config = config or config_from_options(type(spec.config), options)
        return spec
    cls = policy_config_class(spec)
    if not isinstance(spec, str):
        return ChatPolicy(spec, config if config is not None else config_from_options(cls, options))
    parsed = parse_llm_spec(spec)
    if parsed.kind == "hf":
        from .transformers_policy import TransformersPolicy

        if config is None:  # a saved policy's own config, with `options` over it
            config_from_options(cls, options)  # unknown or bad options fail here, before loading
            return TransformersPolicy.from_pretrained(parsed.model, **options)
        return TransformersPolicy.from_pretrained(parsed.model, config=config)
    config = config if config is not None else config_from_options(cls, options)
    kwargs = {} if config.temperature is None else {"temperature": config.temperature}
    return ChatPolicy(load_chat_model(spec, **kwargs), config, name=spec, provider=parsed.provider)


def llm_judge(spec: str | Any, config: Any = None, **options: Any) -> Any:
    """An LLM-judge PRM on a chat model (a `provider:model` spec or a LangChain chat model)."""
    from .chat_policy import config_from_options
    from .llm_judge import JudgeConfig, LLMJudgePRM

    config = config if config is not None else config_from_options(JudgeConfig, options)
    if not isinstance(spec, str):
        return LLMJudgePRM(spec, config)
    parsed = parse_llm_spec(spec)
    if parsed.kind == "hf":
        raise InputError(
            f"--judge {spec}: the judge needs a chat model (provider:model, e.g. ollama:llama3.1); "
            "hf: models drive the policy"
        )
    kwargs = {"temperature": config.temperature} if config.temperature is not None else {}
    return LLMJudgePRM(load_chat_model(spec, **kwargs), config, spec=spec, provider=parsed.provider)
