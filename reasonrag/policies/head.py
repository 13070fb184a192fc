"""A trainable tuning head over any candidate-proposing policy (the embedded one by default).

The embedded policy's candidate probabilities come from the reader and hand-set priors; nothing in them
can learn from rewards. The head adds a learned, stage-specific logit to each candidate's base log-prob:

    log pi(c | s) = log_softmax_c( log p_base(c | s) + head_stage(features(s, c)) )

Its last layer starts at zero, so an untrained head *is* the base policy, and a KL term against it keeps
training close. Features are what a decision holds in plain text (question, stage, hop, kept evidence,
candidate text and base probability) embedded by the frozen sentence encoder, so the same head trains
offline from label files and runs live in the graph, and the trainers only ever touch the head.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonrag.data.files import config_from_manifest, read_manifest, remove_dead_staging, staging_prefix
from reasonrag.data.rewards import normalize_answer
from reasonrag.data.types import STAGES
from reasonrag.errors import ModelError
from reasonrag.policies.base import ANOTHER_HOP, Candidate, Policy, normalise
from reasonrag.policies.trainable import Decision, evidence_text, safe_log

KIND = "reasonrag-policy-head"
SHIPPED_POLICY = Path(__file__).resolve().parents[1] / "weights" / "policy"
_WH = ("who", "when", "where", "which", "what", "how many", "how")
N_NUMERIC = 16 + len(_WH) + 1
_DIGIT = re.compile(r"\d")


@dataclass
class PolicyHeadConfig:
    hidden: int = 64  # 0: a linear head
    dropout: float = 0.1
    embeddings: bool = True  # False: the numbers only (fewer weights, less overfitting on few questions)


@lru_cache(maxsize=200_000)
def _tokens(text: str) -> frozenset[str]:
    return frozenset(normalize_answer(text).split())


def _wh(question: str) -> list[float]:
    q = question.lower()
    out = [0.0] * (len(_WH) + 1)
    for i, w in enumerate(_WH):
        if re.search(rf"\b{w}\b", q):
            out[i] = 1.0
            break
    else:
        out[-1] = 1.0  # yes/no and other forms
    return out


def candidate_numbers(
    decision: Decision, i: int, cos_q: float, cos_ctx: float, max_ctx: float
) -> list[float]:
    """The numbers of one candidate in its decision, scaled to about [0, 1]."""
    text = decision.candidates[i]
    n = len(decision.candidates)
    lp = max(decision.base_logprobs[i], -20.0)
    toks = _tokens(text)
    q_toks = _tokens(decision.question)
    ctx_toks = frozenset().union(*map(_tokens, decision.context))
    words = text.split()
    lowered = text.strip().lower()
    return [
        lp / 10.0,
        math.exp(lp),
        sum(1 for x in decision.base_logprobs if x > decision.base_logprobs[i]) / max(n - 1, 1),  # base rank
        1.0 / n,
        decision.hop / 3.0,
        cos_q,
        cos_ctx,
        max_ctx,
        math.log1p(len(words)) / 5.0,
        float(lowered == ANOTHER_HOP),
        float(lowered.startswith("(not enough")),
        float(lowered in ("yes", "no")),
        len(toks & q_toks) / max(len(toks), 1),
        len(toks & ctx_toks) / max(len(toks), 1),
        float(bool(_DIGIT.search(text))),
        sum(1 for w in words if w[:1].isupper()) / max(len(words), 1),
        *_wh(decision.question),
    ]


class PolicyHead(nn.Module):
    """One small MLP per stage on (question x candidate, evidence x candidate, numbers)."""

    def __init__(
        self, encoder: Any = None, config: PolicyHeadConfig | None = None, *, encoder_name: str | None = None
    ) -> None:
        super().__init__()
        from reasonrag.retrieval.encoder import encoder_fingerprint, load_encoder

        self.config = config or PolicyHeadConfig()
        self.encoder = encoder if encoder is not None else load_encoder(encoder_name)
        self.encoder_info = encoder_fingerprint(encoder_name) if encoder is None else {}
        self.dim = int(self.encoder.get_embedding_dimension())
        in_dim = (2 * self.dim if self.config.embeddings else 0) + N_NUMERIC
        self.heads = nn.ModuleDict()
        for stage in STAGES:
            last = nn.Linear(self.config.hidden or in_dim, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            layers = [nn.Linear(in_dim, self.config.hidden), nn.GELU()] if self.config.hidden else []
            self.heads[stage] = nn.Sequential(*layers, nn.Dropout(self.config.dropout), last)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._features: dict[int, torch.Tensor] = {}
        self.manifest: dict[str, Any] = {}
        self.eval()  # acting mode (no dropout) unless a trainer says otherwise

    # -- features ----------------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], cache_size: int = 300_000) -> torch.Tensor:
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            vecs = self.encoder.encode(
                new, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
            for text, v in zip(new, torch.from_numpy(vecs).float()):
                self._cache[text] = v
            while len(self._cache) > cache_size:
                self._cache.popitem(last=False)
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros((0, self.dim))

    def _compute(self, decisions: Sequence[Decision]) -> list[torch.Tensor]:
        texts: list[str] = []
        for d in decisions:
            texts.append(d.question)
            texts.extend(d.context)
            texts.extend(d.candidates)
        emb = self.embed(texts)
        out, pos = [], 0
        for d in decisions:
            q = emb[pos]
            ctx = emb[pos + 1 : pos + 1 + len(d.context)]
            pos += 1 + len(d.context)
            cands = emb[pos : pos + len(d.candidates)]
            pos += len(d.candidates)
            ctx_mean = ctx.mean(0) if len(d.context) else torch.zeros(self.dim)
            if len(d.context):
                ctx_mean = ctx_mean / ctx_mean.norm().clamp(min=1e-6)
            cos_q = cands @ q
            cos_ctx = cands @ ctx_mean
            max_ctx = (cands @ ctx.T).max(1).values if len(d.context) else torch.zeros(len(d.candidates))
            nums = torch.tensor(
                [
                    candidate_numbers(d, i, float(cos_q[i]), float(cos_ctx[i]), float(max_ctx[i]))
                    for i in range(len(d.candidates))
                ],
                dtype=cands.dtype,
            ).reshape(len(d.candidates), N_NUMERIC)
            out.append(torch.cat([q.expand_as(cands) * cands, ctx_mean.expand_as(cands) * cands, nums], 1))
        return out

    def cache_features(self, decisions: Sequence[Decision] | None, chunk: int = 512) -> None:
        """Fix the features of these decisions for a training run (the encoder is frozen); None clears."""
        self._features.clear()  # in place: a frozen copy shares this dict
        for i in range(0, len(decisions or []), chunk):
            part = decisions[i : i + chunk]
            for d, x in zip(part, self._compute(part)):
                self._features[id(d)] = x

    def share_features(self, other: PolicyHead) -> None:
        """Use `other`'s embedding cache and fixed features (a reference head needs the same ones)."""
        self._cache, self._features = other._cache, other._features

    def features(self, decisions: Sequence[Decision]) -> list[torch.Tensor]:
        missing = [d for d in decisions if id(d) not in self._features]
        fresh = dict(zip(map(id, missing), self._compute(missing))) if missing else {}
        return [self._features.get(id(d), fresh.get(id(d))) for d in decisions]

    def log_probs(self, decisions: Sequence[Decision]) -> list[torch.Tensor]:
        """Per decision, log pi over its candidates (with grad through the heads)."""
        feats = self.features(decisions)
        if not feats:
            return []
        # One head call per stage over all candidates of the batch, then a softmax per decision.
        adjust: list[torch.Tensor | None] = [None] * len(decisions)
        for stage in sorted({d.stage for d in decisions}):  # a fixed order: dropout masks are drawn in it
            idx = [i for i, d in enumerate(decisions) if d.stage == stage]
            x = torch.cat([feats[i] for i in idx])
            if not self.config.embeddings:
                x = x[:, -N_NUMERIC:]
            scores = self.heads[stage](x).squeeze(-1)
            for i, part in zip(idx, torch.split(scores, [len(feats[i]) for i in idx])):
                adjust[i] = part
        out = []
        for d, a in zip(decisions, adjust):
            base = torch.tensor([max(lp, -30.0) for lp in d.base_logprobs], dtype=a.dtype)
            out.append(torch.log_softmax(base + a, 0))
        return out


