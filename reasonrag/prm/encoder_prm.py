"""The shipped PRM: the shared sentence encoder (frozen) with a small head per stage.

Each step is embedded once, as text (its action and what came back). A step's score reads the question,
the step, the path before it (the mean of the earlier steps' embeddings: no prefix is ever re-encoded)
and a few numbers the trace already holds (the policy's probability for the action and its margin over
the next candidate, retrieval and sentence scores, whether an answer occurs in the evidence). All the
texts of a batch of trajectories go through the encoder in one call; training touches only the heads, so
it takes minutes on 2 CPU cores.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonrag.data.files import config_from_manifest, read_manifest, staged_directory, write_json
from reasonrag.data.rewards import normalize_answer
from reasonrag.data.types import STAGES
from reasonrag.errors import ModelError
from reasonrag.prm.base import PRMBase, check_trajectory, step_text

KIND = "reasonrag-encoder-prm"
N_NUMERIC = 23  # numeric_features() plus 3 question-sentence similarities


@dataclass
class EncoderPRMConfig:
    hidden: int = 256
    dropout: float = 0.1
    # "full": question, step and path embeddings, their products and the numbers; "interactions": the
    # products and the numbers only (fewer inputs, less to overfit on a few thousand labeled steps).
    inputs: str = "full"


def _obs_scores(step: Mapping[str, Any]) -> list[float]:
    obs = step.get("observation")
    if not isinstance(obs, list):
        return []
    return [
        float(o["score"]) for o in obs if isinstance(o, Mapping) and isinstance(o.get("score"), (int, float))
    ]


def _kept_sentences(step: Mapping[str, Any]) -> list[str]:
    obs = step.get("observation")
    if step.get("stage") != "extract" or not isinstance(obs, list):
        return []
    return [
        f"{o.get('title', '')}: {o.get('text', '')}".strip(": ")
        for o in obs
        if isinstance(o, Mapping) and o.get("text")
    ]


def numeric_features(question: str, steps: Sequence[Mapping[str, Any]], t: int) -> list[float]:
    """The numbers a step's trace holds, scaled to about [0, 1]; zeros for plain-text steps."""
    step = steps[t]
    cands = step.get("candidates") or []
    probs = sorted((float(c.get("prob", 0.0)) for c in cands if isinstance(c, Mapping)), reverse=True)
    prob = step.get("prob")
    has_prob = isinstance(prob, (int, float))
    prob = float(prob) if has_prob else 0.0
    others = [p for p in probs if p != prob] or [0.0]
    margin = prob - max(others) if has_prob else 0.0
    scores = _obs_scores(step)
    obs = step.get("observation")
    obs_text = obs if isinstance(obs, str) else ""
    is_continue = float(obs_text == "another hop")
    is_insufficient = float(obs_text == "not enough evidence")
    is_answer = float(step.get("stage") == "synthesize" and not is_continue and not is_insufficient)
    evidence_so_far = " ".join(
        normalize_answer(str(o.get("text", "")))
        for s in steps[:t]
        if s.get("stage") == "extract" and isinstance(s.get("observation"), list)
        for o in s["observation"]
        if isinstance(o, Mapping)
    )
    q_norm = normalize_answer(question)
    # Retrieval: does a passage's title occur in the question or in the evidence so far (a bridge entity)?
    titles = [
        normalize_answer(str(o.get("title", "")))
        for o in (obs if isinstance(obs, list) else [])
        if isinstance(o, Mapping) and step.get("stage") == "retrieve"
    ]
    titles = [x for x in titles if x]
    title_in_question = float(any(x in q_norm for x in titles))
    title_in_evidence = float(any(x in evidence_so_far for x in titles)) if evidence_so_far else 0.0
    # Extraction: do the kept sentences name something the question names, or the bridge found so far?
    kept = [
        normalize_answer(str(o.get("title", "")))
        for o in (obs if isinstance(obs, list) else [])
        if isinstance(o, Mapping) and step.get("stage") == "extract"
    ]
    kept_title_in_question = float(any(x and x in q_norm for x in kept))
    kept_title_in_evidence = float(any(x and x in evidence_so_far for x in kept)) if evidence_so_far else 0.0
    # Extraction: lead sentences, and how well the search ranked the passages the sentences come from.
    kept_items = [o for o in (obs if isinstance(obs, list) else []) if isinstance(o, Mapping)]
    kept_lead = kept_passage_score = 0.0
    if step.get("stage") == "extract" and kept_items:
        kept_lead = sum(1 for o in kept_items if o.get("sentence_index") == 0) / len(kept_items)
        rank_score = {
            o.get("id"): float(o.get("score") or 0.0)
            for s in steps[:t]
            if s.get("stage") == "retrieve" and isinstance(s.get("observation"), list)
            for o in s["observation"]
            if isinstance(o, Mapping)
        }
        kept_passage_score = max(rank_score.get(o.get("passage_id"), 0.0) for o in kept_items)
    answer_in_evidence = answer_in_question = 0.0
    if is_answer and obs_text:
        ans = normalize_answer(obs_text)
        answer_in_evidence = float(bool(ans) and ans in evidence_so_far)
        answer_in_question = float(bool(ans) and ans in normalize_answer(question))
    return [
        float(has_prob),
        prob,
        margin,
        min(len(cands), 10) / 10,
        float(step.get("hop") or 0) / 3,
        min(t, 10) / 10,
        sum(scores) / len(scores) if scores else 0.0,
        max(scores) if scores else 0.0,
        min(len(scores), 5) / 5,
        is_answer,
        is_continue,
        is_insufficient,
        answer_in_evidence,
        answer_in_question,
        title_in_question,
        title_in_evidence,
        kept_title_in_question,
        kept_title_in_evidence,
        kept_lead,
        kept_passage_score,
    ]


