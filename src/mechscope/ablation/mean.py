"""Mean ablation: the node's activation is replaced by its mean over a reference set of prompts.

Steps (Wang et al. 2022 mean-ablate over their ABC distribution):

1. Run the reference prompts once, caching the ablated sites (``reference [ref pos ...]``).
2. If the reference prompts have as many positions as the input, take the mean over reference
   prompts *at each position*, counting only real tokens (``mask``); a position at which no
   reference prompt has a real token takes the mean over all positions instead.
3. Otherwise (lengths differ), take one mean over every real token of every reference prompt and
   use it at every position.
"""

from __future__ import annotations

import torch

from mechscope.errors import MechscopeError

Tensor = torch.Tensor


def _weights(reference: Tensor, mask: Tensor | None) -> Tensor:
    """[ref pos 1 ...] weights: 1 for real tokens, broadcastable against ``reference``."""
    if mask is None:
        w = torch.ones(reference.shape[:2], device=reference.device)
    else:
        if mask.shape != reference.shape[:2]:
            raise MechscopeError(
                f"reference mask has shape {tuple(mask.shape)}, reference tokens "
                f"{tuple(reference.shape[:2])}"
            )
        w = mask.to(reference.device).float()
    return w.view(*w.shape, *([1] * (reference.ndim - 2)))


def mean(
    act: Tensor, reference: Tensor | None, *, mask: Tensor | None = None, seed: int | None = 0
) -> Tensor:
    """The reference mean, broadcast to ``act``'s shape [batch pos ...]; ``seed`` unused."""
    if reference is None:
        raise MechscopeError("mean ablation needs a reference set of prompts; pass reference=")
    ref = reference.float()
    w = _weights(ref, mask)
    overall = (ref * w).sum((0, 1)) / w.sum((0, 1)).clamp(min=1)  # [...]
    if ref.shape[1] != act.shape[1]:
        return overall.to(act.dtype).expand_as(act)
    count = w.sum(0)  # [pos 1 ...]
    per_pos = (ref * w).sum(0) / count.clamp(min=1)  # [pos ...]
    per_pos = torch.where(count > 0, per_pos, overall)
    return per_pos.to(act.dtype).expand_as(act)
