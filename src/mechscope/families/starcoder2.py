"""StarCoder2: Llama-style attention (GQA, RoPE, optional biases), LayerNorm, c_fc/c_proj MLP."""

from __future__ import annotations

from typing import Any

from mechscope.families.base import Dims, Family
from mechscope.families.llama import llama_dims


def starcoder2_dims(config: Any) -> Dims:
    return Dims(**{**llama_dims(config).__dict__, "gated_mlp": False, "norm": "layer"})


FAMILY = Family(
    name="starcoder2",
    model_types=("starcoder2",),
    dims=starcoder2_dims,
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
    mlp_in="mlp.c_fc",
    mlp_up=None,
    mlp_out="mlp.c_proj",
)
