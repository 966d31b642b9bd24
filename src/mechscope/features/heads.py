"""What an ``attn:L`` source adds to a build: each head's write direction and its quietest windows.

A head's unit is the L2 norm of its output ``z_h`` [d_head] (``attn.hook_z``), which writes
``z_h @ W_O[h]`` into the residual stream. A norm has no direction of its own, so the build
defines one from the head's strongest firings:

- **write direction** ``w_h = (sum_i z_i) @ W_O[h] / sum_i |z_i|`` over the head's top examples
  ``i`` (``z_i`` at the example's peak position): the head's mean output at its top examples per
  unit of activation. When the top examples all write the same direction ``u`` (unit length),
  ``w_h = u @ W_O[h]``, what one unit of the norm writes, as ``mlp:L`` and ``sae:DIR`` writes are
  per unit of activation; when they disagree it shrinks towards zero. The logit table and the
  neighbours use it like any other write. The peak outputs ``z_i`` are kept beside the running
  top-k (:func:`carry_peaks`: a new top window takes its row from the batch, a kept one its old
  row), so the direction costs no second pass;
- **negatives**: a norm is never below zero, so "windows where it never fires" is empty; a head's
  negative examples are instead the ``negatives`` windows with the smallest maximum (its quietest
  windows; ties: the earlier window), kept by ``update_topk(..., lowest=True)`` in one pass.
"""

from __future__ import annotations

import torch

from mechscope.features.sources import Source
from mechscope.neurons.readouts import o_per_head
from mechscope.neurons.topk import TopK, empty_topk

Tensor = torch.Tensor

__all__ = ["carry_peaks", "empty_lowest", "has_writes", "head_writes", "is_head"]


def is_head(source: Source) -> bool:
    """An ``attn:L`` source (a norm: no write of its own)."""
    return source.kind == "head" and source.readout.writes is None


def has_writes(source: Source) -> bool:
    """Whether the source's features get a logit table and neighbours."""
    return source.readout.writes is not None or is_head(source)


def empty_lowest(n_units: int, n: int, seq_len: int) -> TopK:
    """No window yet: value ``+inf``, window ``-1``."""
    return empty_topk(n_units, n, seq_len, fill=float("inf"))


def carry_peaks(top: TopK, old_windows: Tensor, old_z: Tensor, z: Tensor | None = None,
                first_window: int = 0, heads: Tensor | None = None) -> Tensor:  # fmt: skip
    """[unit k d_head] the head output at each top slot's peak: from ``z`` [batch pos head d_head]
    (the batch of windows numbered from ``first_window``; ``heads`` [unit] the units' heads) when
    the slot's window is in the batch, else from the row of ``old_z`` whose window in
    ``old_windows`` [unit k_old] is the same; zeros for an empty slot."""
    win = top.windows
    same = (old_windows[:, :, None] == win[:, None, :]) & (old_windows[:, :, None] >= 0)
    src = same.long().argmax(1)  # [unit k]: the old row holding the slot's window
    out = old_z.gather(1, src[..., None].expand(-1, -1, old_z.shape[-1]))
    found = same.any(1)
    if z is not None:
        inside = (win >= first_window) & (win < first_window + z.shape[0])
        b = (win - first_window).clamp(0, z.shape[0] - 1)
        fresh = z.float()[b, top.positions, heads[:, None].expand_as(b)]  # [unit k d_head]
        out = torch.where(inside[..., None], fresh, out)
        found = found | inside
    return torch.where(found[..., None], out, 0.0)


def head_writes(model: object, layer: int, heads: Tensor, top: TopK, peaks: Tensor) -> Tensor:
    """[unit d_model] each head's write direction (module docstring) from its top slots'
    ``peaks`` [unit k d_head] and values (the norms)."""
    filled = top.windows >= 0
    total = torch.where(filled[..., None], peaks, 0.0).double().sum(1)  # [unit d_head]
    norms = torch.where(filled, top.values, 0.0).double().sum(1)  # [unit]
    w_o = o_per_head(model, layer)[heads].double()  # [unit d_head d_model]
    write = torch.einsum("ud,udm->um", total, w_o) / norms.clamp(min=1e-30)[:, None]
    return write.float()
