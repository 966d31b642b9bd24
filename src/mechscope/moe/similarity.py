"""Expert similarity: linear CKA between experts' outputs on the same tokens.

Every expert is run on every token of the sample (the MoE block's input, ``mlp.hook_in``), with
routing weight 1, through the family's own ``expert_outputs`` (the HF expert weights), so two
experts are compared on identical inputs whether or not the router would pick them. Linear CKA
(Kornblith et al. 2019): ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centred outputs;
1 for outputs equal up to rotation and scale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mechscope.sites.hooks import loaded

__all__ = ["all_expert_outputs", "expert_cka", "linear_cka"]


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two [token d] matrices."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).norm() * (y.T @ y).norm()
    return float(num / den) if den > 0 else float("nan")


@torch.no_grad()
def all_expert_outputs(model: Any, layer: int, tokens: Tensor) -> Tensor:
    """Every expert's unweighted output on every token [token expert d_model]."""
    name = f"blocks.{layer}.mlp.hook_in"
    _, cache = model.run_with_cache(tokens, names=[name], stop_at_layer=layer + 1)
    x = cache[name].flatten(0, 1)
    n = model.dims.n_experts
    indices = torch.arange(n, device=x.device).expand(x.shape[0], n)
    weights = torch.ones(x.shape[0], n, dtype=x.dtype, device=x.device)
    experts = model.block(layer).get_submodule(model.family.moe.experts)
    with loaded(experts):
        out = model.family.moe.expert_outputs(experts, x, indices, weights)
    return out.float().cpu()


def expert_cka(model: Any, layer: int, tokens: Tensor) -> Tensor:
    """Linear CKA between every pair of experts of ``layer`` on ``tokens`` [expert expert]."""
    out = all_expert_outputs(model, layer, tokens)
    n = out.shape[1]
    sim = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            sim[i, j] = sim[j, i] = linear_cka(out[:, i], out[:, j])
    return sim
