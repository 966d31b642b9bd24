"""Attention patterns of one prompt, for the attention view (``mechscope attention``).

Steps: tokenize the prompt, run the model once caching ``blocks.{L}.attn.hook_pattern`` for the
chosen layers only, and stack them into ``[layer head query_pos key_pos]`` (batch of one). The
pattern is the softmax of the masked scores, so every row sums to 1 over the keys it can see;
under grouped-query attention each query head gets its own row (key/value heads are shared).

The pictures are drawn by :mod:`mechscope.viz.attention` from these arrays alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

__all__ = ["AttentionPatterns", "attention_patterns", "head_summary", "parse_layers"]


@dataclass(frozen=True, eq=False)
class AttentionPatterns:
    """Attention weights of every head of the chosen layers for one prompt."""

    str_tokens: list[str]  # [pos] the prompt's tokens as text
    patterns: np.ndarray  # [layer head query_pos key_pos] float32, rows sum to 1
    layers: tuple[int, ...]  # [layer] the model's block index of each row of ``patterns``

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (patterns as nested lists)."""
        return {
            "str_tokens": list(self.str_tokens),
            "layers": list(self.layers),
            "patterns": self.patterns.tolist(),
        }


def parse_layers(spec: str | Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """Layer indices from ``"0,1,5-7"`` (or a list of ints); None means every layer.

    Negative indices count from the end, as in Python. Duplicates are dropped, order is sorted.
    """
    if spec is None:
        return tuple(range(n_layers))
    items: list[int] = []
    parts = [p for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    for part in parts:
        if isinstance(part, str):
            part = part.strip()
            lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
            try:
                span = range(int(lo), int(hi) + 1) if sep else [int(part)]
            except ValueError:
                raise MechscopeError(
                    f"bad layer spec {spec!r}; write layers like 0,1,5-7"
                ) from None
            items.extend(span)
        else:
            items.append(int(part))
    if not items:
        raise MechscopeError(f"no layers in {spec!r}; write layers like 0,1,5-7")
    bad = [i for i in items if not -n_layers <= i < n_layers]
    if bad:
        raise MechscopeError(
            f"layer {bad[0]} is out of range: the model has {n_layers} layers (0-{n_layers - 1})"
        )
    return tuple(sorted({i % n_layers for i in items}))


def attention_patterns(
    model: HookedModel,
    prompt: str | torch.Tensor,
    layers: str | Sequence[int] | None = None,
    *,
    prepend_bos: bool = False,
) -> AttentionPatterns:
    """One forward of ``prompt`` (text, or token ids [pos] / [1 pos]); patterns of ``layers``.

    ``layers`` is None (all), a list of block indices or a spec like ``"0,1,5-7"``.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise MechscopeError("empty prompt; pass some text")
        tokens = model.to_tokens(prompt, prepend_bos=prepend_bos)
    else:
        tokens = prompt.reshape(1, -1) if prompt.ndim == 1 else prompt
        if tokens.shape[0] != 1:
            raise MechscopeError(f"one prompt at a time: got a batch of {tokens.shape[0]}")
    chosen = parse_layers(layers, model.dims.n_layers)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in chosen]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=names)
    stacked = torch.stack([cache[n][0] for n in names])  # [layer head query_pos key_pos]
    str_tokens = (
        model.to_str_tokens(tokens[0])
        if model.tokenizer is not None
        else [str(int(t)) for t in tokens[0]]
    )
    return AttentionPatterns(str_tokens, stacked.float().cpu().numpy(), chosen)


def head_summary(patterns: np.ndarray) -> dict[str, np.ndarray]:
    """Per head [layer head]: the mean weight, over queries 1.., on the first token, on the
    previous token and on itself, and the key the last query attends to most."""
    p = np.asarray(patterns, dtype=np.float64)
    n = p.shape[-1]
    if n < 2:
        raise MechscopeError("a summary of attention needs a prompt of at least 2 tokens")
    q = np.arange(1, n)
    return {
        "first_token": p[..., 1:, 0].mean(-1),
        "previous_token": p[..., q, q - 1].mean(-1),
        "self": p[..., q, q].mean(-1),
        "last_query_argmax": p[..., -1, :].argmax(-1),
    }
