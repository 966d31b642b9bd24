"""Tiny models and a toy clean/corrupted batch for the circuit tests."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel
from mechscope.models.tiny import tiny_model
from mechscope.tasks.base import TaskBatch

KINDS = ["gpt2", "llama", "mistral", "qwen2", "gpt_neox", "gpt_neox_sequential", "mixtral"]


def toy_batch(seed: int = 0, b: int = 3, p: int = 6) -> TaskBatch:
    """Random prompts; the corrupted ones differ at positions 1 and 3."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(2, 101, (b, p), generator=g)
    corrupt = clean.clone()
    corrupt[:, [1, 3]] = torch.randint(2, 101, (b, 2), generator=g)
    mask = torch.ones(b, p, dtype=torch.long)
    answers = torch.randint(2, 101, (2, b), generator=g)
    last = torch.full((b,), p - 1)
    return TaskBatch("toy", clean, corrupt, mask, mask, answers[0], answers[1], last, last)


def logit_diff64(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Logit difference in the logits' own dtype (the library's metric works in float32)."""
    rows = torch.arange(len(batch))
    last = logits[rows, batch.last_pos]
    return last[rows, batch.answer_ids] - last[rows, batch.wrong_ids]


@pytest.fixture(scope="module")
def batch() -> TaskBatch:
    return toy_batch()


def hooked(kind: str, dtype: torch.dtype = torch.float32) -> HookedModel:
    return HookedModel(tiny_model(kind, dtype=dtype))
