"""Calibration statistics of the quantized weights: their inputs and the LM loss's gradients.

- :func:`input_stats`: per weight, the mean squared input of every column ``E[x_j^2]`` (the
  AWQ-style activation saliency: a group's output error is about ``sum_j E[x_j^2] dw_j^2``) and,
  on request, the GPTQ Hessian ``H = 2 X^T X / n`` of its inputs ``X [tokens, in]``. Weights that
  read the same tensor (q/k/v, gate/up) share one statistic.
- :func:`loss_grads`: per weight, the squared gradient of the LM loss summed over calibration
  batches (empirical Fisher, per batch) and the mean gradient (for Taylor importance).
- :func:`task_fisher`: per weight, the squared gradient of a task metric summed over prompts;
  :func:`repeated_fisher` the same for the induction loss of each repeated-token sequence.

Inputs are read with forward pre-hooks on the ``nn.Linear`` modules, removed on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from mechscope.compress.evaluate import Repeated
from mechscope.compress.groups import Layout, WeightInfo
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric

Tensor = torch.Tensor
SHARED = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "gate": "mlp_in", "up": "mlp_in"}


def stat_key(info: WeightInfo) -> str:
    """Weights reading the same input share this key."""
    shared = SHARED.get(info.kind)
    return f"{info.layer}.{shared}" if shared else info.name


def _module(model: HookedModel, info: WeightInfo) -> nn.Module:
    return model.hf.get_submodule(info.name.removesuffix(".weight"))


@contextmanager
def _input_hooks(model: HookedModel, layout: Layout, fn) -> Iterator[None]:  # type: ignore[no-untyped-def]
    seen: set[str] = set()
    handles = []
    try:
        for info in layout.weights:
            key = stat_key(info)
            if key in seen:
                continue
            seen.add(key)
            hook = (lambda k: lambda mod, args: fn(k, args[0]))(key)
            handles.append(_module(model, info).register_forward_pre_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def input_stats(
    model: HookedModel,
    layout: Layout,
    batches: Iterable[Tensor],
    *,
    hessian: bool = False,
    quiet: bool = True,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(``E[x^2]`` [in] per key, ``H`` [in in] per key or empty) over calibration ``batches``."""
    sq: dict[str, Tensor] = {}
    hess: dict[str, Tensor] = {}
    count: dict[str, int] = {}

    def add(key: str, x: Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        count[key] = count.get(key, 0) + x.shape[0]
        sq[key] = sq.get(key, 0) + x.square().sum(0)
        if hessian:
            hess[key] = hess.get(key, 0) + x.T @ x

    with _input_hooks(model, layout, add):
        for tokens in progress(batches, desc="calibration", quiet=quiet):
            model.forward(tokens)
    sq = {k: (v / count[k]).float() for k, v in sq.items()}
    hess = {k: (2 * v / count[k]).float() for k, v in hess.items()}
    return sq, hess


def lm_loss(model: HookedModel, tokens: Tensor) -> Tensor:
    """Mean next-token cross-entropy of ``tokens [batch pos]``."""
    logits = model.forward(tokens)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


def loss_grads(
    model: HookedModel, layout: Layout, batches: Iterable[Tensor], *, quiet: bool = True
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(sum over batches of grad^2, mean grad) of the LM loss for every quantized weight.

    Each weight's gradient is folded into the sums as soon as backward has it and then dropped
    (a post-accumulate-grad hook), so at most one weight's gradient is alive at a time, not a
    second weight-sized copy of the model (``autograd.grad`` over all of them at once)."""
    params = {w.name: model.hf.get_parameter(w.name) for w in layout.weights}
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    mean = {k: torch.zeros_like(p) for k, p in params.items()}
    saved = {k: p.grad for k, p in params.items()}

    def fold(k: str) -> Callable[[Tensor], None]:
        def hook(p: Tensor) -> None:
            fisher[k].addcmul_(p.grad, p.grad)
            mean[k].add_(p.grad)
            p.grad = None

        return hook

    for p in params.values():
        p.grad = None
    handles = [p.register_post_accumulate_grad_hook(fold(k)) for k, p in params.items()]
    n = 0
    try:
        with torch.enable_grad():
            for tokens in progress(batches, desc="gradients", quiet=quiet):
                lm_loss(model, tokens).backward(inputs=list(params.values()))
                n += 1
    finally:
        for h in handles:
            h.remove()
        for k, p in params.items():
            p.grad = saved[k]
    return fisher, {k: v / max(n, 1) for k, v in mean.items()}


def _squared_grads(
    model: HookedModel, layout: Layout, values: list[Callable[[], Tensor]], desc: str, quiet: bool
) -> dict[str, Tensor]:
    """``sum_p (d value_p / dW)^2`` per weight, one backward per value."""
    params = {w.name: model.hf.get_parameter(w.name) for w in layout.weights}
    out = {k: torch.zeros_like(p) for k, p in params.items()}
    with torch.enable_grad():
        for value in progress(values, desc=desc, quiet=quiet):
            for k, g in zip(params, torch.autograd.grad(value(), list(params.values()))):
                out[k] += g.square()
    return out


def task_fisher(
    model: HookedModel, layout: Layout, batch: TaskBatch, metric: Metric, *, quiet: bool = True
) -> dict[str, Tensor]:
    """Per weight, ``sum_p (d metric_p / dW)^2`` over the batch's clean prompts, one backward
    per prompt: the diagonal second-order estimate of how much noise in a weight moves the task
    metric."""
    tensors = {k: v for k, v in vars(batch).items() if isinstance(v, Tensor)}

    def value(i: int) -> Callable[[], Tensor]:
        one = replace(batch, **{k: v[i : i + 1] for k, v in tensors.items()})
        one = replace(one, answer_sets=None, wrong_sets=None)
        return lambda: metric(model.forward(one.clean_tokens, one.clean_mask), one).sum()

    values = [value(i) for i in range(len(batch))]
    return _squared_grads(model, layout, values, "task gradients", quiet)


def repeated_fisher(
    model: HookedModel, layout: Layout, rep: Repeated, *, quiet: bool = True
) -> dict[str, Tensor]:
    """Per weight, ``sum_s (d loss_s / dW)^2`` over the sequences of ``rep``, ``loss_s`` the
    induction loss of sequence ``s`` (:meth:`Repeated.losses`): the induction term of
    ``importance="gradient"``, measured in the unit it is evaluated in."""

    def value(i: int) -> Callable[[], Tensor]:
        one = Repeated(rep.tokens[i : i + 1], rep.start)
        return lambda: one.losses(model.forward(one.tokens)).sum()

    values = [value(i) for i in range(len(rep.tokens))]
    return _squared_grads(model, layout, values, "induction gradients", quiet)
