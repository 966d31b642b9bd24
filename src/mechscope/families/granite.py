"""Granite: Llama's layers with four scalar multipliers taken from the config.

The model multiplies the embedding by ``embedding_multiplier`` (outside the embedding module),
each block adds ``residual_multiplier * attn(...)`` and ``residual_multiplier * mlp(...)``, the
attention uses ``attention_multiplier`` as its scale, and the logits are divided by
``logits_scaling``. ``hook_embed``, ``hook_attn_out`` and ``hook_mlp_out`` are what enters the
residual (the multipliers applied); ``attn.hook_result`` decomposes the output projection before
the multiplier. mechscope divides the logits wherever it unembeds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mechscope.families.base import Dims
from mechscope.families.llama import FAMILY as LLAMA
from mechscope.families.llama import llama_dims


def granite_dims(config: Any) -> Dims:
    return Dims(
        **{
            **llama_dims(config).__dict__,
            "embed_scale": float(config.embedding_multiplier),
            "residual_scale": float(config.residual_multiplier),
            "logit_divisor": float(config.logits_scaling),
        }
    )


FAMILY = replace(LLAMA, name="granite", model_types=("granite",), dims=granite_dims)
