"""Training checkpoints a killed run resumes from: trained weights, optimizer, schedule, generator, position."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(ckpt: Path, state: dict[str, torch.Tensor], opt: Any, sched: Any, position: dict) -> None:
    """Write `state` (the trained tensors) and the rest into `ckpt`, replacing it whole or not at all."""
    from safetensors.torch import save_file

    from reasonrag.data.files import staged_directory, write_json

    with staged_directory(ckpt) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        extra = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()}
        torch.save(extra, tmp / "optimizer.pt")  # the generator too: dropout goes on as if never stopped
        write_json(tmp / "position.json", position)


def load_checkpoint(ckpt: Path, model: torch.nn.Module, opt: Any, sched: Any) -> dict:
    """Restore what `save_checkpoint` wrote into `model`, `opt` and `sched`; returns the position."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)
    extra = torch.load(ckpt / "optimizer.pt", weights_only=True)
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])
    return json.loads((ckpt / "position.json").read_text())
