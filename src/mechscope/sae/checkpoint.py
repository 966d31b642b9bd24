"""Training checkpoints that resume exactly, with no pickles.

A checkpoint is a folder ``step-<N>/`` inside the checkpoint directory holding
``sae.safetensors`` (every parameter and buffer), ``optimizer.safetensors`` (Adam's
``exp_avg``, ``exp_avg_sq`` and ``step`` per parameter), ``trainer.safetensors`` (tokens since
each latent fired) and ``trainer.json`` (step, tokens, loss curve, SAE config). It is written
under a temporary name and renamed; then ``latest.json`` is replaced atomically to point at it
and older checkpoints are removed, so a crash at any moment leaves a complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.sae.base import SAE

__all__ = ["TrainState", "load_checkpoint", "save_checkpoint"]

LATEST = "latest.json"


@dataclass
class TrainState:
    """What the trainer carries from step to step besides the weights and Adam."""

    step: int
    tokens: int
    tokens_since_fired: Tensor  # [d_sae] int64
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def new(cls, d_sae: int) -> TrainState:
        return cls(0, 0, torch.zeros(d_sae, dtype=torch.int64))


def save_checkpoint(
    directory: str | Path, sae: SAE, opt: torch.optim.Optimizer, state: TrainState
) -> Path:
    """Write ``step-<N>/`` atomically, point ``latest.json`` at it, remove older checkpoints."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state.step}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(
        {k: v.detach().contiguous() for k, v in sae.state_dict().items()}, tmp / "sae.safetensors"
    )
    save_file(_optimizer_tensors(opt), tmp / "optimizer.safetensors")
    save_file(
        {"tokens_since_fired": state.tokens_since_fired.contiguous()}, tmp / "trainer.safetensors"
    )
    meta = {
        "step": state.step,
        "tokens": state.tokens,
        "history": state.history,
        "sae": dataclasses.asdict(sae.cfg),
    }
    (tmp / "trainer.json").write_text(json.dumps(meta))
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_atomic(root / LATEST, json.dumps({"checkpoint": name}))
    for old in root.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    directory: str | Path, sae: SAE, opt: torch.optim.Optimizer
) -> TrainState | None:
    """Restore ``sae`` and ``opt`` from the latest checkpoint; None when there is none."""
    root = Path(directory)
    if not (root / LATEST).exists():
        return None
    folder = root / json.loads((root / LATEST).read_text())["checkpoint"]
    meta = json.loads((folder / "trainer.json").read_text())
    saved = meta["sae"]
    for key in ("arch", "d_in", "d_sae", "out_hook_name"):
        if saved.get(key) != getattr(sae.cfg, key):
            raise MechscopeError(
                f"checkpoint in {root} is for {key}={saved.get(key)!r}, this SAE has {getattr(sae.cfg, key)!r}: use another --checkpoint folder"
            )
    sae.load_state_dict(load_file(folder / "sae.safetensors"))
    _load_optimizer(opt, load_file(folder / "optimizer.safetensors"))
    fired = load_file(folder / "trainer.safetensors")["tokens_since_fired"]
    return TrainState(meta["step"], meta["tokens"], fired, meta["history"])


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    out = {}
    for i, per_param in opt.state_dict()["state"].items():
        for key, value in per_param.items():
            out[f"{i}.{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = value
    saved = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
