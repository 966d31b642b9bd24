"""``patch``: one activation-patching sweep between the clean and corrupted prompts of a batch.

Denoising runs the corrupted input and patches in clean activations; noising runs the clean
input and patches in corrupted ones. The sweep itself is in :mod:`mechscope.patching.sweeps`,
the batched engine in :mod:`mechscope.patching.engine`, the call form in
:mod:`mechscope.patching.pair`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.patching.pair import ReadPos, resolve
from mechscope.patching.result import Direction, PatchResult
from mechscope.patching.sweeps import SWEEPS
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric

Tensor = torch.Tensor


def patch(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric,
    sweep: str,
    *legacy: Any,
    direction: Direction = "denoise",
    chunk: int | None = None,
    layer: int | None = None,
    layers: Sequence[int] | None = None,
    read_pos: ReadPos = "last",
    attention_mask: Tensor | None = None,
) -> PatchResult:
    """Patch every slice of a site, one variant at a time, and measure ``metric`` on each run.

    Args:
        model: the model.
        batch: the task's clean and corrupted prompts (``task.tokenize(model)``), aligned token by
            token; prompt i of one is paired with prompt i of the other.
        metric: ``metric(logits [batch pos d_vocab], batch) -> [batch]`` (e.g.
            :func:`mechscope.tasks.metrics.logit_diff`); it is called on each variant's rows and
            averaged over prompts.
        sweep: a name in :data:`SWEEPS` (``resid_pre``, ``attn_head``, ``neuron``, ...).
        direction: ``"denoise"`` or ``"noise"``.
        chunk: maximal number of variants per forward (None: at most ~4096 token rows).
        layer: the layer of the ``neuron`` sweep.
        layers: the layers the other sweeps patch (default every layer). The result keeps the
            model's whole layer axis, so ``values[L, ...]`` is layer L; the layers not patched
            are NaN (and None in :meth:`PatchResult.to_dict`).
        read_pos: the one position per prompt that ``metric`` reads: ``"last"`` (default,
            ``batch.last_pos``, where every metric of :mod:`mechscope.tasks.metrics` reads), a
            [batch] tensor, or None (every position). Only those positions are unembedded; the
            metric receives NaN logits elsewhere (reading them raises an error). Same numbers,
            less work: the unembedding of every position is about a fifth of a SmolLM2 forward.

    Deprecated form: ``patch(model, clean_tokens, corrupt_tokens, metric(logits), sweep,
    attention_mask=...)`` (see :mod:`mechscope.patching.pair`).
    """
    pair, (sweep,) = resolve(
        model, batch, (metric, sweep, *legacy), ("sweep",), caller="patch", direction=direction,
        read_pos=read_pos, attention_mask=attention_mask, chunk=chunk,
    )  # fmt: skip
    if sweep not in SWEEPS:
        raise MechscopeError(f"unknown sweep {sweep!r}; choose one of {', '.join(SWEEPS)}")
    with torch.no_grad():
        axes, values, runs = SWEEPS[sweep](pair, layer, layers)
    clean, corrupt = runs.clean_corrupt()
    ends = (runs.source_metric, runs.base_metric)  # (clean, corrupted) when denoising
    prompt_clean, prompt_corrupt = ends if pair.direction == "denoise" else ends[::-1]
    return PatchResult(
        sweep, axes, values.mean(-1), clean, corrupt, pair.direction, per_prompt=values,
        prompt_clean=prompt_clean, prompt_corrupt=prompt_corrupt,
    )  # fmt: skip
