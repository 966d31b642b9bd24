"""Mixtral: Llama-style attention with a sparse mixture-of-experts MLP (top-k softmax router).

The MoE block has no dense neurons, so ``mlp.hook_pre``/``mlp.hook_post`` do not exist; instead
``mlp.hook_router_logits`` [batch pos expert] and ``mlp.hook_expert_out``
[batch pos expert d_model] (each expert's weighted write; the sum over experts is ``hook_mlp_out``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from mechscope.families.base import Dims, MoESpec
from mechscope.families.llama import FAMILY as LLAMA
from mechscope.families.llama import llama_dims


def mixtral_dims(config: Any) -> Dims:
    base = llama_dims(config)
    return Dims(
        **{
            **base.__dict__,
            "gated_mlp": True,
            "n_experts": config.num_local_experts,
            "top_k": config.num_experts_per_tok,
        }
    )


def mixtral_route(router: Any, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over experts, keep the top k, renormalise: the HF MixtralTopKRouter's rule."""
    probs = F.softmax(logits.float(), dim=-1)
    weights, indices = torch.topk(probs, router.top_k, dim=-1)
    return weights / weights.sum(dim=-1, keepdim=True), indices


def mixtral_expert_outputs(
    experts: Any, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Each expert's weighted output [tokens expert d_model]; zero where a token is not routed."""
    out = x.new_zeros(x.shape[0], experts.num_experts, x.shape[-1])
    for e in range(experts.num_experts):
        token, slot = torch.where(indices == e)
        if token.numel() == 0:
            continue
        gate, up = F.linear(x[token], experts.gate_up_proj[e]).chunk(2, dim=-1)
        h = F.linear(experts.act_fn(gate) * up, experts.down_proj[e])
        out[token, e] = h * weights[token, slot, None].to(h.dtype)
    return out


FAMILY = replace(
    LLAMA,
    name="mixtral",
    model_types=("mixtral",),
    dims=mixtral_dims,
    mlp_in=None,
    mlp_up=None,
    mlp_out=None,
    moe=MoESpec(
        router="mlp.gate",
        experts="mlp.experts",
        route=mixtral_route,
        expert_outputs=mixtral_expert_outputs,
    ),
)
