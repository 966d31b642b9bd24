"""Induction heads (Olsson et al. 2022): attend to the token *after* an earlier occurrence.

On ``[bos] + x + x`` the query at the i-th token of the second copy has one target: the key
right after the i-th token of the first copy (for the last query, the first token of the second
copy). The mask is TransformerLens's induction detection pattern: the duplicate-token mask
shifted one key to the right.
"""

from __future__ import annotations

import torch

from mechscope.heads.duplicate_token import duplicate_mask

Tensor = torch.Tensor


def induction_mask(tokens: Tensor) -> Tensor:
    """bool [batch query_pos key_pos]: k - 1 is an earlier occurrence of the query's token."""
    dup = duplicate_mask(tokens)
    shifted = torch.zeros_like(dup)
    shifted[:, :, 1:] = dup[:, :, :-1]
    pos = torch.arange(tokens.shape[1], device=tokens.device)
    return shifted & (pos[None, :, None] >= pos[None, None, :])
