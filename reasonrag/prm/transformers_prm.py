"""Any Hugging Face model (encoder or decoder) as a stage-specific PRM, all steps of a trajectory in one pass.

One trajectory is laid out as (SEP = the step separator, a single token of the vocabulary):

    [prefix] question SEP  tag_1 step_1 SEP  tag_2 step_2 SEP  ...  tag_T step_T SEP

and step t's logit is read at its own SEP, the step's last token. Two modes:

- ``"token-classification"``: `AutoModelForTokenClassification` with one logit per stage
  (``num_labels = len(STAGES)``, a separate head per stage); step t's logit is column ``stage(t)`` at its SEP.
  No tags: the head is the stage.
- ``"reward-token"`` (PRM800K / Math-Shepherd style): `AutoModelForCausalLM`; each step is prefixed by its
  stage tag (``[retrieve]``, the per-stage prompt) and its logit is ``logit(good) - logit(bad)`` for the token
  that would follow its SEP.

A step's score must not depend on the steps after it: the agent scores its newest step with nothing after it,
and the training labels are Monte Carlo values of the prefix. A causal model has that for free; an encoder
gets a block-causal attention mask (every token sees the question and the steps up to its own, its own step
in full), so the one pass gives what re-encoding each prefix would (`prefix_loop_logits`, the naive baseline),
for about 2/(T+1) of the tokens.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reasonrag.data.files import staged_directory, write_json
from reasonrag.data.types import STAGES
from reasonrag.errors import InputError, ModelError
from reasonrag.prm.base import PRMBase, check_trajectory, step_text

MODES = ("token-classification", "reward-token")
MANIFEST_KIND = "reasonrag-transformers-prm"
MANIFEST_FORMAT = 1
FALLBACK_SEPARATOR = (
    "<|step|>"  # added to the vocabulary only if the tokenizer has neither a sep nor an eos token
)
STAGE_INDEX = {stage: i for i, stage in enumerate(STAGES)}
_CORE_KEYS = frozenset(
    {"kind", "format", "mode", "stages", "separator", "max_length", "layout", "attention", "model_type"}
    | {"good_token", "bad_token", "stage_tags"}
)
_PAD_BLOCK = 1 << 30  # padding's block number: after every real block, so pad rows still see real tokens


@dataclass
class _Encoded:
    """One trajectory as token ids. `block[i]` is 0 for the prefix and question, t for step t's tokens."""

    ids: list[int]
    block: list[int]
    sep_positions: list[int]  # where each step's logit is read
    heads: list[int]  # each step's stage index


