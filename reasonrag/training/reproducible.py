"""Same seed, same weights: the one call a trainer makes before it builds or trains anything."""

from __future__ import annotations

import os
import random


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and make torch pick deterministic kernels.

    Called before a model is built, so its initial weights are part of what the seed fixes (a head built
    before seeding starts from different weights on every run). The data order comes from generators
    seeded from the same number, never from set or dict iteration over strings (PYTHONHASHSEED varies).
    """
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic CUDA matmuls need
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
