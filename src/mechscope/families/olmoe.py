"""OLMoE: Llama-style pre-norm layers, QK-norm over whole projections, a softmax top-k router.

``attn.hook_q``/``hook_k`` are the projections' outputs, before the QK-norm and RoPE (as for
OLMo 2). The MoE sites are Mixtral's: ``mlp.hook_router_logits``, ``mlp.hook_expert_indices``,
``mlp.hook_expert_weights`` and ``mlp.hook_expert_out``. The router keeps the top-k softmax
probabilities, renormalised only when the config sets ``norm_topk_prob``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mechscope.families.base import Dims, MoESpec
from mechscope.families.llama import FAMILY as LLAMA
from mechscope.families.llama import llama_dims
from mechscope.families.mixtral import mixtral_expert_outputs
from mechscope.families.qwen2_moe import softmax_topk_route


def olmoe_dims(config: Any) -> Dims:
    return Dims(
        **{
            **llama_dims(config).__dict__,
            "n_experts": config.num_experts,
            "top_k": config.num_experts_per_tok,
        }
    )


FAMILY = replace(
    LLAMA,
    name="olmoe",
    model_types=("olmoe",),
    dims=olmoe_dims,
    mlp_in=None,
    mlp_up=None,
    mlp_out=None,
    moe=MoESpec(
        router="mlp.gate",
        experts="mlp.experts",
        route=softmax_topk_route,
        expert_outputs=mixtral_expert_outputs,
    ),
)
