"""Duplicate-token heads (Wang et al. 2022, IOI): attend to earlier occurrences of the same token.

The target of query q is every key k < q with ``tokens[k] == tokens[q]``; on ``[bos] + x + x``
that is the same token in the first copy, for every query of the second copy.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def duplicate_mask(tokens: Tensor) -> Tensor:
    """bool [batch query_pos key_pos]: key k < q holds the same token as query q."""
    same = tokens[:, :, None] == tokens[:, None, :]
    pos = torch.arange(tokens.shape[1], device=tokens.device)
    return same & (pos[None, None, :] < pos[None, :, None])
