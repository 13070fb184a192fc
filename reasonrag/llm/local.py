"""Local language models: a Hugging Face directory, a hub name, or a GGUF file, on this machine's CPU or GPU.

`load_causal_lm` gives (model, tokenizer) for any of them; a GGUF file (`gguf:PATH`, e.g. a quantised
SmolLM2 or Qwen2.5) loads through transformers, which dequantises it to torch, so everything the
transformers policy does (log-probs, training) works on it. `LocalChatModel` puts a local model behind
the one method of a LangChain chat model the judge and the chat policy call (`batch` of conversations ->
replies), so a local model grades steps exactly as a hosted one does. When llama-cpp-python is installed,
`LlamaCppChatModel` does the same on llama.cpp's own quantised kernels.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from reasonrag.errors import LLMUnavailableError, ModelError
from reasonrag.llm.tags import one_line

INSTALL_GGUF = 'pip install "reasonrag[gguf]"'
GET_GGUF = "a GGUF model file (python scripts/gguf_models.py smollm2 fetches SmolLM2-135M-Instruct)"


def gguf_path(target: str | Path) -> Path | None:
    """The GGUF file `target` names, or None when it names something else (a directory, a hub name)."""
    text = str(target)
    if text.lower().startswith("gguf:"):
        text = text[5:].strip()
    elif not text.lower().endswith(".gguf"):
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelError(f"no GGUF file at {text}: give the path of {GET_GGUF}")
    return path


def load_causal_lm(target: str | Path, *, dtype: Any = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) of a local directory, a GGUF file or a hub name (only a hub name downloads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = str(target)
    gguf = gguf_path(text)
    path = Path(text).expanduser()
    local = gguf is not None or path.is_dir()
    if not local and (text.startswith((os.sep, ".", "~")) or path.exists()):
        raise ModelError(f"no model directory at {text}")
    if gguf is not None:
        try:
            import gguf as _gguf  # noqa: F401 - transformers reads GGUF files with it
        except ImportError:
            raise LLMUnavailableError(
                f"{text}: reading a GGUF file needs the gguf package: {INSTALL_GGUF}"
            ) from None
        where, kwargs = str(gguf.parent), {"gguf_file": gguf.name, "local_files_only": True}
        dtype = "float32" if dtype == "auto" else dtype  # dequantised weights; "auto" would keep f16 on CPU
    else:
        where, kwargs = (str(path) if local else text), {"local_files_only": local}
    try:
        with _gguf_bar_quiet(gguf is not None):
            tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    except Exception as exc:  # a load boundary: any failure means no usable model there
        how = "" if local else " (a hub name downloads: is the network up and the name right?)"
        raise LLMUnavailableError(
            f"cannot load a causal LM from {text!r}{how}: {one_line(f'{type(exc).__name__}: {exc}', 300)}"
        ) from None
    model.eval()
    return model, tokenizer


@contextlib.contextmanager
def _gguf_bar_quiet(active: bool) -> Iterator[None]:
    """Transformers' GGUF dequantisation bar ignores its progress-bar switch: honour the switch here."""
    from transformers.utils import logging as hf_logging

    if not active or hf_logging.is_progress_bar_enabled():
        yield
        return
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def expectation(spelled: dict[int, list[int]], p1: Any, p2: dict[int, Any], numbers: Sequence[int]) -> float:
    """The mean number under next-token probabilities `p1` (and `p2[t]`, those after a first token `t` that
    can start a two-token number), renormalised over `numbers`."""
    mass = {}
    for n, t in spelled.items():
        if len(t) == 2:
            mass[n] = float(p1[t[0]]) * float(p2[t[0]][t[1]])
        elif t[0] in p2:  # "1" alone: the share of "1" not followed by the digit that makes "10"
            longer = sum(float(p2[t[0]][u[1]]) for u in spelled.values() if len(u) == 2 and u[0] == t[0])
            mass[n] = float(p1[t[0]]) * (1 - longer)
        else:
            mass[n] = float(p1[t[0]])
    total = sum(mass.values())
    return sum(n * m for n, m in mass.items()) / total if total > 0 else float(numbers[0])


def chat_prompt(tokenizer: Any, messages: Sequence[tuple[str, str]]) -> str:
    """Messages through the tokenizer's chat template (a system turn folded in where refused), or a plain
    prompt for a model without one; the reply starts right after."""
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": role, "content": text} for role, text in messages]
        try:
            return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - some templates refuse a system turn: fold it into the user's
            merged = [{"role": "user", "content": "\n\n".join(text for _, text in messages)}]
            return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
    return plain_prompt(messages)


def plain_prompt(messages: Sequence[tuple[str, str]]) -> str:
    """A prompt for a model without a chat template: the turns' texts, then `Reply:`."""
    return "\n\n".join(text for _, text in messages) + "\n\nReply:\n"


