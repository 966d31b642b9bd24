"""Export a compressed model to a folder, and read its packed form back.

The folder holds what ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` needs (config,
the dequantized weights as ``model.safetensors``, tokenizer files), plus ``packed.safetensors``
(codes at their bit width, scales, zeros, the bit map and the unquantized tensors: see
:mod:`.packing`) and ``compress.json`` (the settings, effective bits, width histogram per weight
kind and the file sizes). ``mechscope.load(DIR)`` builds the model from ``packed.safetensors``
(:func:`load_packed`), so what it runs is what the packed codes hold.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from mechscope.compress.groups import Layout
from mechscope.compress.packing import PACKED, read_packed, write_packed
from mechscope.compress.quant import Quantized
from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor
SUMMARY = "compress.json"


def _others(hf: PreTrainedModel, layout: Layout) -> dict[str, Tensor]:
    """Every tensor of the state dict that is not quantized, shared storage stored once."""
    quantized = {w.name for w in layout.weights}
    seen: set[int] = set()
    out = {}
    for name, t in hf.state_dict().items():
        if name in quantized or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        out[name] = t
    return out


def export(
    model: HookedModel,
    layout: Layout,
    quantized: dict[str, Quantized],
    summary: dict[str, Any],
    out: str | Path,
) -> dict[str, Any]:
    """Write the export folder ``out`` (which must not exist) atomically; returns the summary
    with ``sizes`` (bytes of each file) added."""
    target = Path(out)
    if target.exists():
        raise MechscopeError(f"output folder {target} exists; pass a new --out folder")
    meta = {"group_size": layout.group_size, "weights": layout.to_dict()["weights"]}
    with atomic_folder(target) as tmp, _no_bars():
        model.hf.save_pretrained(tmp, safe_serialization=True)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        write_packed(tmp / PACKED, quantized, _others(model.hf, layout), meta)
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        summary = {**summary, "sizes": sizes}
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@contextmanager
def _no_bars() -> Iterator[None]:
    """transformers' shard-writing bar off while exporting (the CLI says what it wrote)."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def is_export(folder: str | Path) -> bool:
    return (Path(folder) / PACKED).is_file() and (Path(folder) / SUMMARY).is_file()


def load_packed(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(HF model, tokenizer) built from ``packed.safetensors`` and the folder's config."""
    folder = Path(folder)
    try:
        state, _ = read_packed(folder / PACKED)
    except Exception as exc:
        raise MechscopeError(f"{folder / PACKED} is unreadable ({exc}); export again") from exc
    config = copy.deepcopy(AutoConfig.from_pretrained(folder))
    hf = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = hf.load_state_dict(
        {k: v.to(dtype) for k, v in state.items()}, strict=False
    )
    hf.tie_weights()
    params = dict(hf.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in state if k in params}
    left = [n for n in missing if id(params.get(n)) not in loaded]  # tied weights were loaded
    if unexpected or left:
        raise MechscopeError(
            f"{folder / PACKED} does not match the folder's config (missing {left[:3]}, "
            f"unexpected {unexpected[:3]}); export again"
        )
    return hf.eval(), AutoTokenizer.from_pretrained(folder)
