"""A policy on any Hugging Face causal LM, run locally: proposes like the chat policy, and trains.

The prompts, the tags and the candidate building are the chat policy's (`reasonrag.policies.chat_model`): the
tokenizer's chat template renders them when it has one, else a plain prompt does. The reply is primed
with the stage's opening tag where only one tag is right (`<query>` to retrieve, `<evidence>` to
extract), which keeps even a small model on format; a synthesize reply that is still prose at the last
retry round gets `<answer>` primed, so it ends in an answer rather than in an error. `n_candidates` completions are sampled in one
batched `generate`; each distinct completion's log-probability (the sum of its token log-probs, under the
model at temperature 1) weighs the action it decides, so a candidate's probability is the model's own.

The same log-probs make it a `TrainablePolicy` (`reasonrag.policies.trainable`): `action_logprobs` is the
sum of the token log-probs of a candidate's completion given the prompt rebuilt from a `Decision`,
normalised over the decision's candidates (as `propose` weighs them), with gradients, so the
policy-gradient and DPO trainers of `reasonrag.training.policy_training` update it directly.
With `lora_r > 0` (and `pip install "reasonrag[lora]"`) only LoRA adapters train.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from reasonrag.data.files import staged_directory, write_json
from reasonrag.errors import InputError, LLMOutputError, LLMUnavailableError, ModelError
from reasonrag.llm.local import chat_prompt
from reasonrag.llm.tags import one_line
from reasonrag.policies.base import ANOTHER_HOP, NOT_ENOUGH, Candidate
from reasonrag.policies.chat_model import (
    NO_EVIDENCE,
    PRIMERS,
    StageView,
    ViewPolicy,
    candidates_from,
    parse_reply,
    sentence_label,
    stage_messages,
    view_of_decision,
)
from reasonrag.policies.trainable import Decision

KIND = "reasonrag-transformers-policy"
ANSWER_PRIMER = "<answer>"
FORMAT = 1


@dataclass
class TransformersPolicyConfig:
    """Knobs of the transformers policy (`--policy-option KEY=VALUE` with `--llm hf:...`)."""

    n_candidates: int = 4  # completions sampled per stage
    temperature: float = 0.8  # sampling temperature; 0 decodes greedily (one candidate)
    top_p: float = 0.95
    max_new_tokens: int = 48
    max_retries: int = 2  # extra sampling rounds when no completion can be read
    max_evidence: int = 4  # most sentences kept per hop
    max_sentences: int = 80  # most new sentences shown per hop
    max_sentence_chars: int = 400
    max_prompt_tokens: int = 3072  # a longer prompt keeps its end
    batch_size: int = 8  # sequences per forward pass when computing log-probs
    seed: int = 0
    device: str | None = None  # e.g. "cuda"; default: where the model already is
    lora_r: int = 0  # > 0 wraps the model in LoRA adapters of this rank (needs peft)
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    cache_size: int = 1024  # proposals remembered by prompt

    def __post_init__(self) -> None:
        if self.n_candidates < 1 or self.max_new_tokens < 1 or self.batch_size < 1 or self.max_evidence < 1:
            raise InputError("n_candidates, max_new_tokens, batch_size and max_evidence must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise InputError("temperature must be at least 0 and top_p in (0, 1]")
        if self.lora_r < 0 or self.max_retries < 0:
            raise InputError("lora_r and max_retries must be at least 0")


def target_completion(view: StageView, text: str) -> str:
    """The completion (after the stage's primer) that decides the candidate `text` in `view`."""
    if view.stage == "retrieve":
        return f"{text}</query>"
    if view.stage == "extract":
        if not text or text == NO_EVIDENCE:
            return "none</evidence>"
        labels = [sentence_label(s) for s in view.sentences]
        numbers = [f"[{labels.index(part) + 1}]" for part in text.split(" | ") if part in labels]
        if not numbers:
            raise InputError(f"the extract candidate {one_line(text, 80)!r} is none of the sentences shown")
        return " ".join(numbers) + "</evidence>"
    if text.startswith(ANOTHER_HOP[:-1]):
        hint = text[len(ANOTHER_HOP) - 1 :].strip(" :)") or view.question
        return f"<query>{hint}</query>"
    if text in (NOT_ENOUGH, "not enough evidence"):
        return "<answer>insufficient</answer>"
    return f"<answer>{text}</answer>"


def _with_lora(model: Any, config: TransformersPolicyConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise LLMUnavailableError('LoRA needs peft: pip install "reasonrag[lora]"') from None
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


class TransformersPolicy(ViewPolicy):
    """`Policy` and `TrainablePolicy` over a causal LM and its tokenizer; see the module doc."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: TransformersPolicyConfig | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self.config = config or TransformersPolicyConfig()
        if self.config.device:
            model = model.to(self.config.device)
        if self.config.lora_r > 0 and not _is_peft(model):
            model = _with_lora(model, self.config)
        self.model, self.tokenizer = model, tokenizer
        self.name = (
            name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        )
        self.info: dict[str, Any] = {}  # manifest keys carried from load to save
        eos = tokenizer.eos_token_id
        if eos is None:
            eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self._eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (self._eos_ids[0] if self._eos_ids else 0)
        base = model.get_base_model() if _is_peft(model) else model
        params = inspect.signature(base.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        self._cache_name = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self._cache: OrderedDict[tuple, list[Candidate]] = OrderedDict()
        self.model.eval()

    # -- loading and saving ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        config: TransformersPolicyConfig | None = None,
        *,
        dtype: Any = "auto",
        **options: Any,
    ) -> TransformersPolicy:
        """A local model directory (ours, with a manifest, or any causal LM), a GGUF file, or a hub name you
        chose. Only a hub name downloads. `options` set config fields.
        """
        from reasonrag.llm.local import gguf_path, load_causal_lm

        text = str(name_or_path)
        path = Path(text).expanduser()
        manifest: dict[str, Any] = {}
        if path.is_dir() and (path / "manifest.json").is_file():
            try:
                manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ModelError(f"{path / 'manifest.json'}: not valid JSON ({exc})") from exc
            if manifest.get("kind") != KIND:
                manifest = {}
        if config is None:
            saved = {
                k: v
                for k, v in (manifest.get("config") or {}).items()
                if k in {f.name for f in fields(TransformersPolicyConfig)}
            }
            config = TransformersPolicyConfig(**{**saved, **options})
        elif options:
            config = replace(config, **options)
        model, tokenizer = load_causal_lm(text, dtype=dtype)
        gguf = gguf_path(text)
        if gguf is not None:
            text = gguf.name
        policy = cls(model, tokenizer, config, name=manifest.get("base") or text)
        policy.info = {k: v for k, v in manifest.items() if k not in ("kind", "format", "config", "base")}
        return policy

    load = from_pretrained

    def save(self, path: str | Path, manifest: dict[str, Any] | None = None) -> Path:
        """Model and tokenizer (safetensors) plus manifest.json, swapped in whole; LoRA is merged first, so
        the directory loads without peft (`--llm hf:DIR`, or `TransformersPolicy.from_pretrained(DIR)`)."""
        path = Path(path)
        with staged_directory(path) as tmp:
            model = self.model
            merged = _is_peft(model)
            if merged:
                model = copy.deepcopy(model).merge_and_unload()
            model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            out = {
                **self.info,
                **(manifest or {}),
                "kind": KIND,
                "format": FORMAT,
                "base": self.name,
                "lora_merged": merged,
                "config": asdict(self.config),
            }
            write_json(tmp / "manifest.json", out)
        return path

    # -- torch plumbing (the trainers call these) ----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def training(self) -> bool:
        return bool(self.model.training)

    def train(self, mode: bool = True) -> TransformersPolicy:
        self.model.train(mode)
        self._cache.clear()  # weights may change from here: proposals made before are stale
        return self

    def eval(self) -> TransformersPolicy:
        return self.train(False)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def frozen_copy(self) -> TransformersPolicy:
        """A frozen reference (KL, DPO): the same weights, no gradients."""
        model = copy.deepcopy(self.model)
        for p in model.parameters():
            p.requires_grad_(False)
        ref = TransformersPolicy(model, self.tokenizer, replace(self.config, device=None), name=self.name)
        ref.eval()
        return ref

    # -- prompts ------------------------------------------------------------------------------------------
    def prompt_text(self, view: StageView, primer: str | None = None) -> str:
        """The stage's messages through the chat template (or a plain prompt), ending with the primer."""
        cfg = self.config
        messages = stage_messages(view, max_evidence=cfg.max_evidence, max_chars=cfg.max_sentence_chars)
        return chat_prompt(self.tokenizer, messages) + (PRIMERS[view.stage] if primer is None else primer)

    def prompt_ids(self, view: StageView, primer: str | None = None) -> list[int]:
        ids = list(self.tokenizer(self.prompt_text(view, primer), add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and not getattr(self.tokenizer, "chat_template", None) and ids[:1] != [bos]:
            ids = [bos] + ids
        return ids[-self.config.max_prompt_tokens :]

    def completion_ids(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids + self._eos_ids[:1]

    # -- log-probs ----------------------------------------------------------------------------------------
    def sequence_logprobs(
        self, prompts: Sequence[list[int]], completions: Sequence[list[int]]
    ) -> torch.Tensor:
        """Sum of each completion's token log-probs given its prompt (gradients flow when enabled)."""
        out: list[torch.Tensor] = []
        device = self.device
        for s in range(0, len(prompts), self.config.batch_size):
            chunk = list(
                zip(prompts[s : s + self.config.batch_size], completions[s : s + self.config.batch_size])
            )
            lengths = [len(p) + len(c) for p, c in chunk]
            width = max(lengths)
            ids = torch.full((len(chunk), width), self._pad_id, dtype=torch.long, device=device)
            mask = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
            for i, (p, c) in enumerate(chunk):
                ids[i, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long, device=device)
                mask[i, : len(p) + len(c)] = 1
            start = max(min(len(p) for p, _ in chunk) - 1, 0)  # logits before the first completion token
            kwargs: dict[str, Any] = {}
            if self._keeps_logits:
                kwargs["logits_to_keep"] = torch.arange(start, width, device=device)
            logits = self.model(input_ids=ids, attention_mask=mask, **kwargs).logits
            offset = start if self._keeps_logits else 0
            for i, (p, c) in enumerate(chunk):
                if not c:
                    out.append(logits.new_zeros(()).float())
                    continue
                rows = logits[i, len(p) - 1 - offset : len(p) - 1 - offset + len(c)].float()
                target = torch.tensor(c, dtype=torch.long, device=device)
                out.append(torch.log_softmax(rows, dim=-1).gather(1, target[:, None]).sum())
        return torch.stack(out) if out else torch.zeros(0, device=device)

    def action_logprobs(
        self, decisions: Sequence[Decision], actions: Sequence[int] | None = None
    ) -> torch.Tensor:
        """`log pi(candidates[a] | decision)`, with gradients: the candidate's completion's token log-probs
        summed, given the prompt rebuilt from the decision, and normalised over the decision's candidates.

        Normalising makes it the distribution `propose` gives (a candidate's probability in a trajectory is
        what the trainers compare against: the importance ratio of policy gradient starts at one); DPO is
        unchanged by it. `sequence_logprobs` gives the plain sums.
        """
        actions = [d.chosen for d in decisions] if actions is None else list(actions)
        slot: dict[int, int] = {}
        unique: list[Decision] = []
        for d in decisions:
            if id(d) not in slot:
                slot[id(d)] = len(unique)
                unique.append(d)
        prompts, completions = [], []
        for d in unique:
            view = view_of_decision(d)
            prompt = self.prompt_ids(view)
            for text in d.candidates:
                prompts.append(prompt)
                completions.append(self.completion_ids(target_completion(view, text)))
        raw = self.sequence_logprobs(prompts, completions)
        normalised: list[torch.Tensor] = []
        start = 0
        for d in unique:
            part = raw[start : start + len(d.candidates)]
            normalised.append(part - torch.logsumexp(part, dim=0))
            start += len(d.candidates)
        return torch.stack([normalised[slot[id(d)]][a] for d, a in zip(decisions, actions)])

    # -- proposing ----------------------------------------------------------------------------------------
    def propose_view(self, view: StageView) -> list[Candidate]:
        """Sample completions, read each, and weigh each action by its completions' probabilities."""
        cfg = self.config
        prompt = self.prompt_ids(view)
        key = (view.stage, view.final, tuple(prompt), self.training)
        if key in self._cache:
            self._cache.move_to_end(key)
            return list(self._cache[key])
        last_text, last_error = "", None
        outcomes: list[tuple[Any, float]] = []
        for attempt in range(cfg.max_retries + 1):
            primer, asked = PRIMERS[view.stage], prompt
            if attempt == cfg.max_retries and attempt > 0 and view.stage == "synthesize":
                # The last round of a model that wrote no tag (small models answer in prose): prime the
                # answer tag, so the round ends in an answer rather than in no candidate at all.
                primer = ANSWER_PRIMER
                asked = self.prompt_ids(view, primer)
            for ids, lp in self._sample_scored(asked, attempt):
                text = primer + self.tokenizer.decode(ids, skip_special_tokens=True)
                try:
                    outcomes.append((parse_reply(view, text, cfg.max_evidence), lp))
                except LLMOutputError as exc:
                    last_text, last_error = text, exc
            if outcomes:
                break
        if not outcomes:
            raise LLMOutputError(
                f"{self.name} gave no readable {view.stage} completion in {cfg.max_retries + 1} round(s) of "
                f"{cfg.n_candidates} (last: {one_line(last_text, 120)!r}): {last_error}"
            )
        top = max(lp for _, lp in outcomes)
        cands = candidates_from(view, [(parsed, math.exp(lp - top)) for parsed, lp in outcomes])
        self._cache[key] = cands
        while len(self._cache) > cfg.cache_size:
            self._cache.popitem(last=False)
        return list(cands)

    def _sample(self, prompt: list[int], attempt: int) -> list[list[int]]:
        """Distinct completions (token ids, eos included) of one batched generate, seeded by the prompt."""
        return [ids for ids, _ in self._sample_scored(prompt, attempt)]

    def _sample_scored(self, prompt: list[int], attempt: int) -> list[tuple[list[int], float]]:
        """Distinct completions of one batched generate, seeded by the prompt, each with its summed token
        log-probs under the model at temperature 1 (read from generate's raw logits: no second pass)."""
        cfg = self.config
        digest = hashlib.sha256(f"{cfg.seed}|{attempt}|{prompt}".encode()).digest()
        seed = int.from_bytes(digest[:8], "big") % (2**63)
        device = self.device
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        sample = cfg.temperature > 0
        options: dict[str, Any] = dict(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=sample,
            num_return_sequences=cfg.n_candidates if sample else 1,
            pad_token_id=self._pad_id,
            eos_token_id=self._eos_ids or None,
            return_dict_in_generate=True,
            output_logits=True,
        )
        if sample:
            options.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        n = options["num_return_sequences"]
        devices = [device] if device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if n > 1 and len(prompt) > 1:
                # Read the prompt once and give each of the n samples a copy of its cache: generate would
                # otherwise read it n times, which is most of the cost of a long prompt on a CPU.
                cache = getattr(self.model(input_ids=ids[:, :-1], use_cache=True), self._cache_name)
                cache.batch_repeat_interleave(n)
                ids = ids.repeat(n, 1)
                options.update(num_return_sequences=1, **{self._cache_name: cache})
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
            new = out.sequences[:, len(prompt) :]
            token_logps = torch.stack(
                [
                    torch.log_softmax(step.float(), dim=-1).gather(1, new[:, t : t + 1]).squeeze(1)
                    for t, step in enumerate(out.logits)
                ],
                dim=1,
            )
        seen: dict[tuple[int, ...], float] = {}
        for row, logps in zip(new.tolist(), token_logps.tolist()):
            cut = next((i + 1 for i, t in enumerate(row) if t in self._eos_ids), len(row))
            seen.setdefault(tuple(row[:cut]), float(sum(logps[:cut])))
        return [(list(r), lp) for r, lp in seen.items()]
