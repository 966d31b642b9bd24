"""GPT-2: learned positions, LayerNorm, fused c_attn (q | k | v), Conv1D projections."""

from __future__ import annotations

from typing import Any

from mechscope.families.base import Dims, Family


def gpt2_dims(config: Any) -> Dims:
    return Dims(
        n_layers=config.n_layer,
        d_model=config.n_embd,
        n_heads=config.n_head,
        n_kv_heads=config.n_head,
        d_head=config.n_embd // config.n_head,
        d_mlp=config.n_inner or 4 * config.n_embd,
        d_vocab=config.vocab_size,
        n_ctx=config.n_positions,
        norm="layer",
    )


FAMILY = Family(
    name="gpt2",
    model_types=("gpt2",),
    dims=gpt2_dims,
    embed="transformer.wte",
    pos_embed="transformer.wpe",
    layers="transformer.h",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    ln1="ln_1",
    ln2="ln_2",
    attn="attn",
    qkv="gpt2_fused",
    q="attn.c_attn",
    k=None,
    v=None,
    o="attn.c_proj",
    mlp="mlp",
    mlp_in="mlp.c_fc",
    mlp_up=None,
    mlp_out="mlp.c_proj",
)
