"""Data-parallel SAE training: :func:`mechscope.sae.fit` on every rank, gradients averaged.

Every rank reads the same deterministic stream of global batches and keeps its slice (rows
``[r * B / W, (r + 1) * B / W)``); the loss terms are means over rows, so the mean of the ranks'
gradients is the global batch's gradient. After each backward pass the gradients are all-reduced
(one flat buffer, as DDP's buckets do) before the decoder-norm projection and the Adam step; the
firing statistics (dead latents for AuxK, L0 for the ReLU/JumpReLU controller) are summed over
ranks, AuxK's normaliser (the residual's mean squared norm) is averaged over ranks
(``SAE.batch_mean``), and the decoder bias starts at the global batch's mean. So every rank holds
the same weights, equal to a one-process run on the global batch to float tolerance.

BatchTopK (and Matryoshka) keep the ``k x rows`` largest pre-activations of the global batch:
each rank's own largest ``k x rows`` values are gathered (``SAE.batch_gather``), the global
threshold is the n-th largest of them, and the inference threshold learns the global batch's
smallest kept activation. Not supported across ranks: the resampling of dead latents (refused).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from mechscope.distributed import init, rank, world_size
from mechscope.errors import MechscopeError
from mechscope.files import LOCK_FILE

__all__ = ["GradSync", "fit", "shard_batches"]


class GradSync:
    """The collective operations :func:`mechscope.sae.fit` calls when given ``sync=``."""

    def __init__(self) -> None:
        self.world = world_size()

    def grads(self, module: torch.nn.Module) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, t: Tensor) -> Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t / self.world

    def gather(self, t: Tensor) -> Tensor:
        """Every rank's ``t`` (same shape on each) concatenated in rank order."""
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def sum(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t)

    def any(self, mask: Tensor) -> Tensor:
        t = mask.to(torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.bool()


def shard_batches(batches: Iterable[Any], me: int, world: int) -> Iterator[Any]:
    """Rank ``me``'s slice of every global batch (a tensor, or a transcoder's pair)."""
    for batch in batches:
        parts = batch if isinstance(batch, (tuple, list)) else (batch,)
        n = parts[0].shape[0]
        if n % world:
            raise MechscopeError(
                f"a batch of {n} rows does not split over {world} processes: make the batch "
                "size a multiple of the process count"
            )
        step = n // world
        sliced = tuple(p[me * step : (me + 1) * step] for p in parts)
        yield sliced if isinstance(batch, (tuple, list)) else sliced[0]


def fit(sae: Any, batches: Iterable[Any], cfg: Any, **kw: Any) -> Any:
    """:func:`mechscope.sae.fit` across the ranks of a torchrun launch; ``batches`` are global
    batches (identical on every rank). One process: that function unchanged.

    Rank 0 owns ``checkpoint_dir``; every other rank resumes from a private copy of it (made
    after rank 0 reached this call), so a killed run resumes with the same weights and optimiser
    state everywhere, and its own checkpoints go to that copy, deleted at the end.
    """
    from mechscope.sae import fit as single_fit

    if not init():
        return single_fit(sae, batches, cfg, **kw)
    if cfg.resample_every:
        raise MechscopeError("resampling dead latents is not supported across processes")
    with tempfile.TemporaryDirectory(prefix=f"mechscope-rank{rank()}-") as private:
        dist.barrier()  # rank 0 has prepared its checkpoint folder
        if rank() != 0:
            kw["progress"] = False
            if kw.get("checkpoint_dir") is not None:
                kw["checkpoint_dir"] = _copy_checkpoints(Path(kw["checkpoint_dir"]), Path(private))
        dist.barrier()  # every copy is made before rank 0 writes a new checkpoint
        shards = shard_batches(batches, rank(), world_size())
        sync = GradSync()
        sae.batch_mean = sync.mean  # AuxK's normaliser over the global batch
        sae.batch_gather = sync.gather  # BatchTopK's threshold over the global batch
        try:
            return single_fit(sae, shards, cfg, sync=sync, **kw)
        finally:
            del sae.batch_mean, sae.batch_gather  # back to the class defaults


def _copy_checkpoints(source: Path, private: Path) -> Path:
    target = private / "checkpoints"
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(LOCK_FILE, ".*"))
    return target
