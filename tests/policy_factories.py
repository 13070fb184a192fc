"""Trainable policies the shared policy-training suite runs over: each factory returns a fresh policy.

A factory takes the session encoder and returns an object implementing `TrainablePolicy`
(reasonrag.policy_learning). Add a policy here and every trainer test runs on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def tuned_head(encoder: Any) -> Any:
    from reasonrag.policies.head import PolicyHead, TunedPolicy

    return TunedPolicy(None, PolicyHead(encoder))


TRAINABLE_FACTORIES: dict[str, Callable[[Any], Any]] = {"tuned-head": tuned_head}