class EncoderPRM(PRMBase, nn.Module):
    """Sentence encoder + one MLP head per stage; `score` gives every step's chance of a right ending."""

    def __init__(
        self,
        encoder: Any = None,
        config: EncoderPRMConfig | None = None,
        *,
        encoder_name: str | None = None,
        cache_size: int = 200_000,
    ) -> None:
        nn.Module.__init__(self)
        from reasonrag.retrieval.encoder import encoder_fingerprint, load_encoder

        self.config = config or EncoderPRMConfig()
        self.encoder = encoder if encoder is not None else load_encoder(encoder_name)
        self.encoder_info = encoder_fingerprint(encoder_name) if encoder is None else {}
        dim = int(self.encoder.get_embedding_dimension())
        self.dim = dim
        if self.config.inputs not in ("full", "interactions"):
            raise ModelError(f"unknown encoder PRM inputs {self.config.inputs!r}")
        in_dim = (5 if self.config.inputs == "full" else 2) * dim + N_NUMERIC
        self.heads = nn.ModuleDict(
            {
                stage: nn.Sequential(
                    nn.Linear(in_dim, self.config.hidden),
                    nn.GELU(),
                    nn.Dropout(self.config.dropout),
                    nn.Linear(self.config.hidden, 1),
                )
                for stage in STAGES
            }
        )
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._features: dict[int, torch.Tensor] = {}  # id(trajectory) -> features, while training
        self._cache_size = cache_size
        self.manifest: dict[str, Any] = {}

    # -- embeddings, cached by text ----------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, dim) embeddings; texts not seen before go through the encoder together, in one call."""
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            vecs = self.encoder.encode(
                new, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
            for text, v in zip(new, torch.from_numpy(vecs).float()):
                self._cache[text] = v
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros((0, self.dim))

    def cache_features(self, trajectories: Sequence[Mapping[str, Any]] | None) -> None:
        """Fix the features of these trajectories for a training run (the encoder is frozen); None clears."""
        self._features = {}
        if trajectories:
            for i in range(0, len(trajectories), 256):
                chunk = trajectories[i : i + 256]
                for traj, x in zip(chunk, self._compute_features(chunk)):
                    self._features[id(traj)] = x

    def features(self, trajectories: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        """Per trajectory a (steps, features) tensor; all texts embedded in one encoder call."""
        if self._features and all(id(t) in self._features for t in trajectories):
            return [self._features[id(t)] for t in trajectories]
        return self._compute_features(trajectories)

    def _compute_features(self, trajectories: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        for traj in trajectories:
            check_trajectory(traj)
        texts: list[str] = []
        for traj in trajectories:
            texts.append(traj["question"])
            texts.extend(step_text(s) for s in traj["steps"])
            # Each kept sentence on its own too: a step's mean embedding dilutes the one that matters.
            for s in traj["steps"]:
                texts.extend(_kept_sentences(s))
        emb = self.embed(texts)
        out, pos = [], 0
        for traj in trajectories:
            steps = traj["steps"]
            q = emb[pos]
            a = emb[pos + 1 : pos + 1 + len(steps)]
            pos += 1 + len(steps)
            sims = []
            for s in steps:
                n = len(_kept_sentences(s))
                if n:
                    cos = emb[pos : pos + n] @ q
                    sims.append([float(cos.max()), float(cos.mean()), float(cos.min())])
                else:
                    sims.append([0.0, 0.0, 0.0])
                pos += n
            # Mean of the earlier steps' embeddings: the path so far, without re-encoding it.
            csum = torch.cumsum(a, 0) - a
            counts = torch.arange(len(steps), dtype=a.dtype).clamp(min=1).unsqueeze(1)
            ctx = csum / counts
            qs = q.expand_as(a)
            num = torch.tensor(
                [numeric_features(traj["question"], steps, t) + sims[t] for t in range(len(steps))],
                dtype=a.dtype,
            ).reshape(len(steps), N_NUMERIC)
            if self.config.inputs == "full":
                out.append(torch.cat([qs, a, ctx, qs * a, ctx * a, num], dim=1))
            else:
                out.append(torch.cat([qs * a, ctx * a, num], dim=1))
        return out

    def step_logits(self, trajectories: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        """One logit per step (with grad), each from its stage's head."""
        out = []
        for traj, x in zip(trajectories, self.features(trajectories)):
            stages = [s["stage"] for s in traj["steps"]]
            logits = x.new_zeros(len(stages))
            for stage in STAGES:
                idx = [i for i, s in enumerate(stages) if s == stage]
                if idx:
                    logits = logits.index_put((torch.tensor(idx),), self.heads[stage](x[idx]).squeeze(-1))
            out.append(logits)
        return out

    def score(self, trajectories: Sequence[Mapping[str, Any]]) -> list[list[float]]:
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return [torch.sigmoid(x).tolist() for x in self.step_logits(trajectories)]
        finally:
            self.train(was_training)

    # -- files -------------------------------------------------------------------------------------------
    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"heads.{k}": v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}

    def save(self, directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write heads (safetensors) and manifest.json atomically: a reader never sees half a model."""
        from safetensors.torch import save_file

        directory = Path(directory)
        with staged_directory(directory) as tmp:
            save_file(self.head_state(), str(tmp / "model.safetensors"))
            manifest = {
                **self.manifest,
                **(extra or {}),
                "kind": KIND,
                "format": 1,
                "stages": list(STAGES),
                "config": asdict(self.config),
                "encoder": self.encoder_info or self.manifest.get("encoder", {}),
                "numeric_features": N_NUMERIC,
            }
            write_json(tmp / "manifest.json", manifest)
        self.manifest = manifest
        return directory

    @classmethod
    def load(cls, directory: str | Path, encoder_name: str | None = None, encoder: Any = None) -> EncoderPRM:
        from safetensors.torch import load_file

        directory = Path(directory)
        manifest = read_manifest(directory, KIND, "an encoder PRM", N_NUMERIC)
        prm = cls(
            encoder, config_from_manifest(manifest, EncoderPRMConfig, directory), encoder_name=encoder_name
        )
        want = (manifest.get("encoder") or {}).get("sha256")
        have = prm.encoder_info.get("sha256")
        if want and have and want != have:
            raise ModelError(
                f"{directory}: trained on encoder {manifest['encoder'].get('name')} (sha256 {want[:12]}...), "
                f"but the loaded encoder differs (sha256 {have[:12]}...)"
            )
        try:
            state = load_file(str(directory / "model.safetensors"))
            prm.heads.load_state_dict({k.removeprefix("heads."): v.float() for k, v in state.items()})
        except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched file is the same error
            raise ModelError(f"{directory}/model.safetensors does not fit this PRM: {exc}") from exc
        prm.manifest = manifest
        prm.eval()
        return prm

    def parameters(self, recurse: bool = True):  # the encoder stays frozen: only heads train
        return self.heads.parameters(recurse)
