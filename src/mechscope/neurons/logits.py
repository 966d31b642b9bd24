"""The tokens a unit promotes and suppresses directly, through the final norm and the unembedding.

A unit that writes ``v`` [d_model] into the residual stream per unit of activation moves the logits
by ``v' @ W_U.T`` up to the final norm's positive per-token scale, where ``v' = v * w_norm`` (the
norm's weight; for LayerNorm ``v`` is centred first, as the norm centres the residual) or, with
``through_norm=False``, ``v' = v``. For an MLP neuron ``v`` is its row of the down projection
(``W_out[i] @ W_U``); for a residual direction it is the direction (``d @ W_U``). The top and bottom
``k`` of each row are the promoted and suppressed tokens (the logit lens of one write; Geva et al.
2022, "Transformer Feed-Forward Layers Build Predictions by Promoting Concepts in the Vocabulary
Space"). Rows are computed in chunks, so memory stays ``chunk * d_vocab`` floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor

__all__ = ["LogitEffects", "logit_effects", "unembed_matrix"]

CHUNK = 256  # rows of [chunk d_vocab] at a time


@dataclass(frozen=True, eq=False)
class LogitEffects:
    """Per unit, the ``k`` most promoted and most suppressed token ids, with their logit changes."""

    promote_ids: Tensor  # [unit k] int64, most promoted first
    promote_values: Tensor  # [unit k] float32
    suppress_ids: Tensor  # [unit k] int64, most suppressed first
    suppress_values: Tensor  # [unit k] float32


def unembed_matrix(model: HookedModel, writes: Tensor, through_norm: bool = True) -> Tensor:
    """The writes as the final norm sees them [unit d_model] (see the module docstring)."""
    v = writes.float().cpu()
    if not through_norm:
        return v
    if model.dims.norm == "layer":
        v = v - v.mean(-1, keepdim=True)
    weight = getattr(model.final_norm, "weight", None)
    if weight is None:
        return v
    return v * (weight.detach().float().cpu() + model.family.norm_offset)  # Gemma: 1 + w


def logit_effects(
    model: HookedModel, writes: Tensor, k: int = 10, *, through_norm: bool = True
) -> LogitEffects:
    """Top-``k`` promoted and suppressed tokens of each write [unit d_model]."""
    w_u = model.unembed.weight.detach().float().cpu()
    v = unembed_matrix(model, writes, through_norm)
    k = min(k, w_u.shape[0])
    parts: list[tuple[Tensor, ...]] = []
    for start in range(0, len(v), CHUNK):
        effect = v[start : start + CHUNK] @ w_u.T  # [chunk d_vocab]
        up = effect.topk(k, dim=-1)
        down = effect.topk(k, dim=-1, largest=False)
        parts.append((up.indices, up.values, down.indices, down.values))
    cat = [torch.cat(column) for column in zip(*parts, strict=True)]
    return LogitEffects(*cat)
