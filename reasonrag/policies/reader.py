"""The embedded reader: one small multi-task model over the sentence encoder's transformer.

It reads ``question [SEP] title: sentence sentence | title: sentence ...`` and gives, in one forward pass,
a relevance logit per sentence (the extract stage), answer-span logits and an answer kind
(span / yes / no / insufficient: the synthesize stage). The backbone's word embeddings stay frozen and
are loaded from the encoder package; only the transformer layers and the heads are trained and shipped,
which keeps the artifact small.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from reasonrag.data.files import quiet_loading
from reasonrag.errors import ModelError

KINDS = ("span", "yes", "no", "insufficient")
CHUNK_SEPARATOR = " | "
MAX_ANSWER_TOKENS = 16
SHIPPED_READER = Path(__file__).resolve().parents[1] / "weights" / "reader"


@dataclass(frozen=True)
class Chunk:
    """A titled group of sentences, the unit the reader sees (a passage or the evidence kept from it)."""

    title: str
    sentences: tuple[str, ...]
    passage_id: str = ""


@dataclass
class Window:
    """One tokenised reader input, with maps from tokens back to sentences and characters."""

    input_ids: list[int]
    token_type_ids: list[int]
    context: str
    offsets: list[tuple[int, int] | None]  # character span in `context` per token; None outside the context
    sentence_of_token: list[int]  # index into `sentences`, -1 if the token is not in a sentence
    sentences: list[tuple[int, int]]  # (chunk index, sentence index) for each sentence that made it in
    first_context_token: int


@dataclass
class Reading:
    """What the reader concluded from one window."""

    kind_probs: dict[str, float]
    spans: list[tuple[str, float]]  # best answer spans with probabilities (given kind=span)
    sentence_scores: dict[tuple[int, int], float] = field(default_factory=dict)  # (chunk, sentence) -> prob
    span_sentences: dict[str, tuple[int, int]] = field(default_factory=dict)  # span text -> its sentence


def render_context(chunks: Sequence[Chunk]) -> tuple[str, list[tuple[int, int, int, int]]]:
    """The context string and (chunk, sentence, char_start, char_end) for every sentence in it."""
    parts: list[str] = []
    spans: list[tuple[int, int, int, int]] = []
    pos = 0
    for ci, chunk in enumerate(chunks):
        if ci:
            parts.append(CHUNK_SEPARATOR)
            pos += len(CHUNK_SEPARATOR)
        head = f"{chunk.title}: " if chunk.title else ""
        parts.append(head)
        pos += len(head)
        for si, sentence in enumerate(chunk.sentences):
            if si:
                parts.append(" ")
                pos += 1
            parts.append(sentence)
            spans.append((ci, si, pos, pos + len(sentence)))
            pos += len(sentence)
    return "".join(parts), spans


def make_window(tokenizer, question: str, chunks: Sequence[Chunk], max_length: int = 384) -> Window:
    """Tokenise a question with its context chunks; sentences cut off by `max_length` are dropped."""
    context, sentence_spans = render_context(chunks)
    enc = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_length,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    seq_ids = enc.sequence_ids()
    offsets: list[tuple[int, int] | None] = []
    sentence_of_token = [-1] * len(enc["input_ids"])
    first_context = len(seq_ids)
    for t, (sid, off) in enumerate(zip(seq_ids, enc["offset_mapping"])):
        if sid == 1:
            offsets.append((off[0], off[1]))
            first_context = min(first_context, t)
        else:
            offsets.append(None)
    kept: list[tuple[int, int]] = []
    j = 0  # sentence pointer: tokens come in character order
    for t, off in enumerate(offsets):
        if off is None:
            continue
        while j < len(sentence_spans) and sentence_spans[j][3] <= off[0]:
            j += 1
        if j < len(sentence_spans) and sentence_spans[j][2] <= off[0] < sentence_spans[j][3]:
            key = (sentence_spans[j][0], sentence_spans[j][1])
            if not kept or kept[-1] != key:
                kept.append(key)
            sentence_of_token[t] = len(kept) - 1
    return Window(
        input_ids=list(enc["input_ids"]),
        token_type_ids=list(enc["token_type_ids"]),
        context=context,
        offsets=offsets,
        sentence_of_token=sentence_of_token,
        sentences=kept,
        first_context_token=first_context,
    )


def collate(windows: Sequence[Window], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of windows into tensors the model takes."""
    length = max(len(w.input_ids) for w in windows)
    n = len(windows)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((n, length), dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    context_mask = torch.zeros((n, length), dtype=torch.bool)
    sentence_of_token = torch.full((n, length), -1, dtype=torch.long)
    for i, w in enumerate(windows):
        m = len(w.input_ids)
        input_ids[i, :m] = torch.tensor(w.input_ids)
        token_type_ids[i, :m] = torch.tensor(w.token_type_ids)
        attention_mask[i, :m] = 1
        context_mask[i, :m] = torch.tensor([o is not None for o in w.offsets])
        sentence_of_token[i, :m] = torch.tensor(w.sentence_of_token)
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "context_mask": context_mask,
        "sentence_of_token": sentence_of_token,
    }


