"""StarCoder2: Llama-style attention (GQA, RoPE, optional biases), LayerNorm, c_fc/c_proj MLP."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mechscope.families.base import Dims
from mechscope.families.llama import FAMILY as LLAMA
from mechscope.families.llama import llama_dims


def starcoder2_dims(config: Any) -> Dims:
    return Dims(**{**llama_dims(config).__dict__, "gated_mlp": False, "norm": "layer"})


FAMILY = replace(
    LLAMA,
    name="starcoder2",
    model_types=("starcoder2",),
    dims=starcoder2_dims,
    mlp_in="mlp.c_fc",
    mlp_up=None,
    mlp_out="mlp.c_proj",
)
