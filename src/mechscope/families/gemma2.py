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

from dataclasses import replace

from mechscope.families.gemma import FAMILY as GEMMA

FAMILY = replace(
    GEMMA,
    name="gemma2",
    model_types=("gemma2",),
    ln2="pre_feedforward_layernorm",  # the MLP's input norm; the post-norms below follow each block
    attn_write="post_attention_layernorm",
    mlp_write="post_feedforward_layernorm",
)
