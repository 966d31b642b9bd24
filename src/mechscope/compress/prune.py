"""Structured pruning: remove whole heads and MLP neurons, whose groups then cost no bits.

Units and the groups they free (width 0: all zeros, nothing stored):

- a query head: its q rows and its o columns (so its write is exactly zero); its key/value head's
  k and v rows only when every query head sharing them (grouped-query attention) is pruned;
- a gated-MLP neuron: its gate and up rows (its activation is then ``act(0) * 0 = 0``, so its
  down column contributes nothing; the down column's groups, which hold 64 neurons, stay).

Each unit is scored by the summed loss table of its groups at the reference width (what the
allocation would lose by quantizing it there, task importance included); the ``fraction`` of
heads and the ``fraction`` of neurons with the smallest scores are pruned. The freed bits go back
to the knapsack: the budget stays ``bits * all quantized weights``.
"""

from __future__ import annotations

import torch

from mechscope.compress.groups import Layout, WeightInfo
from mechscope.errors import MechscopeError

Tensor = torch.Tensor


def _slices(info: WeightInfo) -> Tensor:
    """[out, groups_per_row] global group indices of a weight."""
    return torch.arange(info.offset, info.offset + info.n_groups).view(info.out_features, -1)


def _check(layout: Layout, d_head: int) -> dict[tuple[int, str], WeightInfo]:
    by = {(w.layer, w.kind): w for w in layout.weights}
    kinds = {k for _, k in by}
    if not {"q", "k", "v", "o", "gate", "up"} <= kinds:
        raise MechscopeError(
            "structured pruning needs separate q/k/v projections and a gated MLP; "
            "compress without --prune"
        )
    if d_head % layout.group_size:
        raise MechscopeError(
            f"pruning heads needs whole o_proj groups: d_head {d_head} is not a multiple of the "
            f"group size {layout.group_size}; pick a group size dividing it"
        )
    return by


def prune_groups(
    layout: Layout, score: Tensor, n_heads: int, n_kv: int, d_head: int, fraction: float
) -> Tensor:
    """[group] bool: the groups of the pruned units (``score`` [group]: a group's loss)."""
    if not 0 <= fraction < 1:
        raise MechscopeError(f"prune fraction must be in [0, 1), got {fraction}")
    out = torch.zeros(layout.n_groups, dtype=torch.bool)
    if fraction == 0:
        return out
    by = _check(layout, d_head)
    n_layers = 1 + max(w.layer for w in layout.weights)
    heads, neurons = [], []
    for layer in range(n_layers):
        q, o = _slices(by[layer, "q"]), _slices(by[layer, "o"])
        per = d_head // layout.group_size
        for h in range(n_heads):
            groups = torch.cat([q[h * d_head : (h + 1) * d_head].flatten(),
                                o[:, h * per : (h + 1) * per].flatten()])  # fmt: skip
            heads.append((float(score[groups].sum()), layer, h, groups))
        gate, up = _slices(by[layer, "gate"]), _slices(by[layer, "up"])
        for n in range(gate.shape[0]):
            groups = torch.cat([gate[n], up[n]])
            neurons.append((float(score[groups].sum()), groups))
    cut = sorted(heads, key=lambda t: t[0])[: int(fraction * len(heads))]
    for *_, groups in cut:
        out[groups] = True
    for *_, groups in sorted(neurons, key=lambda t: t[0])[: int(fraction * len(neurons))]:
        out[groups] = True
    rep = n_heads // n_kv
    gone = {(layer, h) for _, layer, h, _ in cut}
    for layer in range(n_layers):
        for g in range(n_kv):
            if all((layer, g * rep + j) in gone for j in range(rep)):
                for kind in ("k", "v"):
                    out[_slices(by[layer, kind])[g * d_head : (g + 1) * d_head].flatten()] = True
    return out
