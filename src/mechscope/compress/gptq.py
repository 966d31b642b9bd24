"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers") with a bit width per group, in torch.

For a weight ``W [out, in]`` and the Hessian ``H = 2 X^T X / n`` of its calibration inputs:

1. dampen ``H`` (add ``damp * mean(diag H)`` to its diagonal; dead input columns get 1 and weight
   0) and take the upper Cholesky factor ``U`` of ``H^-1``;
2. walk the input columns in order, one block of ``group_size`` columns at a time (a block is one
   group of every row); at the start of a block compute each row's asymmetric min-max scale and
   zero from the block's current (error-corrected) weights and that row's width for the group;
3. quantize column ``j``, take the error ``e = (w_j - q_j) / U_jj`` and subtract ``e U_j,k`` from
   the block's later columns; after the block, push the block's errors onto all later columns
   (the lazy batch update).

The output uses RTN's format (codes, fp16 scale, zero; 16-bit groups are fp16 casts), so the bit
accounting and the packing are the same. Each weight uses the Hessian of the unquantized model's
inputs (no sequential re-calibration of later layers).
"""

from __future__ import annotations

import torch

from mechscope.compress.quant import FULL, Quantized, decode, encode, params

Tensor = torch.Tensor


def _inverse_factor(h: Tensor, damp: float) -> tuple[Tensor, Tensor]:
    """(upper Cholesky factor of the dampened H^-1, dead-column mask)."""
    h = h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inv, upper=True), dead


def gptq(
    weight: Tensor, hessian: Tensor, bits: Tensor, group_size: int, damp: float = 0.01
) -> Quantized:
    """Quantize ``weight [out, in]`` with widths ``bits [out, in // group_size]``.

    Returns a :class:`Quantized` over groups ``[out * in / group_size, group_size]``.
    """
    out_f, in_f = weight.shape
    u, dead = _inverse_factor(hessian, damp)
    w = weight.double().clone()
    w[:, dead] = 0.0
    n_blocks = in_f // group_size
    codes = torch.zeros(out_f, n_blocks, group_size, dtype=torch.float64)
    scales = torch.zeros(out_f, n_blocks, dtype=torch.float64)
    zeros = torch.zeros_like(scales)
    for blk in range(n_blocks):
        a, b = blk * group_size, (blk + 1) * group_size
        rows_bits = bits[:, blk].long()
        full = rows_bits >= FULL
        pruned = rows_bits == 0
        scale, zero = params(w[:, a:b], rows_bits.clamp(min=1))
        scales[:, blk], zeros[:, blk] = scale, zero
        err = torch.zeros(out_f, group_size, dtype=torch.float64)
        for i in range(group_size):
            col = w[:, a + i]
            c = encode(col[:, None], scale, zero, rows_bits.clamp(min=1))[:, 0]
            q = (c - zero) * scale
            q[pruned], c[pruned] = 0.0, 0.0
            if full.any():
                half = col[full].to(torch.float16)
                q[full] = half.double()
                c[full] = half.view(torch.int16).double()
            codes[:, blk, i] = c
            e = (col - q) / u[a + i, a + i]
            w[:, a + i : b] -= e[:, None] * u[a + i, a + i : b][None, :]
            err[:, i] = e
        w[:, b:] -= err @ u[a:b, b:]
    flat = bits.reshape(-1).long()
    scales, zeros = scales.reshape(-1), zeros.reshape(-1)
    fullg = (flat >= FULL) | (flat == 0)
    scales[fullg], zeros[fullg] = 0.0, 0.0
    codes_i = codes.reshape(-1, group_size).to(torch.int32)
    scales, zeros = scales.float(), zeros.float()
    return Quantized(codes_i, scales, zeros, decode(codes_i, scales, zeros, flat), flat)