def _token_id(tokenizer: Any, text: str) -> int | None:
    """The id of `text` if the tokenizer has it as one token, else None."""
    tid = tokenizer.convert_tokens_to_ids(text)
    if isinstance(tid, int) and (tid != tokenizer.unk_token_id or text == tokenizer.unk_token):
        return tid
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def _fair_shares(lengths: Sequence[int], budget: int) -> list[int]:
    """Tokens each piece keeps so the total fits `budget`: short pieces whole, long ones cut equally."""
    if sum(lengths) <= budget:
        return list(lengths)
    shares = [0] * len(lengths)
    left = budget
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for k, i in enumerate(order):
        shares[i] = min(lengths[i], left // (len(order) - k))
        left -= shares[i]
    return shares


def _is_decoder_only(config: Any) -> bool:
    """Whether a model attends causally (so a custom mask must keep that), judged by its architecture."""
    if getattr(config, "is_decoder", False):
        return True
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def _auto_class(mode: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    return AutoModelForTokenClassification if mode == "token-classification" else AutoModelForCausalLM


class TransformersPRM(PRMBase):
    """A PRM on any Hugging Face model: one forward pass per batch of trajectories, one logit per step.

    The model and tokenizer stay plain transformers objects (`.model`, `.tokenizer`), so anything that
    trains a transformers model (the shared step-level BCE trainer, PEFT, TRL) can train this one.
    `tokens_encoded` counts the real (non-pad) tokens fed through the model, for benchmarks.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        mode: str,
        max_length: int = 512,
        device: str | torch.device = "cpu",
        separator: str | None = None,
        good_token: str = "+",
        bad_token: str = "-",
        stage_tags: Mapping[str, str] | None = None,
        batch_size: int = 16,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"unknown PRM mode {mode!r}: use one of {', '.join(MODES)}")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.mode = mode
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.tokens_encoded = 0
        self.info: dict[str, Any] = {}  # manifest keys beyond the core, kept across load and save

        # The separator: the tokenizer's own sep/eos token when it has one (a token the model already knows
        # as a boundary), else a new special token with a freshly initialised embedding.
        self.separator = separator or tokenizer.sep_token or tokenizer.eos_token or FALLBACK_SEPARATOR
        if _token_id(tokenizer, self.separator) is None:
            tokenizer.add_tokens([self.separator], special_tokens=True)
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(len(tokenizer))
        self.separator_id = _token_id(tokenizer, self.separator)
        if self.separator_id is None:  # pragma: no cover - add_tokens always makes it one token
            raise ModelError(f"the separator {self.separator!r} is not a single token of the tokenizer")
        self.model.to(self.device)

        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) and limit > 0 else max_length
        if self.max_length < 2:
            raise InputError(f"max_length must be at least 2, got {max_length}")

        if mode == "token-classification":
            if getattr(model.config, "num_labels", None) != len(STAGES):
                raise ModelError(
                    f"a token-classification PRM needs num_labels={len(STAGES)} (one head per stage: "
                    f"{', '.join(STAGES)}), the model has {getattr(model.config, 'num_labels', None)}"
                )
            self.stage_tags = {stage: "" for stage in STAGES}
            self.good_token = self.bad_token = None
            self._causal = _is_decoder_only(model.config)
        else:
            self.stage_tags = {stage: f"[{stage}]" for stage in STAGES}
            self.stage_tags.update(stage_tags or {})
            ids = {t: _token_id(tokenizer, t) for t in (good_token, bad_token)}
            for t, tid in ids.items():
                if tid is None:
                    raise ModelError(
                        f"reward token {t!r} is not a single token of the tokenizer: pick another"
                    )
            if ids[good_token] == ids[bad_token]:
                raise InputError("good_token and bad_token must be different tokens")
            self.good_token, self.bad_token = good_token, bad_token
            self._good_id, self._bad_id = ids[good_token], ids[bad_token]
            self._causal = True
            params = inspect.signature(model.forward).parameters
            # project only the separator positions onto the (large) vocabulary, where the model allows it
            self._keep_logits = "logits_to_keep" in params
            self._no_cache = "use_cache" in params
        unknown = set(self.stage_tags) - set(STAGES)
        if unknown:
            raise InputError(f"stage_tags for unknown stages {sorted(unknown)}: use {', '.join(STAGES)}")
        self._tag_ids = {
            stage: tokenizer.encode(tag, add_special_tokens=False) if tag else []
            for stage, tag in self.stage_tags.items()
        }
        # What the tokenizer puts before a text ([CLS], <s>), without what it puts after ([SEP], </s>).
        prefix = list(tokenizer("", add_special_tokens=True)["input_ids"])
        closing = {tokenizer.sep_token_id, tokenizer.eos_token_id} - {None, tokenizer.bos_token_id}
        while prefix and prefix[-1] in closing:
            prefix.pop()
        self._prefix_ids = prefix
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    # ------------------------------------------------------------------------------------ loading, saving

    @classmethod
    def from_base(
        cls,
        name_or_path: str | Path,
        mode: str = "token-classification",
        *,
        local_files_only: bool = True,
        **kw: Any,
    ) -> TransformersPRM:
        """A fresh, untrained PRM on any checkpoint; a token-classification head is new (one per stage)."""
        if mode not in MODES:
            raise InputError(f"unknown PRM mode {mode!r}: use one of {', '.join(MODES)}")
        from transformers import AutoTokenizer

        extra: dict[str, Any] = {}
        if mode == "token-classification":
            extra = dict(
                num_labels=len(STAGES),
                id2label=dict(enumerate(STAGES)),
                label2id=dict(STAGE_INDEX),
                ignore_mismatched_sizes=True,  # a checkpoint with another token head gets a fresh 3-stage one
            )
        looks_local = str(name_or_path).startswith((os.sep, ".", "~")) or Path(name_or_path).exists()
        if looks_local and not Path(name_or_path).expanduser().is_dir():
            raise ModelError(f"no model directory at {name_or_path}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local_files_only)
            model = _auto_class(mode).from_pretrained(
                str(name_or_path), local_files_only=local_files_only, **extra
            )
        except (OSError, ValueError) as exc:
            hint = (
                " (local_files_only=True: pass local_files_only=False to download)"
                if local_files_only
                else ""
            )
            raise ModelError(f"cannot load a {mode} model from {name_or_path!r}{hint}: {exc}") from exc
        return cls(model, tokenizer, mode=mode, **kw)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kw: Any) -> TransformersPRM:
        """Load a PRM written by `save_pretrained`; keyword arguments (device, batch_size...) override."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise ModelError(
                f"no transformers PRM in {path} (expected manifest.json written by save_pretrained)"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{manifest_path}: not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
            raise ModelError(f"{manifest_path}: not a {MANIFEST_KIND} manifest")
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ModelError(
                f"{manifest_path}: format {manifest.get('format')!r}, this version reads {MANIFEST_FORMAT}"
            )
        mode = manifest.get("mode")
        if mode not in MODES:
            raise ModelError(f"{manifest_path}: unknown mode {mode!r} (known: {', '.join(MODES)})")
        if manifest.get("stages") != list(STAGES):
            raise ModelError(
                f"{manifest_path}: trained for stages {manifest.get('stages')!r}, expected {list(STAGES)}"
            )
        separator = manifest.get("separator")
        if not isinstance(separator, str) or not separator:
            raise ModelError(f"{manifest_path}: no 'separator' token")
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = _auto_class(mode).from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # a load boundary: any failure here means the directory is not a usable PRM
            raise ModelError(f"{path}: cannot load the PRM's model or tokenizer ({exc})") from exc
        if _token_id(tokenizer, separator) is None:
            raise ModelError(f"{path}: the separator {separator!r} is not a token of the saved tokenizer")
        options: dict[str, Any] = {"max_length": manifest.get("max_length", 512), "separator": separator}
        if mode == "reward-token":
            options.update(
                good_token=manifest.get("good_token", "+"),
                bad_token=manifest.get("bad_token", "-"),
                stage_tags=manifest.get("stage_tags"),
            )
        options.update(kw)
        prm = cls(model, tokenizer, mode=mode, **options)
        prm.info = {k: v for k, v in manifest.items() if k not in _CORE_KEYS}
        return prm

    load = from_pretrained

    def manifest(self) -> dict[str, Any]:
        """What `from_pretrained` needs besides the transformers files: how trajectories are laid out.

        Keys the core does not use (a trainer's `training` record, say) are carried over from load to save.
        """
        out: dict[str, Any] = {
            **self.info,
            "kind": MANIFEST_KIND,
            "format": MANIFEST_FORMAT,
            "mode": self.mode,
            "stages": list(STAGES),
            "separator": self.separator,
            "max_length": self.max_length,
            "layout": "[prefix] question SEP (stage_tag step SEP)*, each step's logit read at its SEP",
            "attention": "causal"
            if self._causal
            else "block-causal (a step sees the question and steps <= it)",
            "model_type": getattr(self.model.config, "model_type", None),
        }
        if self.mode == "reward-token":
            out.update(good_token=self.good_token, bad_token=self.bad_token, stage_tags=dict(self.stage_tags))
        return out

    def save_pretrained(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Model and tokenizer as transformers files (safetensors) plus manifest.json, `extra` merged into it.

        Written to a temporary sibling directory that then replaces `path`, so a reader (or a resumed
        training run) never sees half a model or one model's weights under another's manifest.
        """
        path = Path(path)
        with staged_directory(path) as tmp:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            core = self.manifest()
            manifest = {**core, **(extra or {}), **{k: v for k, v in core.items() if k in _CORE_KEYS}}
            write_json(tmp / "manifest.json", manifest)
        return path

    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Alias of `save_pretrained` (the shared PRM trainer calls `save(out, extra=...)`)."""
        return self.save_pretrained(path, extra)

    # ---------------------------------------------------------------------------------------- torch plumbing

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return self.model.parameters(recurse)

    def train(self, mode: bool = True) -> TransformersPRM:
        self.model.train(mode)
        return self

    def eval(self) -> TransformersPRM:
        return self.train(False)

    # -------------------------------------------------------------------------------------------- encoding

    def _encode_many(self, trajectories: Sequence[Mapping[str, Any]]) -> list[_Encoded]:
        """Lay out every trajectory, tokenizing all questions and steps in one tokenizer call."""
        pieces: list[str] = []
        for traj in trajectories:
            pieces.append(traj["question"])
            pieces.extend(step_text(step) for step in traj["steps"])
        # split_special_tokens: a literal "[SEP]" inside a step is text, never a fake step boundary
        ids = self.tokenizer(pieces, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        out, at = [], 0
        for traj in trajectories:
            n = len(traj["steps"])
            out.append(self._layout([s["stage"] for s in traj["steps"]], ids[at], ids[at + 1 : at + 1 + n]))
            at += 1 + n
        return out

    def _layout(self, stages: list[str], question: list[int], steps: list[list[int]]) -> _Encoded:
        """One trajectory's ids; if too long, the question and steps are clipped but every separator stays."""
        tags = [self._tag_ids[stage] for stage in stages]
        fixed = len(self._prefix_ids) + 1 + sum(len(tag) + 1 for tag in tags)
        if fixed > self.max_length:
            raise InputError(
                f"a trajectory of {len(stages)} steps needs {fixed} tokens for its separators and stage tags "
                f"alone, more than max_length={self.max_length}: raise max_length or score fewer steps"
            )
        shares = _fair_shares([len(question)] + [len(s) for s in steps], self.max_length - fixed)
        ids = self._prefix_ids + question[: shares[0]] + [self.separator_id]
        block = [0] * len(ids)
        seps, heads = [], []
        for t, (stage, tag, text, share) in enumerate(zip(stages, tags, steps, shares[1:]), start=1):
            piece = tag + text[:share] + [self.separator_id]
            ids += piece
            block += [t] * len(piece)
            seps.append(len(ids) - 1)
            heads.append(STAGE_INDEX[stage])
        return _Encoded(ids, block, seps, heads)

    def _block_causal_mask(self, block: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Additive (B, 1, L, L) mask: a token sees real tokens of its own and earlier blocks (and, in a
        decoder, none after itself), so no step's score can look at a later step."""
        allowed = (block[:, None, :] <= block[:, :, None]) & real[:, None, :]
        if self._causal:
            length = block.shape[1]
            allowed &= torch.ones(length, length, dtype=torch.bool, device=block.device).tril()
        dtype = self.model.dtype
        bias = torch.zeros(allowed.shape, dtype=dtype, device=block.device)
        return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

    def _forward(self, encoded: Sequence[_Encoded]) -> list[torch.Tensor]:
        """One forward pass over a right-padded batch; one logit per step, per trajectory.

        Right padding whatever the tokenizer's `padding_side`: real tokens then keep positions 0..n-1 and
        a causal model never attends to a pad, so a trajectory's logits do not depend on its batch mates.
        """
        counts = [len(e.sep_positions) for e in encoded]
        if sum(counts) == 0:
            return [torch.zeros(0, device=self.device) for _ in encoded]
        width = max(len(e.ids) for e in encoded)
        input_ids = torch.full((len(encoded), width), self._pad_id, dtype=torch.long)
        block = torch.full((len(encoded), width), _PAD_BLOCK, dtype=torch.long)
        real = torch.zeros((len(encoded), width), dtype=torch.bool)
        for b, e in enumerate(encoded):
            input_ids[b, : len(e.ids)] = torch.tensor(e.ids)
            block[b, : len(e.ids)] = torch.tensor(e.block)
            real[b, : len(e.ids)] = True
        rows = torch.tensor([b for b, n in enumerate(counts) for _ in range(n)], device=self.device)
        cols = torch.tensor([p for e in encoded for p in e.sep_positions], device=self.device)
        input_ids, block, real = input_ids.to(self.device), block.to(self.device), real.to(self.device)
        self.tokens_encoded += int(real.sum())

        if self.mode == "token-classification":
            mask = self._block_causal_mask(block, real)
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits  # (B, L, stages)
            heads = torch.tensor([h for e in encoded for h in e.heads], device=self.device)
            flat = logits[rows, cols, heads]
        else:
            kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": real.long()}
            if self._no_cache:
                kwargs["use_cache"] = False
            if self._keep_logits:  # project only the separator positions onto the vocabulary
                keep = torch.unique(cols)
                kwargs["logits_to_keep"] = keep
                cols = torch.searchsorted(keep, cols)
            logits = self.model(**kwargs).logits  # (B, L or kept, vocab)
            at_sep = logits[rows, cols]
            flat = at_sep[:, self._good_id] - at_sep[:, self._bad_id]
        return list(flat.float().split(counts))

    # ----------------------------------------------------------------------------------------------- scoring

    def step_logits(self, trajectories: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        """One 1-D tensor of step logits per trajectory, with grad, in one forward pass over all of them.

        For training (step-level BCE-with-logits): the caller picks the batch and the train/eval mode.
        """
        trajectories = list(trajectories)
        for traj in trajectories:
            check_trajectory(traj)
        return self._forward(self._encode_many(trajectories))

    def score(
        self, trajectories: Sequence[Mapping[str, Any]], *, batch_size: int | None = None
    ) -> list[list[float]]:
        """Per-step scores in [0, 1], in eval mode without grad; trajectories of similar length are batched
        together (less padding), one forward pass per batch. The model's train/eval mode is restored."""
        trajectories = list(trajectories)
        for traj in trajectories:
            check_trajectory(traj)
        encoded = self._encode_many(trajectories)
        size = batch_size or self.batch_size
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        scores: list[list[float]] = [[] for _ in encoded]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), size):
                    chunk = order[start : start + size]
                    for i, logits in zip(chunk, self._forward([encoded[i] for i in chunk])):
                        scores[i] = torch.sigmoid(logits).tolist()
        finally:
            self.model.train(was_training)
        return scores

    def prefix_loop_logits(self, trajectory: Mapping[str, Any]) -> list[float]:
        """The naive baseline: re-encode the growing prefix once per step and read its last step's logit.

        T forward passes and about (T+1)/2 times the tokens of `step_logits`; kept only to benchmark the
        one pass against and to check that both read the same numbers.
        """
        check_trajectory(trajectory)
        steps = list(trajectory["steps"])
        out: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for k in range(1, len(steps) + 1):
                    prefix = {"question": trajectory["question"], "steps": steps[:k]}
                    out.append(float(self._forward(self._encode_many([prefix]))[0][-1]))
        finally:
            self.model.train(was_training)
        return out
