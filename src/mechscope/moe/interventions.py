"""Scoped interventions on experts, as hook lists for ``model.hooks(...)``.

- :func:`ablate_hooks`: zero an expert's routing weight (``mlp.hook_expert_weights``); the other
  chosen experts keep their weights, so the token loses that expert's write.
- :func:`reroute_hooks` / pruning: set an expert's router logit to ``-inf``
  (``mlp.hook_router_logits``); the router then picks the next experts by its own rule, as if the
  expert and its router row had been removed.
- :func:`merged`: fold expert ``drop`` into ``keep`` (parameters averaged with weight ``alpha``)
  and give ``keep`` the router logit ``logsumexp(l_keep, l_drop)``, so its softmax probability is
  the two experts' sum; ``drop`` is never chosen. The weights are restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

__all__ = ["ablate_hooks", "merge_hooks", "merged", "reroute_hooks"]

Hook = tuple[str, Any]


def ablate_hooks(plan: Mapping[int, Sequence[int]]) -> list[Hook]:
    """Hooks zeroing the routing weight of experts ``plan[layer]`` at each layer."""

    def at(experts: list[int]) -> Any:
        def fn(w: Tensor, hook: Any) -> Tensor:
            w = w.clone()
            w[..., experts] = 0
            return w

        return fn

    return [(f"blocks.{L}.mlp.hook_expert_weights", at(list(e))) for L, e in plan.items() if e]


def reroute_hooks(plan: Mapping[int, Sequence[int]]) -> list[Hook]:
    """Hooks removing experts ``plan[layer]`` from each layer's choice (router logit -inf)."""

    def at(experts: list[int]) -> Any:
        def fn(logits: Tensor, hook: Any) -> Tensor:
            logits = logits.clone()
            logits[..., experts] = float("-inf")
            return logits

        return fn

    return [(f"blocks.{L}.mlp.hook_router_logits", at(list(e))) for L, e in plan.items() if e]


def merge_hooks(layer: int, keep: int, drop: int) -> list[Hook]:
    """The routing half of a merge: ``keep`` takes ``drop``'s probability, ``drop`` is removed."""

    def fn(logits: Tensor, hook: Any) -> Tensor:
        out = logits.clone()
        out[..., keep] = torch.logaddexp(logits[..., keep], logits[..., drop])
        out[..., drop] = float("-inf")
        return out

    return [(f"blocks.{layer}.mlp.hook_router_logits", fn)]


@contextmanager
def merged(
    model: Any, layer: int, keep: int, drop: int, alpha: float = 0.5
) -> Iterator[list[Hook]]:
    """Within the block, expert ``keep`` of ``layer`` holds ``alpha * keep + (1 - alpha) * drop``
    (every expert parameter); yields the routing hooks to pass to ``model.hooks``."""
    experts = model.block(layer).get_submodule(model.family.moe.experts)
    n = model.dims.n_experts
    saved = {}
    with torch.no_grad():
        for name, p in experts.named_parameters():
            if p.ndim and p.shape[0] == n:
                saved[name] = p[keep].clone()
                p[keep] = alpha * p[keep] + (1 - alpha) * p[drop]
    try:
        yield merge_hooks(layer, keep, drop)
    finally:
        with torch.no_grad():
            for name, p in experts.named_parameters():
                if name in saved:
                    p[keep] = saved[name]
