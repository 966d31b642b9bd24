"""Gemma (1): Llama-style layers with Gemma's RMSNorm (``x * (1 + w)``) and a scaled embedding.

The embedding module itself multiplies by sqrt(d_model) (``GemmaTextScaledWordEmbedding``), so
``hook_embed`` is the scaled embedding: what enters the residual stream. The unembedding is tied
to the embedding's (unscaled) weight.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mechscope.families.base import Dims
from mechscope.families.llama import FAMILY as LLAMA
from mechscope.families.llama import llama_dims


def gemma_dims(config: Any) -> Dims:
    base = llama_dims(config)
    cap = getattr(config, "final_logit_softcapping", None)
    return Dims(**{**base.__dict__, "logit_softcap": cap})


FAMILY = replace(LLAMA, name="gemma", model_types=("gemma",), dims=gemma_dims, norm_offset=1.0)
