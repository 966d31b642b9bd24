"""How a compressed (or otherwise edited) model is evaluated: per-prompt values and their intervals.

:func:`measure` returns one value per prompt or window for each evaluation set, so intervals and
paired differences are bootstrapped over prompts (:mod:`mechscope.stats`):

- a :class:`~mechscope.tasks.base.TaskBatch` (IOI, greater-than, ...): the logit difference of
  each prompt;
- ``"induction"`` (a :class:`Repeated`: BOS, ``L`` random tokens, the same ``L`` again): the mean
  next-token loss on the second copy without its first token (nothing before it predicts it), the
  definition of the issue's table (see :func:`repeated_tokens`);
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.stats import bootstrap_ci
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import logit_diff

__all__ = [
    "Repeated",
    "eval_sets",
    "measure",
    "paired",
    "reference_logits",
    "repeated_tokens",
    "summarise",
]

LM_CHUNK = 8  # windows per forward
INDUCTION_LEN = 50  # L: random tokens per copy
INDUCTION_IDS = (1000, 10000)  # token ids drawn from (uniform): frequent BPE merges


@dataclass(frozen=True)
class Repeated:
    """Repeated random tokens ``[n 1+2L]`` (BOS, ``s``, ``s``); ``start`` is the first target
    position counted (the second copy's second token)."""

    tokens: Tensor
    start: int

    def losses(self, logits: Tensor) -> Tensor:
        """[n] mean next-token loss over targets ``start..end`` given ``logits [n pos vocab]``."""
        pred = logits[:, self.start - 1 : -1].float()
        ce = F.cross_entropy(pred.transpose(1, 2), self.tokens[:, self.start :], reduction="none")
        return ce.mean(1)


def repeated_tokens(
    model: Any, n: int, seed: int, seq_len: int = INDUCTION_LEN, ids: tuple = INDUCTION_IDS
) -> Repeated:
    """``n`` sequences BOS + ``seq_len`` token ids drawn uniformly (with replacement) from
    ``range(*ids)`` (``1..d_vocab`` if the vocabulary is smaller) + the same again. The BOS matters (without it the first random token is the
    attention sink) and so does the id range: SmolLM2's BPE ids are in merge order, so 1,000 to
    10,000 are frequent tokens; rare ids (or the whole vocabulary) give twice the loss. With
    L = 50, ids 1,000-10,000 and the first token of the copy left out, the shipped model scores
    about 1.9 and uniform RTN 4.5 / 3.5 bits degrade it as in the issue's table."""
    lo, hi = ids
    if hi > model.dims.d_vocab:  # a small vocabulary (a tiny test model): any id but 0
        lo, hi = 1, model.dims.d_vocab
    gen = torch.Generator().manual_seed(seed)
    s = torch.randint(lo, hi, (n, seq_len), generator=gen)
    tok = model.tokenizer
    bos = next((b for b in (tok.bos_token_id, tok.eos_token_id) if b is not None), 0)
    tokens = torch.cat([torch.full((n, 1), int(bos)), s, s], 1)
    return Repeated(tokens, 2 + seq_len)


def eval_sets(
    model: Any, tasks: Sequence[str], n: int, lm_tokens: int, seed: int = 1, seq_len: int = 128
) -> dict[str, Any]:
    """Prompts of each task (``seed``; ``"induction"``: :func:`repeated_tokens`) and, unless
    ``lm_tokens`` is 0, that many tokens of the built-in corpus's test split in windows of
    ``seq_len``."""
    from mechscope.compress.api import CompressConfig, calibration
    from mechscope.tasks import load_task

    sets: dict[str, Any] = {}
    for name in tasks:
        if name == "induction":
            sets[name] = repeated_tokens(model, n, seed)
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
            elif isinstance(s, Repeated):
                out[name] = s.losses(model.forward(s.tokens)).tolist()
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
