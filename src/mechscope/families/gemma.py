"""Gemma (1): Llama-style layers with Gemma's RMSNorm (``x * (1 + w)``) and a scaled embedding.

The embedding module itself multiplies by sqrt(d_model) (``GemmaTextScaledWordEmbedding``), so
``hook_embed`` is the scaled embedding: what enters the residual stream. The unembedding is tied
to the embedding's (unscaled) weight.
"""

from __future__ import annotations

from typing import Any

from mechscope.families.base import Dims, Family
from mechscope.families.llama import llama_dims


def gemma_dims(config: Any) -> Dims:
    base = llama_dims(config)
    cap = getattr(config, "final_logit_softcapping", None)
    return Dims(**{**base.__dict__, "logit_softcap": cap})


FAMILY = Family(
    name="gemma",
    model_types=("gemma",),
    dims=gemma_dims,
    embed="model.embed_tokens",
    layers="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
    attn="self_attn",
    qkv="separate",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    mlp="mlp",
    mlp_in="mlp.gate_proj",
    mlp_up="mlp.up_proj",
    mlp_out="mlp.down_proj",
    norm_offset=1.0,
)
