"""Quantize a model's decoder-layer Linear weights in place with a width per group, and recount.

:func:`quantize_model` writes the dequantized weights into the model (RTN, or GPTQ with the
calibration Hessians) and returns the codes, scales and zeros per weight for export.
:func:`recount` reads only the weights: a group holding ``k`` distinct values needs
``ceil(log2 k)`` code bits, so the smallest allowed width with ``2^b >= k`` (16 for a group of
fp16 values with more than 256 distinct values) bounds the storage anyone can verify.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechscope.compress.calib import stat_key
from mechscope.compress.gptq import gptq
from mechscope.compress.groups import Layout, get_weight, grouped
from mechscope.compress.quant import FULL, Quantized, distinct_per_group, effective_bits, rtn
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

Tensor = torch.Tensor
QUANTIZERS = ("rtn", "gptq")


@torch.no_grad()
def quantize_model(
    model: HookedModel,
    layout: Layout,
    widths: Tensor,
    quantizer: str = "rtn",
    hessians: dict[str, Tensor] | None = None,
    *,
    keep: bool = True,
    quiet: bool = True,
) -> dict[str, Quantized]:
    """Replace every quantized weight by its dequantized value; return the packed parts."""
    if quantizer not in QUANTIZERS:
        raise MechscopeError(f"unknown quantizer {quantizer!r}; choose rtn or gptq")
    if quantizer == "gptq" and not hessians:
        raise MechscopeError(
            "quantizer 'gptq' needs calibration Hessians (input_stats hessian=True)"
        )
    if widths.shape != (layout.n_groups,):
        raise MechscopeError(f"{len(widths)} widths for {layout.n_groups} groups")
    out: dict[str, Quantized] = {}
    for info in progress(layout.weights, desc=f"quantize ({quantizer})", quiet=quiet):
        p = get_weight(model, info)
        bits = widths[info.offset : info.offset + info.n_groups].long()
        if quantizer == "rtn":
            q = rtn(grouped(p.detach(), layout.group_size), bits)
        else:
            h = hessians[stat_key(info)]  # type: ignore[index]
            q = gptq(p.detach(), h, bits.view(info.out_features, -1), layout.group_size)
        p.copy_(q.values.view_as(p).to(p.dtype))
        if keep:  # not the values: a view of them (values[:0]) would keep their storage alive
            out[info.name] = Quantized(q.codes, q.scale, q.zero, torch.empty(0), q.bits)
    return out


@dataclass(frozen=True)
class Recount:
    """Bits recounted from the weights alone, against the claimed widths."""

    widths: Tensor  # [group] the smallest allowed width holding each group's values
    effective_bits: float
    claimed_bits: float
    violations: int  # groups whose values need more bits than their claimed width

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("effective_bits", "claimed_bits", "violations")}


@torch.no_grad()
def recount(model: HookedModel, layout: Layout, claimed: Tensor) -> Recount:
    """Recount every group's bits from the model's current weights (see the module docstring)."""
    found = []
    for info in layout.weights:
        w = grouped(get_weight(model, info).detach().float(), layout.group_size)
        k = distinct_per_group(w)
        need = torch.full_like(k, FULL)
        for b in (8, 4, 3, 2):
            need = torch.where(k <= 2**b, b, need)
        fp16 = (w.to(torch.float16).float() == w).all(dim=1)
        need = torch.where((need == FULL) & ~fp16, 32, need)  # not even fp16: count float32
        need = torch.where((w == 0).all(dim=1), 0, need)  # an all-zero group: pruned
        found.append(need)
    widths = torch.cat(found)
    gs = layout.group_size
    return Recount(
        widths,
        effective_bits(widths, gs),
        effective_bits(claimed, gs),
        int((widths > claimed).sum()),
    )