class ReaderModel(nn.Module):
    """The encoder's transformer plus three small heads; reads like the description at the top."""

    def __init__(self, backbone: nn.Module, hidden: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.span_head = nn.Linear(hidden, 2)  # start, end logits per token
        self.kind_head = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, len(KINDS)))
        self.sentence_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        context_mask: torch.Tensor,
        sentence_of_token: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        hidden = self.backbone(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state  # (batch, tokens, hidden)
        start_logits, end_logits = self.span_head(hidden).unbind(-1)
        # Answers come from the context only.
        start_logits = start_logits.masked_fill(~context_mask, -1e4)
        end_logits = end_logits.masked_fill(~context_mask, -1e4)
        kind_logits = self.kind_head(hidden[:, 0])
        # Mean-pool each sentence's tokens: (batch, sentences, tokens) membership times hidden.
        n_sent = int(sentence_of_token.max().item()) + 1 if sentence_of_token.numel() else 0
        if n_sent > 0:
            ids = torch.arange(n_sent, device=hidden.device)
            member = (sentence_of_token.unsqueeze(1) == ids.view(1, -1, 1)).to(hidden.dtype)
            counts = member.sum(-1, keepdim=True)
            pooled = member @ hidden / counts.clamp(min=1.0)
            sentence_logits = (
                self.sentence_head(pooled).squeeze(-1).masked_fill(counts.squeeze(-1) == 0, -1e4)
            )
        else:
            sentence_logits = hidden.new_zeros((hidden.shape[0], 0))
        return {
            "start_logits": start_logits,
            "end_logits": end_logits,
            "kind_logits": kind_logits,
            "sentence_logits": sentence_logits,
        }


def _backbone_from_encoder(encoder_path: str) -> tuple[nn.Module, object, int]:
    from transformers import AutoModel, AutoTokenizer

    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(encoder_path, local_files_only=True)
            backbone = AutoModel.from_pretrained(encoder_path, local_files_only=True)
    except OSError as exc:  # transformers raises OSError for a missing model
        raise ModelError(f"cannot load the reader's base encoder from {encoder_path!r}: {exc}") from exc
    return backbone, tokenizer, int(backbone.config.hidden_size)


def trainable_state(model: ReaderModel) -> dict[str, torch.Tensor]:
    """What is shipped: the trained parameters only; frozen ones come unchanged from the encoder package."""
    return {
        name: param.detach().cpu().contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


class Reader:
    """Loads the reader (shipped weights by default) and answers `read` calls in batches."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        encoder_name: str | None = None,
        *,
        max_length: int = 384,
        device: str = "cpu",
        model: ReaderModel | None = None,
        tokenizer=None,
    ) -> None:
        self.max_length = max_length
        self.device = device
        self.manifest: dict = {}
        if model is not None:
            self.model, self.tokenizer = model, tokenizer
        else:
            self.model, self.tokenizer, self.manifest = load_reader(model_dir, encoder_name)
        self.model.to(device).eval()

    def windows(self, question: str, chunk_lists: Sequence[Sequence[Chunk]]) -> list[Window]:
        return [make_window(self.tokenizer, question, chunks, self.max_length) for chunks in chunk_lists]

    @torch.inference_mode()
    def read(
        self,
        question: str,
        chunk_lists: Sequence[Sequence[Chunk]],
        *,
        top_spans: int = 5,
        length_penalty: float = 0.0,
    ) -> list[Reading]:
        """Read several contexts for one question in one batch; one Reading per context."""
        if not chunk_lists:
            return []
        windows = self.windows(question, chunk_lists)
        batch = collate(windows, self.tokenizer.pad_token_id)
        out = self.model(**{k: v.to(self.device) for k, v in batch.items()})
        kind_probs = out["kind_logits"].softmax(-1).cpu()
        sentence_probs = out["sentence_logits"].sigmoid().cpu()
        readings = []
        for i, w in enumerate(windows):
            located: dict[str, tuple[int, int]] = {}
            spans = best_spans(
                w,
                out["start_logits"][i].cpu(),
                out["end_logits"][i].cpu(),
                top_spans,
                located,
                length_penalty=length_penalty,
            )
            scores = {key: float(sentence_probs[i, j]) for j, key in enumerate(w.sentences)}
            readings.append(
                Reading(
                    kind_probs={k: float(kind_probs[i, j]) for j, k in enumerate(KINDS)},
                    spans=spans,
                    sentence_scores=scores,
                    span_sentences={text: w.sentences[j] for text, j in located.items() if j >= 0},
                )
            )
        return readings


def best_spans(
    window: Window,
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    top: int = 5,
    located: dict[str, int] | None = None,
    *,
    length_penalty: float = 0.0,
) -> list[tuple[str, float]]:
    """The `top` answer spans (text, probability), merged by text, from start/end logits.

    `length_penalty` multiplies a span's probability by exp(-penalty) per token past its first: start and
    end are predicted independently, and a reader trained on few questions spreads the end over the
    qualifiers that follow a short answer ("Wichita, Kansas" for "Wichita").

    `located`, if given, receives for each text the index (in window.sentences) of the sentence its most
    probable occurrence starts in, or -1 outside sentences (a title).
    """
    n = len(window.input_ids)
    start_lp = start_logits[:n].log_softmax(-1)
    end_lp = end_logits[:n].log_softmax(-1)
    valid = torch.tensor([o is not None for o in window.offsets])
    k = min(20, int(valid.sum()))
    if k == 0:
        return []
    starts = torch.topk(start_lp.masked_fill(~valid, -1e9), k).indices.tolist()
    ends = torch.topk(end_lp.masked_fill(~valid, -1e9), k).indices.tolist()
    merged: dict[str, float] = {}
    best_p: dict[str, float] = {}
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                continue
            text = window.context[window.offsets[s][0] : window.offsets[e][1]].strip(" ,.;:|")
            if not text or "|" in text:
                continue
            p = math.exp(float(start_lp[s] + end_lp[e]) - length_penalty * (e - s))
            if located is not None and p > best_p.get(text, 0.0):
                best_p[text] = p
                located[text] = window.sentence_of_token[s]
            merged[text] = merged.get(text, 0.0) + p
    return sorted(merged.items(), key=lambda kv: -kv[1])[:top]


def load_reader(model_dir: str | Path | None = None, encoder_name: str | None = None):
    """Build the backbone from the encoder and load trained weights; returns (model, tokenizer, manifest)."""
    from safetensors.torch import load_file

    from reasonrag.retrieval.encoder import resolve_encoder

    model_dir = Path(model_dir) if model_dir is not None else SHIPPED_READER
    manifest_path = model_dir / "manifest.json"
    weights_path = model_dir / "model.safetensors"
    if not manifest_path.is_file() or not weights_path.is_file():
        raise ModelError(
            f"no reader in {model_dir} (expected manifest.json and model.safetensors); "
            "train one with `python -m reasonrag.training.reader_training --out DIR`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{manifest_path}: not a JSON object")
    backbone, tokenizer, hidden = _backbone_from_encoder(resolve_encoder(encoder_name))
    model = ReaderModel(backbone, hidden)
    try:
        state = {k: v.float() for k, v in load_file(str(weights_path)).items()}
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: safetensors raises its own errors
        raise ModelError(f"{weights_path} is not a readable safetensors file (truncated?): {exc}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.startswith("backbone.")]  # frozen backbone parts stay as loaded
    if missing or unexpected:
        raise ModelError(
            f"{weights_path} does not fit this reader: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model, tokenizer, manifest
