"""The causal check beside each routing statistic: what the model loses without an expert.

For each layer and expert, two interventions (:mod:`mechscope.moe.interventions`):

- ablate: the expert's routing weight is zeroed, so its tokens lose its write;
- reroute: the expert is removed from the router's choice, so its tokens go to their next expert.

Each reports the change of the mean next-token loss over the windows, of the loss on the tokens
of each label (the label of the token the expert read, i.e. the input position), and, with a
task, of the task metric. Routing statistics alone do not predict which experts matter; this does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.moe.interventions import ablate_hooks, reroute_hooks

__all__ = ["ExpertEffects", "expert_effects", "token_losses"]


@torch.no_grad()
def token_losses(
    model: Any, tokens: Tensor, hooks: Sequence[Any] = (), batch_size: int = 8
) -> Tensor:
    """Next-token loss of every position but the last [batch pos-1] under ``hooks``."""
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size]
        with model.hooks(list(hooks)):
            logits = model(chunk).float()
        out.append(
            F.cross_entropy(
                logits[:, :-1].flatten(0, 1), chunk[:, 1:].reshape(-1), reduction="none"
            )
            .view(chunk.shape[0], -1)
            .cpu()
        )
    return torch.cat(out)


@torch.no_grad()
def task_score(model: Any, task: Any, hooks: Sequence[Any] = ()) -> float:
    """Mean of the task metric on the clean prompts under ``hooks``; ``task`` is
    ``(TaskBatch, metric_fn)``."""
    batch, metric = task
    with model.hooks(list(hooks)):
        logits = model.forward(batch.clean_tokens, attention_mask=batch.clean_mask)
    return float(metric(logits, batch).float().mean())


@dataclass(frozen=True)
class ExpertEffects:
    """Loss changes [layer expert] (and per label [layer expert label]) from each intervention."""

    base_loss: float
    ablate: Tensor  # [layer expert]
    reroute: Tensor  # [layer expert]
    ablate_by_label: Tensor | None  # [layer expert label]
    base_task: float | None = None
    ablate_task: Tensor | None = None  # [layer expert] change of the task metric
    reroute_task: Tensor | None = None


def _by_label(losses: Tensor, labels: Tensor, n_labels: int) -> Tensor:
    flat = labels.view(losses.shape[0], -1)[:, :-1].reshape(-1)
    sums = torch.zeros(n_labels, dtype=torch.float64).index_add_(
        0, flat, losses.reshape(-1).double()
    )
    return sums / torch.bincount(flat, minlength=n_labels).clamp_min(1)


def expert_effects(
    model: Any,
    tokens: Tensor,
    *,
    labels: Tensor | None = None,
    n_labels: int = 0,
    task: Any = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> ExpertEffects:
    """Ablate and reroute each expert of ``layers`` (default all) in turn over ``tokens``.

    ``labels`` [batch*pos] gives a label per token (input position) for the per-label losses.
    """
    layers = list(range(model.dims.n_layers)) if layers is None else list(layers)
    n_exp = model.dims.n_experts
    base = token_losses(model, tokens, batch_size=batch_size)
    base_by = _by_label(base, labels, n_labels) if labels is not None else None
    ablate = torch.zeros(len(layers), n_exp)
    reroute = torch.zeros(len(layers), n_exp)
    by_label = torch.zeros(len(layers), n_exp, n_labels) if labels is not None else None
    t_ab = torch.zeros(len(layers), n_exp) if task is not None else None
    t_re = torch.zeros(len(layers), n_exp) if task is not None else None
    base_task = task_score(model, task) if task is not None else None
    for i, layer in enumerate(layers):
        for e in range(n_exp):
            a_hooks, r_hooks = ablate_hooks({layer: [e]}), reroute_hooks({layer: [e]})
            a = token_losses(model, tokens, a_hooks, batch_size)
            ablate[i, e] = float(a.mean() - base.mean())
            reroute[i, e] = float(
                token_losses(model, tokens, r_hooks, batch_size).mean() - base.mean()
            )
            if by_label is not None and base_by is not None:
                by_label[i, e] = (_by_label(a, labels, n_labels) - base_by).float()
            if task is not None and t_ab is not None and t_re is not None and base_task is not None:
                t_ab[i, e] = task_score(model, task, a_hooks) - base_task
                t_re[i, e] = task_score(model, task, r_hooks) - base_task
    return ExpertEffects(float(base.mean()), ablate, reroute, by_label, base_task, t_ab, t_re)
