"""The packed form of a compressed model: integer codes at their bit width, fp16 scales, zeros.

``packed.safetensors`` in an export folder holds, per quantized weight ``W``:

- ``W.bits`` uint8 ``[group]``: the bit map (one width per group, row-major);
- ``W.codes{b}`` uint8: the codes of the groups of width ``b < 16``, bit-packed (``b`` bits per
  code, least significant bit first, groups in order); ``W.codes16`` int16: the fp16 bit patterns
  of the 16-bit groups;
- ``W.scale`` fp16 and ``W.zero`` int16 ``[quantized group]``: 32 bits per group of
  ``0 < b < 16`` (a pruned group, ``b = 0``, stores nothing);

and every other tensor of the model (embeddings, norms) as it is, under ``other.<name>``. So the
file's size is the compressed size: codes + 32 bits per quantized group + the unquantized rest.
:func:`read_packed` rebuilds the dequantized state dict with :func:`mechscope.compress.quant.decode`,
the formula that produced the exported weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mechscope.compress.quant import FULL, Quantized, decode

Tensor = torch.Tensor
PACKED = "packed.safetensors"
FORMAT = "mechscope-packed-1"


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Codes in ``[0, 2^bits)`` -> uint8 bytes, ``bits`` bits per code, LSB first."""
    c = codes.reshape(-1).numpy().astype(np.uint16)
    planes = ((c[:, None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_bits(data: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of :func:`pack_bits` for ``n`` codes."""
    flat = np.unpackbits(data.numpy(), bitorder="little")[: n * bits].reshape(n, bits)
    vals = (flat.astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(1)
    return torch.from_numpy(vals)


def packed_tensors(quantized: dict[str, Quantized], others: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of ``packed.safetensors`` (see the module docstring)."""
    out: dict[str, Tensor] = {}
    for name, q in quantized.items():
        out[f"{name}.bits"] = q.bits.to(torch.uint8)
        part = (q.bits < FULL) & (q.bits > 0)
        for b in sorted(set(q.bits.tolist()) - {0}):  # pruned groups store no codes
            sel = q.codes[q.bits == b]
            if b >= FULL:
                out[f"{name}.codes16"] = sel.to(torch.int16).contiguous()
            else:
                out[f"{name}.codes{b}"] = pack_bits(sel, b)
        out[f"{name}.scale"] = q.scale[part].to(torch.float16).contiguous()
        out[f"{name}.zero"] = q.zero[part].to(torch.int16).contiguous()
    for name, t in others.items():
        out[f"other.{name}"] = t.detach().contiguous()
    return out


def write_packed(path: Path, quantized: dict[str, Quantized], others: dict[str, Tensor],
                 meta: dict[str, Any]) -> None:  # fmt: skip
    tensors = packed_tensors(quantized, others)
    save_file(tensors, str(path), metadata={"format": FORMAT, "meta": json.dumps(meta)})


def read_packed(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(dequantized state dict, metadata) from a ``packed.safetensors`` file."""
    with safe_open(str(path), "pt") as f:
        header = f.metadata() or {}
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file")
        meta = json.loads(header["meta"])
        keys = set(f.keys())
        state = {k.removeprefix("other."): f.get_tensor(k) for k in keys if k.startswith("other.")}
        for w in meta["weights"]:
            name, shape = w["name"], (w["out_features"], w["in_features"])
            state[name] = _dequantize(f, keys, name, meta["group_size"]).view(shape)
    return state, meta


def _dequantize(f: Any, keys: set[str], name: str, gs: int) -> Tensor:
    bits = f.get_tensor(f"{name}.bits").long()
    codes = torch.zeros(len(bits), gs, dtype=torch.int64)
    for b in sorted(set(bits.tolist()) - {0}):
        sel = bits == b
        if b >= FULL:
            codes[sel] = f.get_tensor(f"{name}.codes16").long().view(-1, gs)
        else:
            n = int(sel.sum()) * gs
            codes[sel] = unpack_bits(f.get_tensor(f"{name}.codes{b}"), b, n).view(-1, gs)
    part = (bits < FULL) & (bits > 0)
    scale = torch.zeros(len(bits))
    zero = torch.zeros(len(bits))
    scale[part] = f.get_tensor(f"{name}.scale").float()
    zero[part] = f.get_tensor(f"{name}.zero").float()
    return decode(codes, scale, zero, bits)
