"""OLMo 2: no pre-norms; post-norms after attention and MLP; QK-norm over whole projections.

Each layer computes ``h + post_attention_layernorm(attn(h))`` then
``h + post_feedforward_layernorm(mlp(h))``. ``hook_attn_out``/``hook_mlp_out`` are the post-norms'
outputs (what is added to the residual); ``attn.hook_result`` decomposes the output projection
before the post-norm. ``attn.hook_q``/``hook_k`` are the projections' outputs, before the
QK-norm (``q_norm``/``k_norm`` normalise all heads together) and RoPE.
"""

from __future__ import annotations

from mechscope.families.base import Family
from mechscope.families.llama import llama_dims

FAMILY = Family(
    name="olmo2",
    model_types=("olmo2",),
    dims=llama_dims,
    embed="model.embed_tokens",
    layers="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    ln1=None,
    ln2=None,
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
    attn_write="post_attention_layernorm",
    mlp_write="post_feedforward_layernorm",
)
