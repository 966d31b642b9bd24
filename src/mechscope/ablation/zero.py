"""Zero ablation: the node's activation is replaced by zeros.

For a head at ``attn.hook_z`` this removes its whole contribution through W_O; for an MLP at
``hook_mlp_out`` its whole output (bias included); for a neuron at ``mlp.hook_post`` its write
through the down projection. Zero is often off-distribution (Wang et al. 2022 and Chan et al.
2022 prefer mean or resample ablation); it is the exact, reference-free baseline.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def zero(
    act: Tensor, reference: Tensor | None, *, mask: Tensor | None = None, seed: int | None = 0
) -> Tensor:
    """Zeros shaped like ``act`` [batch pos ...]; ``reference``, ``mask`` and ``seed`` unused."""
    return torch.zeros_like(act)
