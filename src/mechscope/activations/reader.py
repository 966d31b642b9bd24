"""Shuffled training batches from an activation store, mixing rows across shards.

Steps, for each pass over the store (an epoch):

1. permute the shard order (``shuffle``) with a generator seeded by ``seed``;
2. take ``mix_shards`` shards at a time, copy them into one buffer together with the rows left
   over from the previous group, and permute the buffer's rows;
3. yield full batches from the buffer; keep the remainder for the next group (or the next epoch
   with ``loop``), and yield it at the very end unless ``drop_last``.

Only one group (``mix_shards`` shards, plus one shard while loading) is in memory. The same seed
gives the same batches. Several sites (a transcoder's input and output) share one permutation, so
their rows stay paired. ``normalize`` multiplies each site by its recorded norm scale, giving unit
mean squared norm.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

if TYPE_CHECKING:
    from mechscope.activations.store import ActivationStore, Batch

__all__ = ["batches"]


def _group(
    store: ActivationStore, positions: list[int], carry: dict[str, Tensor]
) -> dict[str, Tensor]:
    """One buffer per site: ``carry`` rows then the rows of the shards at ``positions``."""
    shards = store.manifest.shards
    n = next(iter(carry.values())).shape[0] + sum(shards[p].n_tokens for p in positions)
    dtype = next(iter(carry.values())).dtype
    out = {site: torch.empty(n, t.shape[1], dtype=dtype) for site, t in carry.items()}
    start = next(iter(carry.values())).shape[0]
    for site, t in carry.items():
        out[site][:start] = t
    for p in positions:
        tensors = store.load_shard(p)
        for site in out:
            out[site][start : start + shards[p].n_tokens] = tensors[site]
        start += shards[p].n_tokens
        del tensors
    return out


def _emit(rows: dict[str, Tensor], scales: dict[str, float] | None, dtype: torch.dtype) -> Batch:
    out = []
    for site, t in rows.items():
        t = t.to(dtype)
        out.append(t * scales[site] if scales is not None else t)
    return out[0] if len(out) == 1 else tuple(out)


def batches(
    store: ActivationStore,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    normalize: bool = False,
    loop: bool = False,
    drop_last: bool = False,
    mix_shards: int = 4,
    dtype: torch.dtype = torch.float32,
) -> Iterator[Batch]:
    """Batches ``[batch_size d]`` (a tuple per site when the store has several sites)."""
    if batch_size < 1 or mix_shards < 1:
        raise MechscopeError(
            f"batch_size and mix_shards must be positive, got {batch_size} and {mix_shards}"
        )
    m = store.manifest
    if not m.shards:
        raise MechscopeError(
            f"the store in {store.folder} has no shards; harvest some tokens first"
        )
    scales = None
    if normalize:
        if m.norm_scales is None:
            raise MechscopeError("this store has no norm scales (harvest not complete); finish it")
        scales = m.norm_scales
    return _batches(store, batch_size, seed, shuffle, scales, loop, drop_last, mix_shards, dtype)


def _batches(
    store: ActivationStore,
    batch_size: int,
    seed: int,
    shuffle: bool,
    scales: dict[str, float] | None,
    loop: bool,
    drop_last: bool,
    mix_shards: int,
    dtype: torch.dtype,
) -> Iterator[Batch]:
    m = store.manifest
    gen = torch.Generator().manual_seed(seed)
    stored = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    carry = {s: torch.empty(0, m.dims[s], dtype=stored[m.dtype]) for s in m.sites}
    while True:
        n = len(m.shards)
        order = torch.randperm(n, generator=gen).tolist() if shuffle else list(range(n))
        for g in range(0, n, mix_shards):
            buf = _group(store, order[g : g + mix_shards], carry)
            rows = next(iter(buf.values())).shape[0]
            perm = torch.randperm(rows, generator=gen) if shuffle else torch.arange(rows)
            full = rows - rows % batch_size
            for b in range(0, full, batch_size):
                idx = perm[b : b + batch_size]
                yield _emit({s: t[idx] for s, t in buf.items()}, scales, dtype)
            carry = {s: t[perm[full:]] for s, t in buf.items()}
            del buf
        if not loop:
            break
    if not drop_last and next(iter(carry.values())).shape[0]:
        yield _emit(carry, scales, dtype)
