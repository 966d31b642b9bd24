"""Attention through transformers' own attention-function registry.

mechscope registers one attention function, ``"mechscope"``, and switches the wrapped model to it.
With no hook on ``attn.hook_attn_scores`` / ``attn.hook_pattern`` for a layer it hands the call to
transformers' SDPA function unchanged (logits stay bit-identical to the bare model). When such a
hook is active, or the model asked for eager attention, it computes the same attention eagerly so
that scores and pattern exist as tensors that hooks can read and replace:

    scores  = q k^T * scaling, soft-capped if the layer asks (Gemma 2: cap * tanh(s / cap)),
              masked with -inf                         [batch head query_pos key_pos]
    pattern = softmax(scores) (rows that see nothing -> 0); with attention sinks (GPT-OSS) the
              softmax also covers one learned logit per head, dropped afterwards
    z       = pattern v

A layer that soft-caps or has sinks is always computed eagerly (SDPA supports neither), in the
same operations as transformers' own eager functions, so logits stay bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "mechscope"
HOOKS_ATTR = "_mechscope_attn_hooks"  # {"scores": [calls], "pattern": [calls]} while hooked
EAGER_ATTR = "_mechscope_eager"


def _mask_scores(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    q_len, k_len = scores.shape[-2:]
    if mask is None:
        q = torch.arange(q_len, device=scores.device)[:, None] + (k_len - q_len)
        mask = q >= torch.arange(k_len, device=scores.device)[None, :]
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


def _run(calls: list[Any], t: torch.Tensor) -> torch.Tensor:
    for c in calls:
        t, _ = c.run(t)
    return t


def eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with hook calls on scores and pattern. q: [batch head query_pos d_head]."""
    hooks = getattr(module, HOOKS_ATTR, None) or {}
    n_rep = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(n_rep, dim=1)
    value = value.repeat_interleave(n_rep, dim=1)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = _run(hooks.get("scores", []), _mask_scores(scores, attention_mask))
    if sinks is None:
        pattern = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), -1)
    else:
        pattern = _softmax_with_sinks(scores, sinks)
    pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
    pattern = _run(hooks.get("pattern", []), pattern.to(query.dtype))
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


def _softmax_with_sinks(scores: torch.Tensor, sinks: torch.Tensor) -> torch.Tensor:
    """GPT-OSS: softmax over [scores | sink] with the row max subtracted, sink column dropped."""
    b, h, q, _ = scores.shape
    combined = torch.cat([scores, sinks.reshape(1, -1, 1, 1).expand(b, h, q, 1)], dim=-1)
    combined = combined - combined.max(dim=-1, keepdim=True).values
    return torch.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1]


def mechscope_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    hooks = getattr(module, HOOKS_ATTR, None)
    softcap, sinks = kwargs.get("softcap"), kwargs.get("s_aux")
    eager = getattr(module, EAGER_ATTR, False) or (hooks and any(hooks.values()))
    if eager or softcap is not None or sinks is not None:
        return eager_attention(module, query, key, value, attention_mask, scaling, softcap, sinks)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )


def register() -> None:
    """Register the attention function and its mask format (SDPA's) with transformers."""
    AttentionInterface.register(NAME, mechscope_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
