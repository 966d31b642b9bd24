"""Falcon: fused query_key_value in three layouts, parallel or sequential blocks, RoPE.

The layout follows the config: ``new_decoder_architecture`` (40B/180B) groups the projection
per kv head as ``[q.. | k | v]`` and reads two LayerNorms (``ln_attn``, ``ln_mlp``);
``multi_query`` (7B) writes ``[q | k | v]`` with one kv head; otherwise each head writes its own
``[q | k | v]``. Parallel blocks (``parallel_attn`` or the new architecture) have no
``hook_resid_mid``. The layer adds the attention output into the MLP's output tensor in place, so
``hook_mlp_out`` is copied before that. ALiBi variants (``alibi=True``) are refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.families.base import Dims, Family


def _n_kv(config: Any) -> int:
    if config.new_decoder_architecture:
        return config.num_kv_heads
    return 1 if config.multi_query else config.num_attention_heads


def falcon_dims(config: Any) -> Dims:
    return Dims(
        n_layers=config.num_hidden_layers,
        d_model=config.hidden_size,
        n_heads=config.num_attention_heads,
        n_kv_heads=_n_kv(config),
        d_head=config.hidden_size // config.num_attention_heads,
        d_mlp=config.ffn_hidden_size,
        d_vocab=config.vocab_size,
        n_ctx=config.max_position_embeddings,
        parallel=bool(config.parallel_attn or config.new_decoder_architecture),
        norm="layer",
    )


def falcon_adapt(family: Family, config: Any) -> Family:
    if config.alibi:
        raise MechscopeError("Falcon with ALiBi (alibi=True) is not supported; RoPE variants are")
    if config.new_decoder_architecture:
        two = (config.num_ln_in_parallel_attn or 2) == 2
        return replace(
            family,
            qkv="falcon_grouped",
            ln1="ln_attn" if two else "input_layernorm",
            ln2="ln_mlp" if two else "input_layernorm",
        )
    qkv = "concat" if config.multi_query else "neox_fused"
    ln2 = "input_layernorm" if config.parallel_attn else "post_attention_layernorm"
    return replace(family, qkv=qkv, ln2=ln2)


FAMILY = Family(
    name="falcon",
    model_types=("falcon",),
    dims=falcon_dims,
    embed="transformer.word_embeddings",
    layers="transformer.h",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    ln1="input_layernorm",
    ln2="input_layernorm",
    attn="self_attention",
    qkv="neox_fused",
    q="self_attention.query_key_value",
    k=None,
    v=None,
    o="self_attention.dense",
    mlp="mlp",
    mlp_in="mlp.dense_h_to_4h",
    mlp_up=None,
    mlp_out="mlp.dense_4h_to_h",
    mlp_out_mutated=True,
    adapt=falcon_adapt,
)
