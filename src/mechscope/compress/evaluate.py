"""How a compressed (or otherwise edited) model is evaluated: per-prompt values and their intervals.

:func:`measure` returns one value per prompt or window for each evaluation set, so intervals and
paired differences are bootstrapped over prompts (:mod:`mechscope.stats`):

- a :class:`~mechscope.tasks.base.TaskBatch` (IOI, greater-than, ...): the logit difference of
  each prompt;
- ``"induction"`` ``[n 2L]`` (``L`` random tokens, repeated): the mean next-token loss on the
  predictable part of the second copy;
- ``"lm"`` ``[window pos]`` (held-out text): the mean next-token loss of each window; with the
  unedited model's ``reference`` logits on the same windows (:func:`reference_logits`) also
  ``"kl"``, the mean KL(reference || edited) per window, and ``"agreement"``, the share of
  positions whose top-1 token is the reference's.

The edit is either done to the weights (quantization) or given as ``hooks`` (expert pruning and
merging in :mod:`mechscope.moe.prune`). ``bench_compress.py`` and ``mechscope moe --prune`` both
use these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.stats import bootstrap_ci
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import logit_diff

__all__ = ["eval_sets", "measure", "paired", "reference_logits", "summarise"]

LM_CHUNK = 8  # windows per forward


def eval_sets(
    model: Any, tasks: Sequence[str], n: int, lm_tokens: int, seed: int = 1, seq_len: int = 128
) -> dict[str, Any]:
    """Prompts of each task (``seed``; ``"induction"``: 20 random tokens repeated) and, unless
    ``lm_tokens`` is 0, that many tokens of the built-in corpus's test split in windows of
    ``seq_len``."""
    from mechscope.compress.api import CompressConfig, calibration
    from mechscope.tasks import load_task

    sets: dict[str, Any] = {}
    for name in tasks:
        if name == "induction":
            ind = load_task("induction", model, n=n, seed=seed, seq_len=20)
            sets[name] = torch.tensor([[*c, a] for c, a in zip(ind.clean, ind.answer)])
        else:
            sets[name] = load_task(name, model, n=n, seed=seed).tokenize(model)
    if lm_tokens:
        cfg = CompressConfig(bits=16, method="awq", seq_len=seq_len, calib_tokens=lm_tokens)
        sets["lm"] = torch.cat(calibration(model, cfg, split="test"))
    return sets


@torch.no_grad()
def reference_logits(model: Any, windows: Tensor) -> Tensor:
    """The model's logits on ``windows`` [window pos] as they are now (before an edit)."""
    return torch.cat([model.forward(c).float() for c in windows.split(LM_CHUNK)])


def _lm(model: Any, windows: Tensor, reference: Tensor | None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"lm": []}
    if reference is not None:
        out.update(kl=[], agreement=[])
    for i, chunk in enumerate(windows.split(LM_CHUNK)):
        logits = model.forward(chunk).float()
        ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), chunk[:, 1:], reduction="none")
        out["lm"] += ce.mean(1).tolist()
        if reference is not None:
            ref = reference[i * LM_CHUNK : i * LM_CHUNK + chunk.shape[0]]
            logp, logq = ref.log_softmax(-1), logits.log_softmax(-1)
            out["kl"] += (logp.exp() * (logp - logq)).sum(-1).mean(1).tolist()
            same = logits.argmax(-1) == ref.argmax(-1)
            out["agreement"] += same.float().mean(1).tolist()
    return out


@torch.no_grad()
def measure(
    model: Any,
    sets: Mapping[str, Any],
    hooks: Sequence[Any] = (),
    reference: Tensor | None = None,
) -> dict[str, list[float]]:
    """Per-prompt (per-window) values of every set (see the module docstring) under ``hooks``."""
    out: dict[str, list[float]] = {}
    with model.hooks(list(hooks)):
        for name, s in sets.items():
            if isinstance(s, TaskBatch):
                logits = model.forward(s.clean_tokens, s.clean_mask)
                out[name] = logit_diff(logits, s).tolist()
            elif name == "induction":  # [n 2L]: loss on positions L+1..2L-1 (the second copy)
                half = s.shape[1] // 2
                logits = model.forward(s)[:, half:-1].float()
                ce = F.cross_entropy(logits.transpose(1, 2), s[:, half + 1 :], reduction="none")
                out[name] = ce.mean(1).tolist()
            elif name == "lm":
                out.update(_lm(model, s, reference))
    return out


def summarise(values: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Mean and 95% bootstrap interval (over prompts) of ``values``."""
    low, high = bootstrap_ci(np.asarray(values, dtype=float), seed=seed)
    return {"mean": float(np.mean(values)), "low": low, "high": high}


def paired(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Mean and 95% bootstrap interval of the per-prompt difference ``a - b``."""
    return summarise(list(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)), seed)
