"""Gemma 2: pre- and post-norms around attention and MLP, soft-capping, sliding-window layers.

Each layer computes ``h + post_attention_layernorm(attn(input_layernorm(h)))`` and then
``h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))``. ``hook_attn_out`` and
``hook_mlp_out`` are what is added to the residual: the post-norms' outputs. The per-head
``attn.hook_result`` is the output projection's decomposition, before the post-norm, so the heads
sum to the attention module's output, not to ``hook_attn_out``.

Attention scores are soft-capped (``cap * tanh(scores / cap)``) before the mask;
``attn.hook_attn_scores`` is after the cap and the mask, as in TransformerLens. The final logits
are soft-capped too (``Dims.logit_softcap``), which mechscope applies wherever it unembeds.
Sliding-window layers get their mask from transformers (``config.layer_types``).
"""

from __future__ import annotations

from mechscope.families.base import Family
from mechscope.families.gemma import gemma_dims

FAMILY = Family(
    name="gemma2",
    model_types=("gemma2",),
    dims=gemma_dims,
    embed="model.embed_tokens",
    layers="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    ln2="pre_feedforward_layernorm",
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
    norm_offset=1.0,
)
