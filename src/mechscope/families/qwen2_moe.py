"""Qwen2-MoE (Qwen1.5-MoE): Qwen2 attention, a softmax top-k router and a gated shared expert.

The MoE block adds ``sigmoid(shared_expert_gate(x)) * shared_expert(x)`` to the routed experts'
weighted sum. Sites, as for Mixtral: ``mlp.hook_router_logits`` [batch pos expert],
``mlp.hook_expert_indices`` / ``mlp.hook_expert_weights`` and ``mlp.hook_expert_out``
[batch pos expert d_model], plus ``mlp.hook_shared_expert_out`` [batch pos d_model] (the gated
shared expert's write): ``expert_out.sum(-2) + shared_expert_out == hook_mlp_out``. Checkpoints
that interleave dense MLP layers (``decoder_sparse_step > 1`` or ``mlp_only_layers``) are refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from mechscope.errors import MechscopeError
from mechscope.families.base import Dims, Family
from mechscope.families.llama import llama_dims
from mechscope.families.mixtral import FAMILY as MIXTRAL


def qwen2_moe_dims(config: Any) -> Dims:
    return Dims(
        **{
            **llama_dims(config).__dict__,
            "d_mlp": config.moe_intermediate_size,
            "n_experts": config.num_experts,
            "top_k": config.num_experts_per_tok,
        }
    )


def softmax_topk_route(router: Any, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over experts, keep the top k, renormalise only with ``norm_topk_prob``: the rule of
    the HF Qwen2-MoE and OLMoE routers."""
    probs = F.softmax(logits, dim=-1, dtype=torch.float)
    weights, indices = torch.topk(probs, router.top_k, dim=-1)
    if router.norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(logits.dtype), indices


def _all_sparse(family: Family, config: Any) -> Family:
    if getattr(config, "decoder_sparse_step", 1) != 1 or getattr(config, "mlp_only_layers", []):
        raise MechscopeError(
            "this Qwen2-MoE checkpoint mixes dense and MoE layers (decoder_sparse_step="
            f"{config.decoder_sparse_step}, mlp_only_layers={config.mlp_only_layers}); mechscope "
            "reads checkpoints whose every layer is a mixture of experts"
        )
    return family


# Mixtral's layout with a softmax-then-top-k route and a gated shared expert
FAMILY = replace(
    MIXTRAL,
    name="qwen2_moe",
    model_types=("qwen2_moe",),
    dims=qwen2_moe_dims,
    moe=replace(
        MIXTRAL.moe,
        route=softmax_topk_route,
        shared_expert="mlp.shared_expert",
        shared_expert_gate="mlp.shared_expert_gate",
    ),
    adapt=_all_sparse,
)
