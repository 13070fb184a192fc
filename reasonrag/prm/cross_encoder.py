"""The verifier PRM: a cross-encoder that reads the question, the step and the path so far together.

Where the encoder PRM embeds each text alone and compares embeddings, this one puts the question and the
step through the transformer as one pair, so attention can check a candidate answer against the evidence
sentences it must come from:

    [CLS] question [SEP] answer: Chief of Protocol || evidence: Shirley Temple: ... | Kiss and Tell: ... [SEP]

The step comes first in the second segment and the path after it, so truncation drops old context, never
the step. A head per stage reads the mean-pooled output. Every step of every trajectory in a call goes
through the model in one batch (`score`); `score_last` scores only each trajectory's final step, which is
what the agent needs when it scores a new step or the N candidate steps of one state.

Only the top `train_layers` transformer layers and the heads are trained and shipped; the rest comes
unchanged from the sentence-encoder package, which keeps the artifact small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonrag.data.files import read_manifest, staged_directory, write_json
from reasonrag.data.types import STAGES
from reasonrag.errors import ModelError
from reasonrag.prm.base import PRMBase, check_trajectory, observation_text

KIND = "reasonrag-cross-encoder-prm"
FORMAT = 1


@dataclass
class CrossEncoderPRMConfig:
    max_length: int = 192
    train_layers: int = 3  # the top N layers are fine-tuned (and shipped); the rest stay as in the encoder
    batch_size: int = 32  # sequences per forward pass when scoring
    evidence_chars: int = 600  # at most this much of the earlier evidence goes into a step's context
    # The policy's probability of the step (its log, scaled) goes to the head beside the pooled text: the
    # verifier corrects the policy's ranking rather than learning it again from the text alone.
    prob_feature: bool = False


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _evidence(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The sentences kept by the extract steps among `steps`, as `title: text`."""
    out = []
    for s in steps:
        obs = s.get("observation")
        if s.get("stage") != "extract" or not isinstance(obs, list):
            continue
        for o in obs:
            if isinstance(o, Mapping) and o.get("text"):
                out.append(f"{o.get('title', '')}: {o['text']}".strip(": "))
    return out


def step_pair(
    question: str, steps: Sequence[Mapping[str, Any]], t: int, evidence_chars: int = 900
) -> tuple[str, str]:
    """The (question, step-with-context) pair the cross-encoder reads for step `t`."""
    step = steps[t]
    stage = step.get("stage", "synthesize")
    before = _clip(" | ".join(_evidence(steps[:t])), evidence_chars)
    if stage == "retrieve":
        head = f"search: {_clip(step.get('action', ''), 200)} -> {observation_text(step)}"
    elif stage == "extract":
        head = f"keep: {observation_text(step) or step.get('action') or '(nothing)'}"
    else:
        obs = step.get("observation")
        head = f"answer: {obs if isinstance(obs, str) and obs else step.get('action', '')}"
    return question, f"{head} || evidence: {before or '(none)'}"


def step_prob(step: Mapping[str, Any]) -> float:
    """The policy's probability of a step (1.0 where none is recorded, as for a hand-made step)."""
    try:
        p = float(step.get("prob", 1.0))
    except (TypeError, ValueError):
        return 1.0
    return p if 0.0 <= p <= 1.0 else 1.0


