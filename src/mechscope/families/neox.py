"""GPT-NeoX (Pythia): parallel attention and MLP, partial RoPE, per-head interleaved fused qkv."""

from __future__ import annotations

from typing import Any

from mechscope.families.base import Dims, Family


def neox_dims(config: Any) -> Dims:
    return Dims(
        n_layers=config.num_hidden_layers,
        d_model=config.hidden_size,
        n_heads=config.num_attention_heads,
        n_kv_heads=config.num_attention_heads,
        d_head=config.hidden_size // config.num_attention_heads,
        d_mlp=config.intermediate_size,
        d_vocab=config.vocab_size,
        n_ctx=config.max_position_embeddings,
        parallel=bool(config.use_parallel_residual),
        norm="layer",
    )


FAMILY = Family(
    name="gpt_neox",
    model_types=("gpt_neox",),
    dims=neox_dims,
    embed="gpt_neox.embed_in",
    layers="gpt_neox.layers",
    final_norm="gpt_neox.final_layer_norm",
    unembed="lm_head",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
    attn="attention",
    qkv="neox_fused",
    q="attention.query_key_value",
    k=None,
    v=None,
    o="attention.dense",
    mlp="mlp",
    mlp_in="mlp.dense_h_to_4h",
    mlp_up=None,
    mlp_out="mlp.dense_4h_to_h",
)
