"""Helpers shared by the compression tests (imported as a module: pytest's conftest name is shared)."""

from __future__ import annotations

import torch

from mechscope import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.tasks.base import TaskBatch

GS = 8  # group size: d_head of the tiny llama, so an o_proj group is one head's columns


def tiny_llama(seed: int = 0) -> HookedModel:
    """A fresh tiny Llama (3 layers, 6 heads, 2 key/value heads, d_head 8, d_mlp 80)."""
    return HookedModel(tiny_model("llama", seed=seed), tiny_tokenizer())


def toy_batch(seed: int = 0, b: int = 4, p: int = 8) -> TaskBatch:
    """Random prompts whose corrupted twins differ at positions 2 and 5."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(2, 101, (b, p), generator=g)
    corrupt = clean.clone()
    corrupt[:, [2, 5]] = torch.randint(2, 101, (b, 2), generator=g)
    mask = torch.ones(b, p, dtype=torch.long)
    answers = torch.randint(2, 101, (2, b), generator=g)
    last = torch.full((b,), p - 1)
    return TaskBatch("toy", clean, corrupt, mask, mask, answers[0], answers[1], last, last)
