"""Runs across processes and machines with ``torch.distributed`` (launched by ``torchrun``).

Each function here wraps a single-process one and gives the same result; with one process it
calls that function unchanged:

- :func:`harvest` (:mod:`.harvest`): shard ``i`` of a harvest is written by rank ``i % world``;
  rank 0 keeps the folder lock and the manifest. The store equals a one-process harvest.
- :func:`fit` (:mod:`.sae`): data-parallel SAE training; each rank trains on its slice of every
  global batch and the gradients are averaged (DDP's all-reduce), so the run matches one process
  with the same global batch to float tolerance.
- Models bigger than one device: ``mechscope.load(..., device_map="auto")`` (accelerate).

:func:`init` starts the process group from torchrun's environment: gloo for CPU tensors, and
NCCL for CUDA tensors when a GPU is present (``cpu:gloo,cuda:nccl``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from mechscope.errors import MechscopeError

__all__ = ["fit", "from_main", "harvest", "init", "is_main", "rank", "world_size"]


def world_size() -> int:
    """Processes in the run: torchrun's ``WORLD_SIZE`` (1 when not launched by it)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(backend: str | None = None) -> bool:
    """Join the process group torchrun describes; False (and nothing done) for one process."""
    if world_size() <= 1:
        return False
    if not dist.is_available():
        raise MechscopeError("this torch build has no torch.distributed; run with one process")
    if not dist.is_initialized():
        # tensors on the CPU go through gloo, CUDA tensors through NCCL
        cuda = torch.cuda.is_available()
        dist.init_process_group(backend or ("cpu:gloo,cuda:nccl" if cuda else "gloo"))
        if cuda:
            torch.cuda.set_device(
                int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
            )
    return True


def broadcast_error(error: BaseException | None) -> None:
    """Raise on every rank if rank 0 (or any rank) failed, so none waits forever."""
    if world_size() <= 1:
        if error is not None:
            raise error
        return
    messages: list[Any] = [None] * world_size()
    dist.all_gather_object(messages, None if error is None else str(error))
    if error is not None:
        raise error
    failed = [m for m in messages if m is not None]
    if failed:
        raise MechscopeError(f"another rank failed: {failed[0]}")


def from_main(fn: Any) -> Any:
    """``fn()`` run on rank 0 only, its result sent to every rank (its error raised on all)."""
    if world_size() <= 1:
        return fn()
    box: list[Any] = [None, None]
    if rank() == 0:
        try:
            box[0] = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            box[1] = exc
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise box[1] if rank() == 0 else MechscopeError(f"rank 0 failed: {box[1]}")
    return box[0]


def __getattr__(name: str) -> Any:
    if name == "harvest":
        from mechscope.distributed.harvest import harvest

        return harvest
    if name == "fit":
        from mechscope.distributed.sae import fit

        return fit
    raise AttributeError(f"module 'mechscope.distributed' has no attribute {name!r}")