def _conversation(convo: Any) -> list[tuple[str, str]]:
    """(role, text) pairs from our tuples, LangChain messages or role/content dicts."""
    kinds = {"human": "user", "ai": "assistant"}
    out = []
    for m in convo:
        if isinstance(m, tuple):
            role, text = m
        elif isinstance(m, dict):
            role, text = m["role"], m["content"]
        else:
            role, text = getattr(m, "type", "user"), getattr(m, "content", "")
        out.append((kinds.get(role, role), str(text)))
    return out


class LocalChatModel:
    """A local causal LM answering conversations greedily, like a chat model's `batch`.

    `reply_prefix` is written after the generation prompt and starts every reply (e.g. `<score>`, which
    keeps a small model on format); `max_new_tokens` bounds each reply.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 32,
        reply_prefix: str = "",
        name: str | None = None,
        max_prompt_tokens: int = 3072,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens = max_new_tokens
        self.reply_prefix = reply_prefix
        self.max_prompt_tokens = max_prompt_tokens
        self.model_name = name or getattr(getattr(model, "config", None), "_name_or_path", "") or "local"
        eos = tokenizer.eos_token_id
        self._eos = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        pad = tokenizer.pad_token_id
        self._pad = pad if pad is not None else (self._eos[0] if self._eos else 0)
        self._lock = threading.Lock()  # one generate at a time: torch already uses every core

    @classmethod
    def load(cls, target: str | Path, **options: Any) -> LocalChatModel:
        model, tokenizer = load_causal_lm(target)
        gguf = gguf_path(target)
        return cls(
            model,
            tokenizer,
            name=options.pop("name", None) or (gguf.name if gguf else str(target)),
            **options,
        )

    def prompt_ids(self, convo: Any, prefix: str | None = None) -> list[int]:
        """The conversation's prompt, ending with `prefix` (default: the reply prefix)."""
        text = chat_prompt(self.tokenizer, _conversation(convo)) + (
            self.reply_prefix if prefix is None else prefix
        )
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and not getattr(self.tokenizer, "chat_template", None) and ids[:1] != [bos]:
            ids = [bos] + ids
        return ids[-self.max_prompt_tokens :]

    def invoke(self, convo: Any, config: Any = None) -> str:
        return self.batch([convo], config)[0]

    def expected_number(
        self, convos: Sequence[Any], prefix: str, numbers: Sequence[int] = tuple(range(11))
    ) -> list[float]:
        """For each conversation, the mean of the number the model writes right after `prefix`,
        weighted by the model's own probabilities of `numbers` (renormalised over them).

        A grade read this way is never unreadable and is continuous (better for ranking than one sampled
        integer); it costs one forward pass over the prompt, plus one token for each number written in
        two tokens ("10" where digits are single tokens).
        """
        import torch

        spelled = {n: list(self.tokenizer(str(n), add_special_tokens=False)["input_ids"]) for n in numbers}
        if any(not ids or len(ids) > 2 for ids in spelled.values()):
            raise ModelError(f"{self.model_name}: cannot read numbers of more than two tokens as grades")
        seconds = {ids[0] for ids in spelled.values() if len(ids) == 2}  # first tokens that may go on
        params = inspect.signature(self.model.forward).parameters
        cache_name = "cache" if "cache" in params else "past_key_values"  # transformers renamed it in 5.x
        keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        out = []
        with self._lock, torch.no_grad():
            device = next(self.model.parameters()).device
            for convo in convos:
                ids = torch.tensor([self.prompt_ids(convo, prefix)], dtype=torch.long, device=device)
                first = self.model(input_ids=ids, use_cache=bool(seconds), **keep)
                p1 = torch.softmax(first.logits[0, -1].float(), dim=-1)
                cached = getattr(first, cache_name, None)
                p2: dict[int, torch.Tensor] = {}
                for tok in seconds:  # the next token after a first digit that may start a longer number
                    cache = copy.deepcopy(cached) if len(seconds) > 1 else cached
                    step = self.model(
                        input_ids=torch.tensor([[tok]], device=device),
                        use_cache=True,
                        **{cache_name: cache},
                        **keep,
                    )
                    p2[tok] = torch.softmax(step.logits[0, -1].float(), dim=-1)
                out.append(expectation(spelled, p1, p2, numbers))
        return out

    def batch(self, convos: Sequence[Any], config: Any = None) -> list[str]:
        """One greedy reply per conversation (each a string: the reply prefix plus what was generated)."""
        import torch

        out = []
        with self._lock, torch.no_grad():
            device = next(self.model.parameters()).device
            for convo in convos:
                ids = torch.tensor([self.prompt_ids(convo)], dtype=torch.long, device=device)
                gen = self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self._pad,
                    eos_token_id=self._eos or None,
                )
                new = gen[0, ids.shape[1] :]
                out.append(self.reply_prefix + self.tokenizer.decode(new, skip_special_tokens=True))
        return out


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppChatModel:
    """A GGUF model on llama.cpp (`pip install llama-cpp-python`), behind the same `batch` as above.

    The prompt is rendered by the GGUF's own chat template through transformers' tokenizer, exactly as
    for `LocalChatModel`, so both backends see the same text; replies are greedy at temperature 0, else
    sampled with a seed per prompt (and copy of it), so a run repeats.
    """

    def __init__(
        self,
        target: str | Path,
        *,
        max_new_tokens: int = 32,
        reply_prefix: str = "",
        temperature: float = 0.0,
        top_p: float = 0.95,
        n_ctx: int = 4096,
        seed: int = 0,
        n_threads: int | None = None,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LLMUnavailableError(
                "llama.cpp needs llama-cpp-python: pip install llama-cpp-python"
            ) from None
        from transformers import AutoTokenizer

        gguf = gguf_path(f"gguf:{str(target).removeprefix('gguf:')}")
        self.model_name = gguf.name
        self.max_new_tokens, self.reply_prefix = max_new_tokens, reply_prefix
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self._lock = threading.Lock()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, local_files_only=True
            )
            self.llm = Llama(str(gguf), n_ctx=n_ctx, n_threads=n_threads, seed=seed, verbose=False)
        except Exception as exc:  # noqa: BLE001 - a load boundary
            raise LLMUnavailableError(f"llama.cpp cannot load {gguf}: {one_line(str(exc), 300)}") from None

    def invoke(self, convo: Any, config: Any = None) -> str:
        return self.batch([convo], config)[0]

    def _next_probs(self, prompt: str) -> Any:
        """The next-token distribution after `prompt` (reusing the cached prefix of the last prompt read)."""
        import llama_cpp
        import numpy as np

        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        seen = self.llm.input_ids[: self.llm.n_tokens].tolist()
        common = 0
        while common < min(len(seen), len(tokens) - 1) and seen[common] == tokens[common]:
            common += 1
        self.llm.n_tokens = common
        self.llm.eval(tokens[common:])
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1), shape=(self.llm.n_vocab(),)
        ).astype(np.float64)
        probs = np.exp(logits - logits.max())
        return probs / probs.sum()

    def expected_number(
        self, convos: Sequence[Any], prefix: str, numbers: Sequence[int] = tuple(range(11))
    ) -> list[float]:
        """As `LocalChatModel.expected_number`, from llama.cpp's own next-token probabilities."""
        spelled = {n: self.llm.tokenize(str(n).encode(), add_bos=False, special=False) for n in numbers}
        if any(not ids or len(ids) > 2 for ids in spelled.values()):
            raise ModelError(f"{self.model_name}: cannot read numbers of more than two tokens as grades")
        out = []
        with self._lock:
            for convo in convos:
                prompt = chat_prompt(self.tokenizer, _conversation(convo)) + prefix
                p1 = self._next_probs(prompt)
                p2 = {
                    ids[0]: self._next_probs(prompt + self.llm.detokenize([ids[0]]).decode("utf-8"))
                    for ids in spelled.values()
                    if len(ids) == 2
                }
                out.append(expectation(spelled, p1, p2, numbers))
        return out

    def batch(self, convos: Sequence[Any], config: Any = None) -> list[str]:
        out = []
        seen: dict[str, int] = {}
        with self._lock:
            for convo in convos:
                prompt = chat_prompt(self.tokenizer, _conversation(convo)) + self.reply_prefix
                seen[prompt] = seen.get(prompt, -1) + 1  # the i-th copy of a prompt in a batch: its own seed
                digest = hashlib.sha256(f"{self.seed}|{seen[prompt]}|{prompt}".encode()).digest()
                reply = self.llm.create_completion(
                    prompt,
                    max_tokens=self.max_new_tokens,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    seed=int.from_bytes(digest[:4], "big"),
                )
                out.append(self.reply_prefix + reply["choices"][0]["text"])
        return out


BACKENDS = ("transformers", "llama.cpp")


def gguf_backend() -> str:
    """What runs a GGUF model: $REASONRAG_GGUF_BACKEND if set, else transformers."""
    choice = os.environ.get("REASONRAG_GGUF_BACKEND", "").strip().lower() or "transformers"
    if choice not in BACKENDS:
        raise ModelError(f"REASONRAG_GGUF_BACKEND={choice!r}: use one of {', '.join(BACKENDS)}")
    return choice


def local_chat_model(target: str, *, gguf: bool, **options: Any) -> Any:
    """A chat-model-like local model (`batch` of conversations -> replies) for a directory or a GGUF file."""
    if gguf and gguf_backend() == "llama.cpp":
        return LlamaCppChatModel(target, **options)
    return LocalChatModel.load(f"gguf:{target}" if gguf else target, **options)
