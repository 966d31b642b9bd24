"""GPT-OSS: Llama-style attention with per-head sinks and sliding-window layers; a top-k MoE.

Attention adds one learned logit per head (the sink) as an extra key that no value reads, so
``attn.hook_pattern`` rows sum to less than one (the rest went to the sink); scores are before the
sink is appended. The router keeps the top-k logits and softmaxes over them; each expert is a
clamped SwiGLU whose fused ``gate_up_proj`` interleaves gate and up columns. As for Mixtral, the
MoE sites are ``mlp.hook_router_logits`` and ``mlp.hook_expert_out``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from mechscope.families.base import Dims, MoESpec
from mechscope.families.llama import FAMILY as LLAMA
from mechscope.families.llama import llama_dims


def gpt_oss_dims(config: Any) -> Dims:
    return Dims(
        **{
            **llama_dims(config).__dict__,
            "n_experts": config.num_local_experts,
            "top_k": config.num_experts_per_tok,
        }
    )


def gpt_oss_route(router: Any, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k logits, softmax over them: the HF GptOssTopKRouter's rule."""
    top, indices = torch.topk(logits, router.top_k, dim=-1)
    return F.softmax(top, dim=1, dtype=top.dtype), indices


def gpt_oss_expert_outputs(
    experts: Any, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Each expert's weighted output [tokens expert d_model]; zero where a token is not routed."""
    out = x.new_zeros(x.shape[0], experts.num_experts, x.shape[-1])
    for e in range(experts.num_experts):
        token, slot = torch.where(indices == e)
        if token.numel() == 0:
            continue
        gate_up = x[token] @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
        h = experts._apply_gate(gate_up) @ experts.down_proj[e] + experts.down_proj_bias[e]
        out[token, e] = (h * weights[token, slot, None]).to(x.dtype)
    return out


FAMILY = replace(
    LLAMA,
    name="gpt_oss",
    model_types=("gpt_oss",),
    dims=gpt_oss_dims,
    mlp_in=None,
    mlp_up=None,
    mlp_out=None,
    moe=MoESpec(
        router="mlp.router",
        experts="mlp.experts",
        route=gpt_oss_route,
        expert_outputs=gpt_oss_expert_outputs,
    ),
)
