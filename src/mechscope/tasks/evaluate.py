"""Score a model on a task: the clean and corrupted runs under one metric, per prompt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import get_metric

Tensor = torch.Tensor


@dataclass(frozen=True)
class TaskScores:
    """Per-prompt metric values ``[batch]`` on the clean and the corrupted prompts."""

    task: str
    metric: str
    clean: Tensor
    corrupt: Tensor

    @property
    def clean_mean(self) -> float:
        return float(self.clean.mean())

    @property
    def corrupt_mean(self) -> float:
        return float(self.corrupt.mean())


@torch.no_grad()
def run_logits(model: Any, batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """Logits ``[batch pos d_vocab]`` of the clean and the corrupted prompts."""
    clean = model.forward(batch.clean_tokens, attention_mask=batch.clean_mask)
    corrupt = model.forward(batch.corrupt_tokens, attention_mask=batch.corrupt_mask)
    return clean, corrupt


def evaluate(model: Any, batch: TaskBatch, metric: str = "logit_diff") -> TaskScores:
    """Run ``model`` (a :class:`HookedModel`) on both halves of ``batch`` and score them.

    With ``metric="kl"`` the clean score is 0 and the corrupted one is KL(clean || corrupted).
    """
    if metric == "kl" and not torch.equal(batch.last_pos, batch.corrupt_last_pos):
        raise MechscopeError(
            "metric 'kl' compares the runs position by position, but some clean/corrupted pairs "
            "differ in length; tokenize with require_same_length=True"
        )
    clean_logits, corrupt_logits = run_logits(model, batch)
    fn = get_metric(metric, clean_logits if metric == "kl" else None)
    return TaskScores(
        task=batch.name,
        metric=metric,
        clean=fn(clean_logits, batch).cpu(),
        corrupt=fn(corrupt_logits, batch.flipped()).cpu(),
    )
