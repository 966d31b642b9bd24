"""OLMo 2: no pre-norms; post-norms after attention and MLP; QK-norm over whole projections.

Each layer computes ``h + post_attention_layernorm(attn(h))`` then
``h + post_feedforward_layernorm(mlp(h))``. ``hook_attn_out``/``hook_mlp_out`` are the post-norms'
outputs (what is added to the residual); ``attn.hook_result`` decomposes the output projection
before the post-norm. ``attn.hook_q``/``hook_k`` are the projections' outputs, before the
QK-norm (``q_norm``/``k_norm`` normalise all heads together) and RoPE.
"""

from __future__ import annotations

from dataclasses import replace

from mechscope.families.llama import FAMILY as LLAMA

FAMILY = replace(
    LLAMA,
    name="olmo2",
    model_types=("olmo2",),
    ln1=None,  # no input norms: the post-norms below follow attention and MLP
    ln2=None,
    attn_write="post_attention_layernorm",
    mlp_write="post_feedforward_layernorm",
)
