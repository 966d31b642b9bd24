"""Llama-style decoders: Llama, Mistral, Qwen2, Qwen3, SmolLM (RoPE, RMSNorm, GQA, gated MLP)."""

from __future__ import annotations

from typing import Any

from mechscope.families.base import Dims, Family, config_get


def llama_dims(config: Any) -> Dims:
    n_heads = config.num_attention_heads
    return Dims(
        n_layers=config.num_hidden_layers,
        d_model=config.hidden_size,
        n_heads=n_heads,
        n_kv_heads=config_get(config, "num_key_value_heads", default=n_heads),
        d_head=config_get(config, "head_dim", default=config.hidden_size // n_heads),
        d_mlp=config.intermediate_size,
        d_vocab=config.vocab_size,
        n_ctx=config.max_position_embeddings,
        gated_mlp=True,
        norm="rms",
    )


FAMILY = Family(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    dims=llama_dims,
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
)
