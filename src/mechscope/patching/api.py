"""``patch``: one activation-patching sweep between a clean and a corrupted batch of prompts.

Denoising runs the corrupted input and patches in clean activations; noising runs the clean
input and patches in corrupted ones. The sweep itself is in :mod:`mechscope.patching.sweeps`,
the batched engine in :mod:`mechscope.patching.engine`.
"""

from __future__ import annotations

import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.patching.engine import Metric, Request
from mechscope.patching.result import Direction, PatchResult
from mechscope.patching.sweeps import SWEEPS

Tensor = torch.Tensor


def _check_tokens(clean: Tensor, corrupt: Tensor, attention_mask: Tensor | None) -> None:
    if clean.ndim != 2 or corrupt.ndim != 2:
        raise MechscopeError(
            f"tokens must be [batch pos], got {tuple(clean.shape)} and {tuple(corrupt.shape)}"
        )
    if clean.shape != corrupt.shape:
        raise MechscopeError(
            "clean and corrupted prompts have different token lengths "
            f"({tuple(clean.shape)} vs {tuple(corrupt.shape)}); patching needs aligned positions, "
            "so choose prompt pairs with the same number of tokens"
        )
    if attention_mask is not None and attention_mask.shape != clean.shape:
        raise MechscopeError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, tokens have "
            f"{tuple(clean.shape)}"
        )


def patch(
    model: HookedModel,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    metric: Metric,
    sweep: str,
    *,
    direction: Direction = "denoise",
    attention_mask: Tensor | None = None,
    chunk: int | None = None,
    layer: int | None = None,
    read_pos: Tensor | None = None,
) -> PatchResult:
    """Patch every slice of a site, one variant at a time, and measure ``metric`` on each run.

    Args:
        model: the model.
        clean_tokens, corrupt_tokens: token ids [batch pos] of the same shape, prompt i of one
            paired with prompt i of the other.
        metric: per-prompt metric of the final logits, ``logits [batch pos d_vocab] -> [batch]``
            (e.g. a logit difference at the last position); it is called on each variant's
            ``batch`` rows and averaged over prompts.
        sweep: a name in :data:`SWEEPS` (``resid_pre``, ``attn_head``, ``neuron``, ...).
        direction: ``"denoise"`` or ``"noise"``.
        attention_mask: [batch pos], shared by both inputs (1 = real token).
        chunk: maximal number of variants per forward (None: at most ~4096 token rows).
        layer: the layer of the ``neuron`` sweep; the other sweeps cover every layer.
        read_pos: [batch] the one position per prompt that ``metric`` reads (e.g. the last
            token, ``TaskBatch.last_pos``). Only those positions are unembedded; the metric
            receives NaN logits elsewhere (reading them raises an error). Same numbers, less
            work: the unembedding of every position is about a fifth of a SmolLM2 forward.
    """
    if sweep not in SWEEPS:
        raise MechscopeError(f"unknown sweep {sweep!r}; choose one of {', '.join(SWEEPS)}")
    if direction not in ("denoise", "noise"):
        raise MechscopeError(f"direction must be 'denoise' or 'noise', not {direction!r}")
    _check_tokens(clean_tokens, corrupt_tokens, attention_mask)
    base, source = (corrupt_tokens, clean_tokens)
    if direction == "noise":
        base, source = source, base
    req = Request(model, base, source, metric, attention_mask, chunk, read_pos)
    with torch.no_grad():
        axes, values, runs = SWEEPS[sweep](req, layer)
    clean, corrupt = runs.source_metric, runs.base_metric
    if direction == "noise":
        clean, corrupt = corrupt, clean
    return PatchResult(
        sweep=sweep,
        axes=axes,
        values=values.mean(-1),
        clean=float(clean.mean()),
        corrupt=float(corrupt.mean()),
        direction=direction,
    )
