"""First-token / attention-sink heads: queries park their attention on position 0.

Xiao et al. 2023 ("Efficient Streaming Language Models with Attention Sinks") show that many
heads put most of their attention on the first token whatever it is. The target of every query
q >= 1 is key 0 (query 0 can only attend to itself and is left out).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def sink_mask(tokens: Tensor) -> Tensor:
    """bool [batch query_pos key_pos]: key 0, for queries 1 .."""
    b, n = tokens.shape
    mask = torch.zeros(n, n, dtype=torch.bool, device=tokens.device)
    mask[1:, 0] = True
    return mask.expand(b, n, n)
