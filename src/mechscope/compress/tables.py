"""Per-group error tables ``[group width]``: what each group loses at each bit width under RTN.

For every group and width ``b`` with the RTN error ``dw = q_b(w) - w``:

- ``mse``: ``sum dw^2`` (plain squared error);
- ``act``: ``sum_j E[x_j^2] dw_j^2`` (the layer output's squared error with the inputs'
  second moments: AWQ-style activation saliency, and the general-LM term of the circuit method);
- ``fisher``: ``sum F_i dw_i^2`` with ``F`` the squared LM-loss gradient (second-order estimate
  of the loss increase);
- ``taylor``: ``|sum g_i dw_i|`` with ``g`` the mean LM-loss gradient (first-order estimate).

The allocator is quantizer-agnostic: these tables rank groups; GPTQ then quantizes with the
chosen widths.
"""

from __future__ import annotations

import torch

from mechscope.compress.calib import stat_key
from mechscope.compress.groups import Layout, get_weight, grouped
from mechscope.compress.quant import rtn
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

Tensor = torch.Tensor
KINDS = ("mse", "act", "fisher", "taylor")


@torch.no_grad()
def error_tables(
    model: HookedModel,
    layout: Layout,
    widths: tuple[int, ...],
    *,
    act: dict[str, Tensor] | None = None,
    fisher: dict[str, Tensor] | None = None,
    grad: dict[str, Tensor] | None = None,
    extra: dict[str, dict[str, Tensor]] | None = None,
    quiet: bool = True,
) -> dict[str, Tensor]:
    """``{kind: [group width]}`` for ``mse`` and each statistic given; ``extra`` maps more names
    to squared-gradient statistics tabled like ``fisher`` (e.g. a task's Fisher)."""
    extra = extra or {}
    kinds = ["mse"] + [k for k, v in (("act", act), ("fisher", fisher), ("taylor", grad)) if v]
    out = {k: torch.zeros(layout.n_groups, len(widths)) for k in [*kinds, *extra]}
    gs = layout.group_size
    for info in progress(layout.weights, desc="error tables", quiet=quiet):
        w = grouped(get_weight(model, info).detach().float(), gs)
        sl = slice(info.offset, info.offset + info.n_groups)
        col = act[stat_key(info)].view(-1, gs).repeat(info.out_features, 1) if act else None
        f = grouped(fisher[info.name].float(), gs) if fisher else None
        g = grouped(grad[info.name].float(), gs) if grad else None
        for j, b in enumerate(widths):
            dw = rtn(w, b).values - w
            sq = dw.square()
            out["mse"][sl, j] = sq.sum(1)
            if col is not None:
                out["act"][sl, j] = (sq * col).sum(1)
            if f is not None:
                out["fisher"][sl, j] = (sq * f).sum(1)
            if g is not None:
                out["taylor"][sl, j] = (dw * g).sum(1).abs()
            for name, stat in extra.items():
                out[name][sl, j] = (sq * grouped(stat[info.name].float(), gs)).sum(1)
    return out
