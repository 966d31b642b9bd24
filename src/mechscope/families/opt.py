"""OPT: learned positions (offset by 2), pre-LayerNorm, separate q/k/v, fc1/fc2 MLP.

The layer has no MLP module: it flattens the residual to rows, runs ``fc1``, the activation and
``fc2``, and adds the result. ``hook_mlp_out`` is ``fc2``'s output; MLP sites are reshaped back to
[batch pos ...]. Post-LayerNorm variants (``do_layer_norm_before=False``, OPT-350m) and those with
``project_in``/``project_out`` are refused: their residual stream is not a sum of block writes.
"""

from __future__ import annotations

from typing import Any

from mechscope.errors import MechscopeError
from mechscope.families.base import Dims, Family


def opt_dims(config: Any) -> Dims:
    return Dims(
        n_layers=config.num_hidden_layers,
        d_model=config.hidden_size,
        n_heads=config.num_attention_heads,
        n_kv_heads=config.num_attention_heads,
        d_head=config.hidden_size // config.num_attention_heads,
        d_mlp=config.ffn_dim,
        d_vocab=config.vocab_size,
        n_ctx=config.max_position_embeddings,
        norm="layer",
    )


def opt_adapt(family: Family, config: Any) -> Family:
    if not config.do_layer_norm_before or getattr(config, "_remove_final_layer_norm", False):
        raise MechscopeError(
            "OPT with post-LayerNorm (do_layer_norm_before=False, e.g. opt-350m) is not "
            "supported: its residual stream is not a sum of block outputs"
        )
    if config.word_embed_proj_dim != config.hidden_size:
        raise MechscopeError(
            "OPT with project_in/project_out (word_embed_proj_dim != hidden_size) is not supported"
        )
    return family


FAMILY = Family(
    name="opt",
    model_types=("opt",),
    dims=opt_dims,
    embed="model.decoder.embed_tokens",
    pos_embed="model.decoder.embed_positions",
    layers="model.decoder.layers",
    final_norm="model.decoder.final_layer_norm",
    unembed="lm_head",
    ln1="self_attn_layer_norm",
    ln2="final_layer_norm",
    attn="self_attn",
    qkv="separate",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.out_proj",
    mlp="fc2",
    mlp_in="fc1",
    mlp_up=None,
    mlp_out="fc2",
    flat_mlp=True,
    adapt=opt_adapt,
)
