"""Resample ablation: the node's activation comes from another prompt of a reference set.

Steps (Chan et al. 2022, causal scrubbing; Wang et al. 2022 resample from the ABC set):

1. Run the reference prompts once, caching the ablated sites (``reference [ref pos ...]``).
2. Draw one random derangement of the reference prompts from ``seed`` (a permutation without
   fixed points, drawn uniformly by rejection: ``randperm`` until no ``perm[i] == i``, about
   e = 2.7 draws); input prompt ``i`` takes reference prompt ``perm[i mod ref]``. The reference
   set is often the input itself (the default), and a fixed point would leave that prompt
   unablated; with a derangement no prompt is its own reference. Every ablated site uses the
   same permutation, so all of prompt ``i``'s ablated nodes come from one reference prompt.
3. ``seed=None`` is the identity (prompt ``i`` takes reference prompt ``i``), which checks the
   plumbing. A reference set of one prompt has no derangement: every input takes that prompt.

The reference prompts must have the input's number of positions (activations are taken position
by position).
"""

from __future__ import annotations

import torch

from mechscope.errors import MechscopeError

Tensor = torch.Tensor


def resample_rows(batch: int, n_ref: int, seed: int | None) -> Tensor:
    """Which reference prompt each of ``batch`` input prompts takes: [batch] indices."""
    rows = torch.arange(batch) % n_ref
    if seed is None:
        return rows
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_ref, generator=g)
    while n_ref > 1 and bool((perm == torch.arange(n_ref)).any()):
        perm = torch.randperm(n_ref, generator=g)
    return perm[rows]


def resample(
    act: Tensor, reference: Tensor | None, *, mask: Tensor | None = None, seed: int | None = 0
) -> Tensor:
    """Reference activations, one reference prompt per input prompt; ``mask`` unused."""
    if reference is None:
        raise MechscopeError("resample ablation needs a reference set of prompts; pass reference=")
    if reference.shape[1:] != act.shape[1:]:
        raise MechscopeError(
            f"resample ablation needs reference prompts as long as the input: reference "
            f"activations {tuple(reference.shape)}, input {tuple(act.shape)}"
        )
    rows = resample_rows(act.shape[0], reference.shape[0], seed).to(reference.device)
    return reference[rows].to(act.dtype)
