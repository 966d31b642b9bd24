"""Collect the router's decisions of every MoE layer over token windows.

One forward per batch with hooks on ``blocks.L.mlp.hook_router_logits`` and
``blocks.L.mlp.hook_expert_indices`` (the model's own routing, read, never recomputed), kept as
``logits [layer token expert]`` and ``indices [layer token top_k]``; tokens are the flattened
``[batch pos]`` positions of the windows in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = ["Routing", "collect_routing", "require_moe"]


@dataclass(frozen=True)
class Routing:
    """The routing of ``n_tokens`` tokens through every MoE layer."""

    logits: Tensor  # [layer token expert] float32
    indices: Tensor  # [layer token top_k] int64, best first
    tokens: Tensor  # [token] token ids

    @property
    def n_layers(self) -> int:
        return self.logits.shape[0]

    @property
    def n_experts(self) -> int:
        return self.logits.shape[-1]

    @property
    def top_k(self) -> int:
        return self.indices.shape[-1]

    @property
    def n_tokens(self) -> int:
        return self.logits.shape[1]


def require_moe(model: Any) -> None:
    """Raise unless ``model`` is a mixture-of-experts family mechscope reads."""
    if model.family.moe is None:
        raise MechscopeError(
            f"{model.family.name} models have a dense MLP, not a mixture of experts; "
            "`mechscope moe` reads Mixtral, Qwen2-MoE, OLMoE and GPT-OSS models"
        )


@torch.no_grad()
def collect_routing(model: Any, tokens: Tensor, batch_size: int = 8) -> Routing:
    """The routing of ``tokens`` [batch pos] (windows), ``batch_size`` windows per forward."""
    require_moe(model)
    if tokens.ndim != 2 or tokens.numel() == 0:
        raise MechscopeError(
            f"tokens must be a non-empty [batch pos] tensor, got {tuple(tokens.shape)}"
        )
    n = model.dims.n_layers
    names = [
        f"blocks.{i}.mlp.hook_{s}" for i in range(n) for s in ("router_logits", "expert_indices")
    ]
    logits: list[list[Tensor]] = [[] for _ in range(n)]
    indices: list[list[Tensor]] = [[] for _ in range(n)]
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(tokens[start : start + batch_size], names=names)
        for i in range(n):
            logits[i].append(cache[names[2 * i]].flatten(0, 1).float().cpu())
            indices[i].append(cache[names[2 * i + 1]].flatten(0, 1).long().cpu())
    return Routing(
        torch.stack([torch.cat(x) for x in logits]),
        torch.stack([torch.cat(x) for x in indices]),
        tokens.reshape(-1).cpu(),
    )
