"""A language model as the agent's policy, from a spec (`provider:model`, `hf:PATH`, `gguf:PATH`) or a model object."""

from __future__ import annotations

from typing import Any

from reasonrag.llm.models import load_chat_model, parse_llm_spec


def load_llm(spec: str, **kwargs: Any) -> Any:
    """The model a spec names: a LangChain chat model, or for `hf:` and `gguf:` a `TransformersPolicy`
    (model and tokenizer together, ready to propose and to train)."""
    parsed = parse_llm_spec(spec)
    if parsed.kind in LOCAL:
        from reasonrag.policies.transformers_lm import TransformersPolicy

        return TransformersPolicy.from_pretrained(_local_target(parsed), **kwargs)
    return load_chat_model(spec, **kwargs)


LOCAL = ("hf", "gguf")


def _local_target(parsed: Any) -> str:
    return f"gguf:{parsed.model}" if parsed.kind == "gguf" else parsed.model


def policy_config_class(spec: str | Any) -> type:
    """The config dataclass of the policy a spec gives (for `--policy-option KEY=VALUE`)."""
    if isinstance(spec, str) and parse_llm_spec(spec).kind in LOCAL:
        from reasonrag.policies.transformers_lm import TransformersPolicyConfig

        return TransformersPolicyConfig
    from reasonrag.policies.chat_model import ChatPolicyConfig

    return ChatPolicyConfig


def llm_policy(spec: str | Any, config: Any = None, **options: Any) -> Any:
    """The agent's policy on a language model: a spec string, a LangChain chat model, or a
    `TransformersPolicy`. `options` set config fields, e.g. `llm_policy("ollama:llama3.1", n_candidates=4)`."""
    from reasonrag.llm.models import config_from_options
    from reasonrag.policies.chat_model import ChatPolicy

    if not isinstance(spec, str) and hasattr(spec, "propose"):  # already a policy (a TransformersPolicy)
        if config is not None or options:
            spec.config = config or config_from_options(type(spec.config), options)
        return spec
    cls = policy_config_class(spec)
    if not isinstance(spec, str):
        return ChatPolicy(spec, config if config is not None else config_from_options(cls, options))
    parsed = parse_llm_spec(spec)
    if parsed.kind in LOCAL:
        from reasonrag.policies.transformers_lm import TransformersPolicy

        target = _local_target(parsed)
        if config is None:  # a saved policy's own config, with `options` over it
            config_from_options(cls, options)  # unknown or bad options fail here, before loading
            return TransformersPolicy.from_pretrained(target, **options)
        return TransformersPolicy.from_pretrained(target, config=config)
    config = config if config is not None else config_from_options(cls, options)
    kwargs = {} if config.temperature is None else {"temperature": config.temperature}
    if getattr(config, "base_url", None):
        kwargs["base_url"] = config.base_url
    return ChatPolicy(load_chat_model(spec, **kwargs), config, name=spec, provider=parsed.provider)
