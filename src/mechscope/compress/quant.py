"""Round-to-nearest (RTN) quantization of weight groups, asymmetric min-max, with bit accounting.

A group of ``0 < b < 16`` bits stores integer codes ``c`` in ``[0, 2^b - 1]``, a 16-bit (fp16) scale
``s`` and a 16-bit zero point ``z`` (an integer in the same range); its weights are
``(c - z) * s``, so it holds at most ``2^b`` distinct values. ``s = (max - min) / (2^b - 1)``
rounded to fp16 and ``z = round(-min / s)``. A 16-bit group is the weights cast to fp16 (no scale
or zero); a pruned group (``b = 0``) is all zeros and stores nothing. Effective bits per
weight: ``b + 32 / group_size`` for ``0 < b < 16``, 16 for ``b = 16``, 0 for ``b = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechscope.errors import MechscopeError

Tensor = torch.Tensor
WIDTHS = (2, 3, 4, 8, 16)
SCALE_BITS = 32  # a 16-bit scale and a 16-bit zero point per group
FULL = 16


def check_widths(widths: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    bad = [w for w in widths if w not in WIDTHS]
    if bad or not widths:
        raise MechscopeError(f"bit widths {bad or widths} not allowed; choose from {WIDTHS}")
    return tuple(sorted(set(widths)))


def group_bits(width: int, group_size: int) -> int:
    """Storage bits of one group of ``group_size`` weights at ``width`` bits (codes + scale);
    width 0 is a pruned group (all zeros, nothing stored but its entry in the bit map)."""
    if width == 0:
        return 0
    return FULL * group_size if width >= FULL else width * group_size + SCALE_BITS


def effective_bits(widths: Tensor, group_size: int) -> float:
    """Average storage bits per weight of groups with these widths ``[group]``."""
    w = widths.to(torch.float64)
    per = torch.where(w >= FULL, w * group_size, w * group_size + SCALE_BITS)
    per = torch.where(w == 0, 0.0, per)  # pruned groups
    return float(per.sum() / (group_size * max(len(widths), 1)))


@dataclass(frozen=True)
class Quantized:
    """RTN/GPTQ output for ``[group, group_size]`` weights: codes, fp16 scales, zeros, values.

    ``codes`` are int32 (for a 16-bit group: the fp16 bit pattern); ``values`` = dequantized.
    """

    codes: Tensor
    scale: Tensor
    zero: Tensor
    values: Tensor
    bits: Tensor


def params(w: Tensor, bits: Tensor) -> tuple[Tensor, Tensor]:
    """(scale fp16 as float32, zero) of asymmetric min-max groups ``w [group, group_size]``."""
    maxq = (2.0 ** bits.clamp(max=15).to(w.dtype)) - 1
    lo, hi = w.min(dim=1).values, w.max(dim=1).values
    scale = ((hi - lo) / maxq).to(torch.float16).to(w.dtype)
    tiny = torch.finfo(torch.float16).tiny
    scale = torch.where(scale > 0, scale, torch.full_like(scale, tiny))
    zero = torch.round(-lo / scale).clamp(torch.zeros_like(maxq), maxq)
    return scale, zero


def encode(w: Tensor, scale: Tensor, zero: Tensor, bits: Tensor) -> Tensor:
    """Integer codes of ``w [group, n]`` with per-group ``scale``, ``zero``, ``bits``."""
    maxq = (2.0 ** bits.clamp(max=15).to(w.dtype)) - 1
    return torch.round(w / scale[:, None]).add(zero[:, None]).clamp(min=0).minimum(maxq[:, None])


def rtn(w: Tensor, bits: Tensor | int) -> Quantized:
    """Quantize groups ``w [group, group_size]`` to ``bits`` (one width, or one per group)."""
    w = w.float()
    bits = torch.as_tensor(bits).expand(w.shape[0]).to(torch.int64)
    scale, zero = params(w, bits)
    codes = encode(w, scale, zero, bits)
    full = bits >= FULL
    if full.any():
        codes[full] = w[full].to(torch.float16).view(torch.int16).float()
        scale[full], zero[full] = 0.0, 0.0
    pruned = bits == 0
    codes[pruned], scale[pruned], zero[pruned] = 0.0, 0.0, 0.0
    codes = codes.to(torch.int32)
    return Quantized(codes, scale, zero, decode(codes, scale, zero, bits), bits)


def decode(codes: Tensor, scale: Tensor, zero: Tensor, bits: Tensor) -> Tensor:
    """Weights ``[group, group_size]`` (float32) from codes and per-group scale, zero, bits.

    The one dequantization formula: export, packing and the bit recount all use it.
    """
    values = (codes.float() - zero.float()[:, None]) * scale.float()[:, None]
    full = bits >= FULL
    if full.any():
        values[full] = codes[full].to(torch.int16).view(torch.float16).float()
    return values


def rtn_errors(w: Tensor, widths: tuple[int, ...], saliency: Tensor | None = None) -> Tensor:
    """[group width]: ``sum_i saliency_i (w_i - q_b(w_i))^2`` per group and width.

    ``saliency`` broadcasts against ``w [group, group_size]`` (None: plain squared error).
    """
    out = []
    for b in widths:
        err = (rtn(w, b).values - w.float()).square()
        out.append((err if saliency is None else err * saliency).sum(dim=1))
    return torch.stack(out, dim=1)


def distinct_per_group(values: Tensor) -> Tensor:
    """[group] the number of distinct values in each row of ``values [group, group_size]``."""
    s = values.sort(dim=1).values
    return 1 + (s[:, 1:] != s[:, :-1]).sum(dim=1)
