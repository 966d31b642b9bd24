"""Phi-3: Llama-style layers with one fused ``qkv_proj`` and one fused ``gate_up_proj``.

``qkv_proj`` writes ``[q | k | v]`` (k and v ``n_kv_heads * d_head`` wide); ``gate_up_proj``
writes ``[gate | up]``: ``mlp.hook_pre`` is the gate half (the activation's input) and
``mlp.hook_pre_linear`` the up half.
"""

from __future__ import annotations

from mechscope.families.base import Family
from mechscope.families.llama import llama_dims

FAMILY = Family(
    name="phi3",
    model_types=("phi3",),
    dims=llama_dims,
    embed="model.embed_tokens",
    layers="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
    attn="self_attn",
    qkv="concat",
    q="self_attn.qkv_proj",
    k=None,
    v=None,
    o="self_attn.o_proj",
    mlp="mlp",
    mlp_in="mlp.gate_up_proj",
    mlp_up="mlp.gate_up_proj",
    mlp_out="mlp.down_proj",
    mlp_gate_up=True,
)