class CrossEncoderPRM(PRMBase):
    """Question-step pairs through a fine-tuned transformer, one logit per stage."""

    def __init__(
        self,
        config: CrossEncoderPRMConfig | None = None,
        encoder_name: str | None = None,
        *,
        backbone: nn.Module | None = None,
        tokenizer: Any = None,
    ) -> None:
        from reasonrag.retrieval.encoder import resolve_encoder

        self.config = config or CrossEncoderPRMConfig()
        if backbone is None:
            from transformers import AutoModel, AutoTokenizer

            path = resolve_encoder(encoder_name)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                backbone = AutoModel.from_pretrained(path, local_files_only=True)
            except OSError as exc:
                raise ModelError(f"cannot load the verifier's base encoder from {path!r}: {exc}") from exc
        self.tokenizer = tokenizer
        self.model = nn.ModuleDict(
            {
                "backbone": backbone,
                "head": nn.Linear(
                    int(backbone.config.hidden_size) + int(self.config.prob_feature), len(STAGES)
                ),
            }
        )
        self._freeze_lower_layers()
        self._round_to_saved_precision()
        self.model.eval()

    @torch.no_grad()
    def _round_to_saved_precision(self) -> None:
        """Trained weights are shipped in float16: the live model uses the same values, so it scores exactly
        as the saved one loads."""
        for p in self.parameters():
            p.copy_(p.half().float())

    # -- the model ---------------------------------------------------------------------------------------
    def _freeze_lower_layers(self) -> None:
        keep = self._first_trained_layer()
        for name, param in self.model["backbone"].named_parameters():
            trainable = name.startswith("encoder.layer.") and int(name.split(".")[2]) >= keep
            param.requires_grad_(trainable)

    def parameters(self, recurse: bool = True):
        return (p for p in self.model.parameters(recurse) if p.requires_grad)

    def train(self, mode: bool = True) -> CrossEncoderPRM:
        self.model.train(mode)
        return self

    def eval(self) -> CrossEncoderPRM:
        return self.train(False)

    def _tokenize(self, pairs: Sequence[tuple[str, str]]) -> Any:
        return self.tokenizer(
            [a for a, _ in pairs],
            [b for _, b in pairs],
            truncation="only_second",
            max_length=self.config.max_length,
            padding=True,
            return_tensors="pt",
        )

    def _head_logits(
        self, hidden: torch.Tensor, mask: torch.Tensor, stages: Sequence[str], probs: Sequence[float] | None
    ) -> torch.Tensor:
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.config.prob_feature:
            p = torch.tensor([1.0 if x is None else float(x) for x in (probs or [None] * len(stages))])
            pooled = torch.cat([pooled, (p.clamp(1e-4, 1.0).log() / 4).unsqueeze(1)], dim=1)
        logits = self.model["head"](pooled)
        index = torch.tensor([STAGES.index(s) for s in stages])
        return logits.gather(1, index.view(-1, 1)).squeeze(1)

    def pair_logits(
        self, pairs: Sequence[tuple[str, str]], stages: Sequence[str], probs: Sequence[float] | None = None
    ) -> torch.Tensor:
        """One logit per (question, step) pair, from the head of its stage; with gradients. `probs` are the
        policy's probabilities of the steps (read with `prob_feature`)."""
        enc = self._tokenize(pairs)
        hidden = self.model["backbone"](**enc).last_hidden_state
        return self._head_logits(hidden, enc["attention_mask"], stages, probs)

    # -- training on cached trunk states -------------------------------------------------------------------
    # The lower layers are frozen, so what they make of a pair never changes: computed once, the states
    # they hand to the trained layers make every later epoch cost only the top layers (about 2.5x faster
    # with 2 of 6 layers trained). The trunk runs without dropout.
    @torch.inference_mode()
    def trunk_states(self, pairs: Sequence[tuple[str, str]]) -> list[torch.Tensor]:
        """The frozen layers' output for each pair, `[tokens, hidden]` in float16, padding cut off."""
        from transformers.masking_utils import create_bidirectional_mask

        backbone = self.model["backbone"]
        enc = self._tokenize(pairs)
        hidden = backbone.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
        mask = create_bidirectional_mask(
            config=backbone.config, inputs_embeds=hidden, attention_mask=enc["attention_mask"]
        )
        for layer in backbone.encoder.layer[: self._first_trained_layer()]:
            hidden = layer(hidden, mask)
        lengths = enc["attention_mask"].sum(1).tolist()
        return [hidden[i, :n].half().clone() for i, n in enumerate(lengths)]

    def top_logits(
        self, states: Sequence[torch.Tensor], stages: Sequence[str], probs: Sequence[float] | None = None
    ) -> torch.Tensor:
        """`pair_logits` from cached trunk states: only the trained layers and the head run (with grad)."""
        from transformers.masking_utils import create_bidirectional_mask

        backbone = self.model["backbone"]
        longest = max(int(s.shape[0]) for s in states)
        hidden = torch.zeros(len(states), longest, states[0].shape[1])
        attention = torch.zeros(len(states), longest, dtype=torch.long)
        for i, s in enumerate(states):
            hidden[i, : s.shape[0]] = s.float()
            attention[i, : s.shape[0]] = 1
        mask = create_bidirectional_mask(
            config=backbone.config, inputs_embeds=hidden, attention_mask=attention
        )
        for layer in backbone.encoder.layer[self._first_trained_layer() :]:
            hidden = layer(hidden, mask)
        return self._head_logits(hidden, attention, stages, probs)

    def _first_trained_layer(self) -> int:
        return len(self.model["backbone"].encoder.layer) - self.config.train_layers

    def _pairs(self, trajectories: Sequence[Mapping[str, Any]], last_only: bool) -> tuple[list, ...]:
        """The (question, step) pairs to score, their stages and probabilities, and how many per trajectory."""
        pairs, stages, probs, counts = [], [], [], []
        for traj in trajectories:
            check_trajectory(traj)
            steps = traj["steps"]
            ts = [len(steps) - 1] if last_only and steps else range(len(steps))
            for t in ts:
                pairs.append(step_pair(traj["question"], steps, t, self.config.evidence_chars))
                stages.append(steps[t]["stage"])
                probs.append(step_prob(steps[t]))
            counts.append(len(ts))
        return pairs, stages, probs, counts

    def step_logits(self, trajectories: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        pairs, stages, probs, counts = self._pairs(trajectories, last_only=False)
        flat = self.pair_logits(pairs, stages, probs) if pairs else torch.zeros(0)
        return list(torch.split(flat, counts))

    @torch.inference_mode()
    def _scores(self, trajectories: Sequence[Mapping[str, Any]], last_only: bool) -> list[list[float]]:
        pairs, stages, probs, counts = self._pairs(trajectories, last_only)
        flat: list[float] = []
        size = self.config.batch_size
        for i in range(0, len(pairs), size):
            chunk = slice(i, i + size)
            flat.extend(self.pair_logits(pairs[chunk], stages[chunk], probs[chunk]).sigmoid().tolist())
        out, pos = [], 0
        for n in counts:
            out.append(flat[pos : pos + n])
            pos += n
        return out

    def score(self, trajectories: Sequence[Mapping[str, Any]]) -> list[list[float]]:
        return self._scores(trajectories, last_only=False)

    def score_last(self, trajectories: Sequence[Mapping[str, Any]]) -> list[float]:
        """The final step of each trajectory, all in one batch: a new step, or N candidates of a state."""
        return [s[0] if s else 0.0 for s in self._scores(trajectories, last_only=True)]

    # -- files ---------------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}

    def save(self, directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        from safetensors.torch import save_file

        from reasonrag.retrieval.encoder import encoder_fingerprint

        self._round_to_saved_precision()
        with staged_directory(directory) as tmp:
            state = {k: v.half() for k, v in self.trainable_state().items()}
            save_file(state, str(tmp / "model.safetensors"))
            write_json(
                tmp / "manifest.json",
                {
                    "kind": KIND,
                    "numeric_features": FORMAT,
                    "config": asdict(self.config),
                    "encoder": encoder_fingerprint(self._encoder_name),
                    **dict(extra or {}),
                },
            )
        return Path(directory)

    _encoder_name: str | None = None

    @classmethod
    def load(cls, directory: str | Path, encoder_name: str | None = None) -> CrossEncoderPRM:
        from safetensors.torch import load_file

        directory = Path(directory)
        manifest = read_manifest(directory, KIND, "a cross-encoder PRM", FORMAT)
        config = CrossEncoderPRMConfig(**manifest.get("config", {}))
        prm = cls(config, encoder_name)
        prm._encoder_name = encoder_name
        weights = directory / "model.safetensors"
        try:
            state = {k: v.float() for k, v in load_file(str(weights)).items()}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ModelError(f"{weights}: not a readable safetensors file ({exc})") from None
        missing, unexpected = prm.model.load_state_dict(state, strict=False)
        trained = {n for n, p in prm.model.named_parameters() if p.requires_grad}
        if unexpected or trained - set(state):
            raise ModelError(f"{weights} does not fit this verifier (unexpected {unexpected[:3]})")
        prm.model.eval()
        return prm
