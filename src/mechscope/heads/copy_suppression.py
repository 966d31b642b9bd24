"""Copy suppression (McDougall et al. 2023, "Copy Suppression: Comprehensively Understanding an
Attention Head"): heads whose OV circuit pushes *down* the logit of the token they attend to.

The paper reads GPT-2 small's head L10H7 through its OV circuit ``W_U^T W_OV^T W_E``: for 84.7%
of source tokens s, the s-logit is among the 10 most suppressed of the whole vocabulary when the
head attends to s. We compute the same statistic for every head, from the weights:

1. Draw a token subset T (``n_tokens`` ids, default 1000, from the tokenizer's word tokens, or
   pass ``tokens``); E_T is their normalised embedding, U_T the unembedding columns of T.
2. For head (l, h): ``D = E_T (diag(gamma_l) W_V) W_O U_T`` [source target] is the logit change on
   each target token of T when the head attends fully to a source token (the layer's input norm
   weight gamma_l folded in; biases and the norms' data-dependent scale left out).
3. The score is the fraction of source tokens s whose own entry ``D[s, s]`` is among the ``k``
   lowest of row ``D[s, :]`` (default k = 10 of 1000 targets, i.e. the lowest 1%, where the
   paper's 10 of 50257 is 0.02%). A head that does not rank tokens scores about ``k / n_tokens``
   by chance; a pure copying head scores 0.

The paper uses an "effective embedding" (W_E followed by MLP0) for GPT-2; we use the token
embedding itself so that the score stays weight-only and family-independent.
"""

from __future__ import annotations

import torch

from mechscope.errors import MechscopeError
from mechscope.heads.tokens import token_pool
from mechscope.heads.weights import all_head_weights, normalized_embedding, unembedding
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor


def suppression_tokens(model: HookedModel, n_tokens: int = 1000, seed: int = 0) -> Tensor:
    """``n_tokens`` distinct ids drawn at random from the model's word tokens (sorted)."""
    pool = torch.tensor(sorted(set(token_pool(model, n_tokens))))
    if n_tokens < 2:
        raise MechscopeError(f"copy suppression needs n_tokens >= 2, got {n_tokens}")
    gen = torch.Generator().manual_seed(seed)
    return pool[torch.randperm(len(pool), generator=gen)[:n_tokens]].sort().values


def self_rank_fraction(d: Tensor, k: int, lowest: bool = True) -> Tensor:
    """d: [.. source target] square. Fraction of sources whose own entry is in the k lowest."""
    diag = d.diagonal(dim1=-2, dim2=-1)[..., None]  # [.. source 1]
    beaten = (d < diag).sum(-1) if lowest else (d > diag).sum(-1)  # entries strictly below
    return (beaten < k).float().mean(-1)


def copy_suppression_scores(
    model: HookedModel,
    tokens: Tensor | None = None,
    *,
    n_tokens: int = 1000,
    k: int = 10,
    seed: int = 0,
) -> Tensor:
    """[layer head]: fraction of source tokens whose own logit a head suppresses into the k lowest."""
    if tokens is None:
        tokens = suppression_tokens(model, n_tokens, seed)
    if k < 1 or k >= len(tokens):
        raise MechscopeError(f"k must lie in [1, {len(tokens)}), got {k}")
    with torch.no_grad():
        e = normalized_embedding(model, tokens)  # [T d_model]
        u = unembedding(model, tokens)  # [d_model T]
        rows = []
        for w in all_head_weights(model):
            a = torch.einsum("td,hde->hte", e, w.W_V)  # [head T d_head]
            b = w.W_O @ u  # [head d_head T]
            rows.append(self_rank_fraction(a @ b, k))
    return torch.stack(rows)
