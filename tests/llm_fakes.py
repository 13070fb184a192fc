"""Scripted chat models for tests: replies computed from the prompt, so runs are deterministic.

`ScriptedChatModel(respond=fn)` answers every call with `fn(stage, user_text, call_index)`; the stage is
read from the task line of our prompts. `StructuredChatModel` also supports `with_structured_output`
(tool calls), the way provider models do. `harbor_lights_agent` is a small but sensible policy for the
tiny test corpus: it searches, cites the sentences that name a director or a birthplace, and answers.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from reasonrag.llm.models import register_llm


def stage_of(messages: list[BaseMessage]) -> str:
    """Which stage (or "judge") a conversation of ours asks for, from its first user message."""
    text = str(messages[1].content if len(messages) > 1 else messages[0].content)
    if "<score>" in text:
        return "judge"
    if "Write one search query" in text:
        return "retrieve"
    if "Pick the new sentences" in text:
        return "extract"
    return "synthesize"


class ScriptedChatModel(BaseChatModel):
    """A chat model whose reply is `respond(stage, user_text, call_index)`; thread-safe, counts calls."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    respond: Callable[[str, str, int], str]
    model_name: str = "scripted"
    _calls: list = PrivateAttr(default_factory=list)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def calls(self) -> list[tuple[str, str]]:
        return self._calls

    def _reply(self, messages: list[BaseMessage]) -> tuple[str, str, int]:
        stage = stage_of(messages)
        user = str(messages[-1].content)
        with self._lock:
            index = len(self._calls)
            self._calls.append((stage, user))
        return stage, user, index

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        stage, user, index = self._reply(messages)
        text = self.respond(stage, str(messages[1].content if len(messages) > 1 else user), index)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class StructuredChatModel(ScriptedChatModel):
    """Also answers with tool calls, so `with_structured_output` works: `fields(stage, text, i)` gives the
    arguments (a dict), or None for a reply without a tool call."""

    fields: Callable[[str, str, int], dict | None]

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self.bind(tools=tools, **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, tools=None, **kwargs) -> ChatResult:
        if not tools:
            return super()._generate(messages, stop, run_manager, **kwargs)
        stage, user, index = self._reply(messages)
        args = self.fields(stage, str(messages[1].content), index)
        calls = (
            []
            if args is None
            else [{"name": tools[0].__name__, "args": args, "id": f"c{index}", "type": "tool_call"}]
        )
        message = AIMessage(content="" if calls else "I cannot decide.", tool_calls=calls)
        return ChatResult(generations=[ChatGeneration(message=message)])


# -- a sensible scripted policy for tests/data/tiny_corpus.jsonl ---------------------------------------------
SENTENCE = re.compile(r"^\[(\d+)\] (.*)$", re.M)


def numbered(user_text: str) -> list[tuple[int, str]]:
    return [(int(n), text) for n, text in SENTENCE.findall(user_text)]


def evidence_lines(user_text: str) -> str:
    m = re.search(r"Evidence kept so far:\n<data>\n(.*?)\n</data>", user_text, re.S)
    return m.group(1) if m else ""


def harbor_lights_agent(answers: tuple[str, ...] = ("Enugu",)) -> Callable[[str, str, int], str]:
    """Hop 1 asks the question, hop 2 the director's birthplace; extract cites director and birth
    sentences; synthesize answers (cycling through `answers` by call) once a birthplace is kept."""

    def respond(stage: str, text: str, index: int) -> str:
        evidence = evidence_lines(text)
        if stage == "retrieve":
            if "directed by" in evidence:
                return "Sure.\n<query>Miriam Okafor birthplace</query>"
            question = re.search(r"Question: <data>(.*?)</data>", text).group(1)
            return f"<query>{question}</query>"
        if stage == "extract":
            keep = [n for n, s in numbered(text) if "directed by" in s or "was born in" in s]
            return "<evidence>" + (" ".join(f"[{n}]" for n in keep) or "none") + "</evidence>"
        if stage == "synthesize":
            if "was born in" in evidence or "No more searches" in text:
                return f"<answer>{answers[index % len(answers)]}</answer>"
            return "<query>where was the director born</query>"
        return "<score>5</score>"

    return respond


def plain_agent(stage: str, text: str, index: int) -> str:
    """A policy for any corpus whose reply is a function of the prompt alone (so runs in any order agree):
    search the question, cite the first two new sentences, answer with the first kept sentence's title."""
    if stage == "retrieve":
        return f"<query>{re.search(r'Question: <data>(.*?)</data>', text).group(1)}</query>"
    if stage == "extract":
        return "<evidence>[1] [2]</evidence>" if numbered(text) else "<evidence>none</evidence>"
    first = re.search(r"^\(1\) (.*?):", evidence_lines(text), re.M)
    return f"<answer>{first.group(1) if first else 'unknown'}</answer>"


def sleeping(respond: Callable[[str, str, int], str], seconds: float) -> Callable[[str, str, int], str]:
    """`respond` after a pause of `seconds` per request, as a model server's latency (concurrency tests)."""

    def slow(stage: str, text: str, index: int) -> str:
        time.sleep(seconds)
        return respond(stage, text, index)

    return slow


def hashed_judge(stage: str, text: str, index: int) -> str:
    """A judge whose grade is a fixed function of the prompt (so it is deterministic and stage-specific)."""
    return f"Grade follows. <score>{int(hashlib.sha256(text.encode()).hexdigest(), 16) % 11}</score>"


def register_scripted(provider: str, respond: Callable[[str, str, int], str]) -> None:
    """`provider:anything` specs now build a fresh ScriptedChatModel with `respond`."""
    register_llm(provider, lambda name, **kw: ScriptedChatModel(respond=respond, model_name=name))


# -- a tiny causal LM (random weights, built offline) -----------------------------------------------------
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tiny_llama_policy(*, seed: int = 0, chat_template: bool = False, **config: Any):
    """A TransformersPolicy on a 2-layer, 32-wide random Llama with the offline MiniLM WordPiece tokenizer;
    seeded without touching the global torch RNG state."""
    import copy

    import torch
    from prm_factories import _tokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig

    from reasonrag.policies.transformers_lm import TransformersPolicy, TransformersPolicyConfig

    tokenizer = copy.deepcopy(_tokenizer())
    if chat_template:
        tokenizer.chat_template = TEMPLATE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(
            LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                intermediate_size=64,
                max_position_embeddings=2048,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
            )
        )
    config.setdefault("max_new_tokens", 12)
    return TransformersPolicy(model, tokenizer, TransformersPolicyConfig(**config))


def varied_agent(stage: str, text: str, index: int) -> str:
    """Replies that differ from call to call (three kinds per stage), for conformance suites: the first hop
    still asks the question itself."""
    question = re.search(r"Question: <data>(.*?)</data>", text).group(1)
    if stage == "retrieve":
        if "none yet" in text:
            return f"<query>{question}</query>"
        return ["<query>{q}</query>", "<query>Miriam Okafor</query>", "<query>director of {q}</query>"][
            index % 3
        ].format(q=question)
    if stage == "extract":
        return ["<evidence>[1]</evidence>", "<evidence>[1] [3]</evidence>", "<evidence>none</evidence>"][
            index % 3
        ]
    return ["<answer>Enugu</answer>", "<query>more about the director</query>", "<answer>Lisbon</answer>"][
        index % 3
    ]
