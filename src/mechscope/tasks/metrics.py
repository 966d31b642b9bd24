"""Task metrics: pure, differentiable functions of logits and a :class:`TaskBatch`.

Every metric reads each prompt's logits at its ``last_pos`` and returns one value per prompt,
``[batch]``; reduce with ``.mean()``. They are plain torch (no ``.item()``, no in-place edits), so
attribution patching can backpropagate through them.

- ``logit_diff``: logit of the answer minus logit of the wrong token (Wang et al. 2022);
- ``prob`` / ``logprob``: probability and log-probability of the answer;
- ``kl``: KL(clean || run) between next-token distributions at the last position;
- ``prob_diff``: probability on the task's answer set minus its wrong set (Hanna et al. 2023);
- :func:`normalized`: rescale so the corrupted run scores 0 and the clean run 1.

``logits`` are ``[batch pos d_vocab]`` for the same prompts as the batch; score the corrupted
run of a batch whose pairs differ in length with ``metric(logits, batch.flipped())``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import torch

from mechscope.errors import MechscopeError
from mechscope.tasks.base import TaskBatch

Tensor = torch.Tensor
V = TypeVar("V", float, Tensor)


class Metric(Protocol):
    """``metric(logits [batch pos d_vocab], batch) -> [batch]``, one value per prompt.

    The one metric type of every analysis of paired prompts: activation, path and attribution
    patching, ablation effects and circuits all take ``(model, batch, metric)``.
    """

    def __call__(self, logits: Tensor, batch: TaskBatch) -> Tensor: ...


def last_logits(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Each prompt's logits at its last real token: ``[batch d_vocab]``, in float32."""
    if logits.ndim != 3 or logits.shape[0] != len(batch):
        raise MechscopeError(
            f"logits must be [batch pos d_vocab] with batch={len(batch)}, got "
            f"{tuple(logits.shape)}; run the model on this batch's tokens"
        )
    need = int(batch.last_pos.max()) + 1
    if logits.shape[1] < need:
        raise MechscopeError(
            f"logits have {logits.shape[1]} positions but the batch's prompts reach {need}; "
            "run the model on this batch's tokens"
        )
    rows = torch.arange(len(batch), device=logits.device)
    return logits[rows, batch.last_pos.to(logits.device)].float()


def _pick(values: Tensor, ids: Tensor) -> Tensor:
    return values.gather(-1, ids.to(values.device)[:, None])[:, 0]


def logit_diff(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Answer logit minus wrong logit at the last position, ``[batch]``."""
    last = last_logits(logits, batch)
    return _pick(last, batch.answer_ids) - _pick(last, batch.wrong_ids)


def answer_logprob(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Log-probability of the answer at the last position, ``[batch]``."""
    return _pick(last_logits(logits, batch).log_softmax(-1), batch.answer_ids)


def answer_prob(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Probability of the answer at the last position, ``[batch]``."""
    return answer_logprob(logits, batch).exp()


def kl_to_clean(logits: Tensor, clean_logits: Tensor, batch: TaskBatch) -> Tensor:
    """KL(clean || run) of the next-token distributions at the last position, ``[batch]``.

    Zero when the run reproduces the clean run; the clean logits are treated as a constant.
    """
    if clean_logits.shape != logits.shape:
        raise MechscopeError(
            f"clean logits {tuple(clean_logits.shape)} and logits {tuple(logits.shape)} differ "
            "in shape; run both on the same batch"
        )
    p_log = last_logits(clean_logits.detach(), batch).log_softmax(-1)
    q_log = last_logits(logits, batch).log_softmax(-1)
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def prob_diff(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Total probability on each prompt's answer set minus its wrong set, ``[batch]``."""
    if batch.answer_sets is None or batch.wrong_sets is None:
        raise MechscopeError(
            f"task {batch.name!r} has no answer_set/wrong_set, so prob_diff is undefined; "
            "use logit_diff or a task that defines them (greater_than)"
        )
    probs = last_logits(logits, batch).softmax(-1)
    sign = torch.zeros_like(probs)
    for i, (good, bad) in enumerate(zip(batch.answer_sets, batch.wrong_sets)):
        sign[i, list(good)] = 1.0
        sign[i, list(bad)] = -1.0
    return (probs * sign).sum(-1)


def normalized(value: V, clean_value: V, corrupt_value: V, eps: float = 1e-6) -> V:
    """``(value - corrupt) / (clean - corrupt)``: 0 at the corrupted run, 1 at the clean run.

    Works on floats or tensors (scalars, or ``[batch]`` for per-prompt normalisation); fails if
    the clean and corrupted values (nearly) coincide, where the ratio means nothing.
    """
    denom = clean_value - corrupt_value
    small = torch.as_tensor(denom).detach().abs() < eps
    if bool(small.any()):
        where = "" if small.ndim == 0 else f" for prompt {int(small.nonzero()[0, 0])}"
        raise MechscopeError(
            f"clean and corrupted metric values are equal{where} (difference below {eps}), so "
            "the normalised metric is undefined; use a task or metric that separates them"
        )
    return (value - corrupt_value) / denom


METRICS: dict[str, Callable[..., Tensor]] = {
    "logit_diff": logit_diff,
    "prob": answer_prob,
    "logprob": answer_logprob,
    "kl": kl_to_clean,
    "prob_diff": prob_diff,
}
"""Every metric by name; all but ``kl`` are :class:`Metric`s (``get_metric`` binds ``kl``)."""


def get_metric(name: str, clean_logits: Tensor | None = None) -> Metric:
    """The metric ``name`` as ``metric(logits, batch) -> [batch]``.

    ``"kl"`` compares against a clean run, so it needs ``clean_logits``.
    """
    if name not in METRICS:
        raise MechscopeError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    if name != "kl":
        if clean_logits is not None:
            raise MechscopeError(f"metric {name!r} takes no clean_logits; only 'kl' does")
        return METRICS[name]
    if clean_logits is None:
        raise MechscopeError("metric 'kl' needs clean_logits (the clean run's logits); pass them")
    reference = clean_logits.detach()

    def kl(logits: Tensor, batch: TaskBatch) -> Tensor:
        return kl_to_clean(logits, reference, batch)

    return kl
