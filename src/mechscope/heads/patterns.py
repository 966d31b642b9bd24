"""Score every head against a detection mask in one batched forward, reducing as it goes.

A pattern detector says, for each sequence, which (query, key) pairs a head of its kind attends
to: a boolean mask [batch query_pos key_pos]. A head's score on a sequence is the attention it
puts on those pairs, averaged over the queries that have at least one target:

    score[b, h] = sum_{q in Q_b} sum_k pattern[b, h, q, k] * mask[b, q, k] / |Q_b|

so 1 means "every such query attends only to its targets". (TransformerLens's ``detect_head``
with ``error_measure="mul"`` divides by the number of all query positions instead: its score is
ours times ``|Q_b| / pos``.)

Steps of :func:`pattern_scores`:

1. Build every detector's mask from the token ids (cheap, no model).
2. Hook ``blocks.*.attn.hook_pattern``; each hook reduces that layer's pattern [batch head q k]
   to scores [batch head] at once, so no more than one layer's pattern is alive at a time.
3. Stop the forward right after the last layer's pattern (nothing downstream is needed):
   ``model.hooks(..., stop_after=...)``.
4. Average over sequences: [layer head] per detector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor
MaskFn = Callable[[Tensor], Tensor]  # tokens [batch pos] -> bool [batch query_pos key_pos]


def masked_score(pattern: Tensor, mask: Tensor) -> Tensor:
    """Scores [batch head]: mean over queries with a target of the attention on the targets.

    pattern: [batch head query_pos key_pos]; mask: bool [batch query_pos key_pos].
    """
    m = mask.to(pattern.dtype)
    hit = torch.einsum("bhqk,bqk->bh", pattern, m)
    n_queries = mask.any(-1).sum(-1).clamp(min=1).to(pattern.dtype)  # [batch]
    return hit / n_queries[:, None]


def _reducer(built: dict[str, Tensor], totals: dict[str, Tensor]) -> Callable:
    """The pattern hook: add each layer's summed scores [head] to ``totals``."""

    def reduce(pattern: Tensor, hook: Any) -> None:
        layer = int(hook.name.split(".")[1])
        p = pattern.detach().float()
        for name, mask in built.items():
            totals[name][layer] += masked_score(p, mask.to(p.device)).sum(0).cpu()

    return reduce


def pattern_scores(
    model: HookedModel,
    tokens: Tensor,
    masks: Mapping[str, MaskFn],
    *,
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Scores [layer head] of every head for every mask builder in ``masks`` (see module doc)."""
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise MechscopeError(f"tokens must be [batch pos] with pos >= 2, got {tuple(tokens.shape)}")
    if batch_size < 1:
        raise MechscopeError(f"batch_size must be at least 1, got {batch_size}")
    n_layers = model.dims.n_layers
    totals = {name: torch.zeros(n_layers, model.dims.n_heads) for name in masks}
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size]
        built = {name: fn(chunk) for name, fn in masks.items()}
        for name, mask in built.items():
            if not mask.any(-1).any(-1).all():
                raise MechscopeError(
                    f"detector {name!r} finds no query with a target in some sequence; "
                    "use repeated sequences (mechscope.heads.repeated_tokens)"
                )

        hook = _reducer(built, totals)
        last = f"blocks.{n_layers - 1}.attn.hook_pattern"  # nothing downstream is needed
        with torch.no_grad(), model.hooks([("blocks.*.attn.hook_pattern", hook)], stop_after=last):
            model(chunk)
    return {name: t / tokens.shape[0] for name, t in totals.items()}
