"""Previous-token heads: every query q >= 1 attends to key q - 1 (Elhage et al. 2021)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def previous_mask(tokens: Tensor) -> Tensor:
    """bool [batch query_pos key_pos]: key = query - 1."""
    b, n = tokens.shape
    eye = torch.eye(n, dtype=torch.bool, device=tokens.device)
    mask = torch.zeros(n, n, dtype=torch.bool, device=tokens.device)
    mask[1:, :-1] = eye[1:, 1:]
    return mask.expand(b, n, n)