class TunedPolicy(nn.Module):
    """A base policy whose candidates are re-weighted by a `PolicyHead`; trainable (`TrainablePolicy`)."""

    def __init__(self, base: Policy, head: PolicyHead) -> None:
        super().__init__()
        self.base = base
        self.head = head

    # -- acting --------------------------------------------------------------------------------------
    def propose(self, stage: str, state: dict[str, Any]) -> list[Candidate]:
        cands = self.base.propose(stage, state)
        if len(cands) <= 1:
            return cands
        decision = decision_from_state(stage, state, cands)
        was = self.head.training
        self.head.eval()
        try:
            with torch.inference_mode():
                (lp,) = self.head.log_probs([decision])
        finally:
            self.head.train(was)
        probs = lp.exp().tolist()
        tuned = [
            Candidate(c.stage, c.text, {**c.action, "base_prob": c.prob}, p) for c, p in zip(cands, probs)
        ]
        return normalise(tuned)

    # -- TrainablePolicy ------------------------------------------------------------------------------
    def action_logprobs(
        self, decisions: Sequence[Decision], actions: Sequence[int] | None = None
    ) -> torch.Tensor:
        lps = self.head.log_probs(decisions)
        idx = actions if actions is not None else [d.chosen for d in decisions]
        return torch.stack([lp[i] for lp, i in zip(lps, idx)]) if lps else torch.zeros(0)

    def all_logprobs(self, decisions: Sequence[Decision]) -> list[torch.Tensor]:
        """Log-probs of every candidate: the trainers compute an exact KL when a policy offers this."""
        return self.head.log_probs(decisions)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.head.heads.parameters())

    def frozen_copy(self) -> TunedPolicy:
        head = PolicyHead.__new__(PolicyHead)
        nn.Module.__init__(head)
        head.config, head.encoder, head.encoder_info, head.dim = (
            self.head.config,
            self.head.encoder,
            self.head.encoder_info,
            self.head.dim,
        )
        head.heads = copy.deepcopy(self.head.heads)
        head._cache, head._features, head.manifest = self.head._cache, self.head._features, {}
        for p in head.heads.parameters():
            p.requires_grad_(False)
        head.eval()
        return TunedPolicy(self.base, head)

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path: str | Path, manifest: dict[str, Any] | None = None) -> Path:
        """Write the head (safetensors) and manifest.json, each by an atomic rename, weights first.

        Other entries of the directory stay (the online loop keeps its rounds there).
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.heads.state_dict().items()}
        full = {
            **self.head.manifest,
            **(manifest or {}),
            "kind": KIND,
            "format": 1,
            "config": asdict(self.head.config),
            "encoder": self.head.encoder_info or self.head.manifest.get("encoder", {}),
            "numeric_features": N_NUMERIC,
        }
        for name in ("model.safetensors", "manifest.json"):  # what a killed save left staged here
            remove_dead_staging(path, name)
        fd, tmp = tempfile.mkstemp(prefix=staging_prefix("model.safetensors"), dir=path)
        os.close(fd)
        try:
            save_file(state, tmp)
            os.replace(tmp, path / "model.safetensors")
            fd, tmp = tempfile.mkstemp(prefix=staging_prefix("manifest.json"), dir=path)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(full, indent=2) + "\n")
            os.replace(tmp, path / "manifest.json")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.head.manifest = full
        return path


def decision_from_state(stage: str, state: dict[str, Any], candidates: Sequence[Candidate]) -> Decision:
    """The decision the agent faces in `state`, in the same terms as one rebuilt from a label record."""
    return Decision(
        question=state["question"],
        stage=stage,
        hop=int(state.get("hop", 0)),
        context=[evidence_text(e) for e in state.get("evidence", [])],
        candidates=[c.text for c in candidates],
        base_logprobs=[safe_log(c.prob) for c in candidates],
        chosen=0,
    )


def load_policy_head(
    path: str | Path, base: Policy, *, encoder_name: str | None = None, encoder: Any = None
) -> TunedPolicy:
    """A `TunedPolicy` over `base` from a directory written by `TunedPolicy.save`."""
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(
        path, KIND, "a reasonrag policy head", N_NUMERIC, "; train one with `reasonrag train-policy`"
    )
    head = PolicyHead(
        encoder, config_from_manifest(manifest, PolicyHeadConfig, path), encoder_name=encoder_name
    )
    want = (manifest.get("encoder") or {}).get("sha256")
    have = head.encoder_info.get("sha256")
    if want and have and want != have:
        raise ModelError(f"{path}: trained on another sentence encoder than the one loaded")
    try:
        state = load_file(str(path / "model.safetensors"))
        head.heads.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched file is the same error
        raise ModelError(f"{path}/model.safetensors does not fit this policy head: {exc}") from exc
    head.manifest = manifest
    head.eval()
    return TunedPolicy(base, head)
