"""Checkpoints of a detector fit, so that ``anomaly fit`` resumes after kill -9.

A checkpoint is one safetensors file (``<detector folder>.fit-checkpoint.safetensors``, beside
the detector) holding, after a whole number of batches: every kind's streamed statistics at every
layer (sums, counts, LOF's reservoir sample and its random generator's state), the held-out
windows collected so far, and in its metadata the batch counter and the settings it belongs to.
It is written every ``checkpoint_every`` batches and once more when streaming ends, with
:func:`mechscope.files.atomic_path` (a crash leaves the previous checkpoint or the new one,
never a torn file). A resumed fit skips the batches the checkpoint counted (they are re-cut from
the corpus but not run through the model) and continues from its statistics, so nothing is
counted twice or lost; the statistics are sums in the same order, so the detector equals an
uninterrupted fit's. Calibration on the held-out windows runs after streaming and is not
checkpointed (it is a fifth of the work at the default holdout).

A checkpoint resumes only a fit with the same settings, model and corpus; otherwise the error
names what differs. Nothing is unpickled: statistics objects are flattened to tensors by their
attribute names (tensors, numbers, ``None``, a ``torch.Generator``, nested statistics objects).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.files import atomic_path

__all__ = ["checkpoint_path", "load_checkpoint", "save_checkpoint"]

FORMAT = "mechscope-anomaly-fit-checkpoint/1"


def checkpoint_path(out: str | Path) -> Path:
    """Where the fit of the detector folder ``out`` keeps its checkpoint."""
    out = Path(out)
    return out.with_name(out.name + ".fit-checkpoint.safetensors")


def _flatten(obj: Any, prefix: str, tensors: dict[str, Tensor], kinds: dict[str, str]) -> None:
    for name, value in vars(obj).items():
        key = f"{prefix}{name}"
        if isinstance(value, Tensor):
            tensors[key], kinds[key] = value.detach().contiguous(), "tensor"
        elif isinstance(value, torch.Generator):
            tensors[key], kinds[key] = value.get_state(), "generator"
        elif isinstance(value, bool | int | float):
            dtype = torch.float64 if isinstance(value, float) else torch.int64
            tensors[key], kinds[key] = torch.tensor(value, dtype=dtype), type(value).__name__
        elif value is None:
            kinds[key] = "none"
        else:
            kinds[key] = "object"
            _flatten(value, key + ".", tensors, kinds)


def _restore(obj: Any, prefix: str, tensors: dict[str, Tensor], kinds: dict[str, str]) -> None:
    for name, value in vars(obj).items():
        key = f"{prefix}{name}"
        how = kinds.get(key)
        if how is None:
            raise MechscopeError(f"the fit checkpoint lacks {key}; delete it to start afresh")
        if how == "object":
            _restore(value, key + ".", tensors, kinds)
        elif how == "generator":
            value.set_state(tensors[key])
        elif how == "none":
            setattr(obj, name, None)
        elif how == "tensor":
            setattr(obj, name, tensors[key])
        else:
            setattr(obj, name, {"int": int, "float": float, "bool": bool}[how](tensors[key].item()))


def save_checkpoint(
    path: Path,
    key: dict[str, Any],
    counters: dict[str, int],
    stats: dict[tuple[str, int], Any],
    held: list[Tensor],
) -> None:
    """Write the state after ``counters["batches"]`` batches, atomically."""
    tensors: dict[str, Tensor] = {}
    kinds: dict[str, str] = {}
    for (kind, layer), s in stats.items():
        _flatten(s, f"stats/{kind}/{layer}/", tensors, kinds)
    if held:
        tensors["held"] = torch.stack(held).contiguous()
    meta = {"format": FORMAT, "key": key, "counters": counters, "kinds": kinds}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"state": json.dumps(meta)})


def load_checkpoint(
    path: Path, key: dict[str, Any], stats: dict[tuple[str, int], Any]
) -> tuple[dict[str, int], list[Tensor]] | None:
    """Restore ``stats`` in place from the checkpoint at ``path``; return the counters and the
    held-out windows, or None when there is no checkpoint."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            meta = json.loads(json.loads(handle.read(size))["__metadata__"]["state"])
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise MechscopeError(
            f"{path} is not a readable fit checkpoint ({str(exc).splitlines()[0]}); delete it"
        ) from None
    if meta.get("format") != FORMAT:
        raise MechscopeError(f"{path} is not a fit checkpoint of format {FORMAT}; delete it")
    differ = sorted(k for k in set(key) | set(meta["key"]) if key.get(k) != meta["key"].get(k))
    if differ:
        raise MechscopeError(
            f"the fit checkpoint {path} belongs to another fit (it differs in "
            f"{', '.join(differ)}); pass the same settings to resume, or delete it to start afresh"
        )
    for (kind, layer), s in stats.items():
        _restore(s, f"stats/{kind}/{layer}/", tensors, meta["kinds"])
    held = list(tensors["held"]) if "held" in tensors else []
    return {k: int(v) for k, v in meta["counters"].items()}, held
