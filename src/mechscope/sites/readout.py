"""Logits from a final residual stream, as the HF causal-LM head computes them.

Some heads do more than ``unembed(final_norm(h))`` outside any module: Granite divides the logits
by ``logits_scaling`` and Gemma 2 soft-caps them (``cap * tanh(logits / cap)``). Every mechscope
function that unembeds a residual (logit lens, ``run_from``, patching suffixes) goes through
:func:`final_logits`, with the same operations in the same order as transformers.
"""

from __future__ import annotations

from typing import Any

import torch

from mechscope.families.base import Dims
from mechscope.sites.hooks import Model


def logit_head(dims: Dims, logits: torch.Tensor) -> torch.Tensor:
    """The head's operations after the unembedding (identity for most families)."""
    if dims.logit_divisor != 1.0:
        logits = logits / dims.logit_divisor
    if dims.logit_softcap is not None:
        logits = torch.tanh(logits / dims.logit_softcap) * dims.logit_softcap
    return logits


def final_logits(m: Model | Any, h: torch.Tensor) -> torch.Tensor:
    """Logits [... d_vocab] of a final residual stream [... d_model].

    ``m`` is anything with ``hf``, ``family`` and ``dims`` (a HookedModel or a sites.Model).
    """
    h = m.hf.get_submodule(m.family.final_norm)(h)
    return logit_head(m.dims, m.hf.get_submodule(m.family.unembed)(h))
