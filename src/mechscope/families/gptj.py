"""GPT-J: parallel attention and MLP reading one LayerNorm (``ln_1``), rotary on part of each head.

A block computes ``h + attn(ln_1(h)) + mlp(ln_1(h))``: there is no residual between attention and
MLP, so ``hook_resid_mid`` does not exist. The unembedding has a bias.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mechscope.families.base import Dims, Family
from mechscope.families.gpt2 import gpt2_dims


def gptj_dims(config: Any) -> Dims:
    return replace(gpt2_dims(config), parallel=True)  # GPT-2's config names, parallel blocks


FAMILY = Family(
    name="gptj",
    model_types=("gptj",),
    dims=gptj_dims,
    embed="transformer.wte",
    layers="transformer.h",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    ln1="ln_1",
    ln2="ln_1",  # the MLP reads the same norm
    attn="attn",
    qkv="separate",
    q="attn.q_proj",
    k="attn.k_proj",
    v="attn.v_proj",
    o="attn.out_proj",
    mlp="mlp",
    mlp_in="mlp.fc_in",
    mlp_up=None,
    mlp_out="mlp.fc_out",
)
