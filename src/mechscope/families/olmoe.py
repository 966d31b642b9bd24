"""OLMoE: Llama-style pre-norm layers, QK-norm over whole projections, a softmax top-k router.

``attn.hook_q``/``hook_k`` are the projections' outputs, before the QK-norm and RoPE (as for
OLMo 2). The MoE sites are Mixtral's: ``mlp.hook_router_logits``, ``mlp.hook_expert_indices``,
``mlp.hook_expert_weights`` and ``mlp.hook_expert_out``. The router keeps the top-k softmax
probabilities, renormalised only when the config sets ``norm_topk_prob``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mechscope.families.base import Dims
from mechscope.families.llama import llama_dims
from mechscope.families.mixtral import FAMILY as MIXTRAL
from mechscope.families.qwen2_moe import softmax_topk_route


def olmoe_dims(config: Any) -> Dims:
    return Dims(
        **{
            **llama_dims(config).__dict__,
            "n_experts": config.num_experts,
            "top_k": config.num_experts_per_tok,
        }
    )


# Mixtral's layout (router, experts, expert outputs) with a softmax-then-top-k route
FAMILY = replace(
    MIXTRAL,
    name="olmoe",
    model_types=("olmoe",),
    dims=olmoe_dims,
    moe=replace(MIXTRAL.moe, route=softmax_topk_route),
)
