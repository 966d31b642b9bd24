"""The ``attention`` kind: how every head spreads its attention over an input, as one profile.

At each token the vector is every head's attention weight on the token itself (the diagonal of
``blocks.L.attn.hook_pattern``; ``n_layers x n_heads`` numbers, layer-major: entry ``L n_heads +
h`` is head ``h`` of layer ``L``). An input's profile is the mean of that vector over its tokens
(positions >= 1), and its score is the squared Mahalanobis distance of the profile from the
trusted windows' profiles (one per window; mean and Ledoit-Wolf-shrunk covariance, streamed).
It reads the document as a whole, unlike the per-token kinds: text whose words are shuffled has
ordinary tokens but makes the heads that follow syntax look elsewhere, and that shows in the
profile (docs/anomaly.md, "Attention profiles").

Token scores split the input score exactly: token ``i``'s score is ``(x_i - m)^T P (xbar - m)``,
and their mean over the input's tokens is the input score (``x_i`` the token's vector, ``xbar``
their mean, ``m`` and ``P`` the fitted mean and precision). The features of a flag are heads,
by their term ``(xbar - m)_j (P (xbar - m))_j`` of the score.

The profile depends on the input's length (a head's weight on the token itself falls as there
are more tokens to attend to), so an input's profile is read over its first ``seq_len``
positions only, the length of the fitted windows. Attention is causal, so those positions' weights
are exactly what the input cut to that length gives: inputs longer than the windows are scored
like the windows, in the same pass as kinds that read the whole input. Positions past the window
are not in the profile; their token score is the input's score, so that the mean over all tokens
still equals it. Inputs shorter than the windows have fewer tokens to attend to and higher
diagonal weights: fit on windows no longer than the inputs to score (``--seq-len``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "diagonal",
    "document_terms",
    "pattern_sites",
    "profiles",
    "token_terms",
    "window",
    "window_update",
]


def pattern_sites(n_layers: int) -> list[str]:
    return [f"blocks.{L}.attn.hook_pattern" for L in range(n_layers)]


def diagonal(pattern: Tensor) -> Tensor:
    """[batch pos heads] of a pattern [batch heads query key]: each query's weight on itself."""
    return pattern.diagonal(dim1=-2, dim2=-1).transpose(1, 2)


def profiles(x: Tensor, valid: Tensor) -> Tensor:
    """Mean [batch d] of ``x`` [batch pos d] over the valid positions of each row."""
    w = valid.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp(min=1)


def window(valid: Tensor, length: int) -> Tensor:
    """The valid positions [batch pos] that are in the profile: those before ``length``."""
    return valid & (torch.arange(valid.shape[-1]) < length)


def token_terms(t: dict[str, Tensor], x: Tensor, valid: Tensor, length: int) -> Tensor:
    """Token scores [batch pos] whose mean over the valid positions is each row's score: the
    profile's positions (before ``length``) by their term, later ones the row's score."""
    x, inside = x.float(), window(valid, length)
    centred = profiles(x, inside) - t["mean"]
    direction = centred @ t["precision"]  # P (xbar - m)
    out = ((x - t["mean"]) * direction[:, None]).sum(-1)
    score = (centred * direction).sum(-1)
    out = torch.where(inside, out, score[:, None])
    return out.masked_fill(~valid, 0.0)


def document_terms(t: dict[str, Tensor], x: Tensor, valid: Tensor, length: int) -> Tensor:
    """Per-head terms [batch d] of each row's score (they sum to it)."""
    centred = profiles(x.float(), window(valid, length)) - t["mean"]
    return centred * (centred @ t["precision"])


def window_update(stats: Any, x: Tensor, valid: Tensor) -> None:
    """Add each window's profile (one row per window) to the streamed statistics."""
    stats.update(profiles(x.float(), valid))
