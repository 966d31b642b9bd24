"""Copying scores from the weights: eigenvalues of the OV and QK circuits (Elhage et al. 2021).

"A Mathematical Framework for Transformer Circuits" reads a head's full OV circuit
``M_OV = E W_V W_O U`` [token token] (row: the token attended to; column: the logit it moves)
and its QK circuit ``M_QK = E W_Q W_K^T E^T`` [query token, key token]. A matrix with mostly
positive eigenvalues maps tokens to themselves: an OV circuit that *copies* the attended token
to the output, a QK circuit that attends to the *same* token. The summary statistic is

    copying score = sum_i lambda_i / sum_i |lambda_i|   (in [-1, 1]; real parts in the numerator)

Both matrices are [d_vocab d_vocab] but have rank d_head, and the non-zero eigenvalues of
``A B`` equal those of ``B A``: so we take the eigenvalues of the d_head x d_head matrices
``W_O (U E) W_V`` and ``W_K^T (E^T E) W_Q`` exactly, over the whole vocabulary (no token subset
needed; pass ``tokens`` to restrict E and U to a subset). E is the normalised token embedding and
U the unembedding (see :mod:`mechscope.heads.weights`); rotary embeddings are not in the QK
weights, so the QK score is the positional-free part of the circuit.
"""

from __future__ import annotations

import torch

from mechscope.errors import MechscopeError
from mechscope.heads.weights import all_head_weights, normalized_embedding, unembedding
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor


def eigen_score(small: Tensor) -> Tensor:
    """sum(lambda) / sum(|lambda|) of each matrix in a batch [.. n n] -> [..]."""
    lam = torch.linalg.eigvals(small.double())
    return (lam.real.sum(-1) / lam.abs().sum(-1).clamp(min=1e-30)).float()


def ov_copying_scores(model: HookedModel, tokens: Tensor | None = None) -> Tensor:
    """[layer head]: eigenvalue copying score of each head's full OV circuit E W_V W_O U."""
    with torch.no_grad():
        e = normalized_embedding(model, tokens)  # [token d_model]
        u = unembedding(model, tokens)  # [d_model token]
        g = u @ e  # [d_model d_model]: sum over tokens of u_t e_t^T
        rows = [eigen_score(w.W_O @ g @ w.W_V) for w in all_head_weights(model)]
    return torch.stack(rows)


def qk_copying_scores(model: HookedModel, tokens: Tensor | None = None) -> Tensor:
    """[layer head]: eigenvalue score of each head's token-token QK circuit E W_Q W_K^T E^T."""
    weights = all_head_weights(model)
    if any(w.qk_norm for w in weights):
        raise MechscopeError(
            "this model normalises q and k per head, so the QK circuit is not in the weights; "
            "use the pattern-based detectors (duplicate_token) instead"
        )
    with torch.no_grad():
        e = normalized_embedding(model, tokens)
        gram = e.T @ e  # [d_model d_model]
        rows = [eigen_score(w.W_K.transpose(1, 2) @ gram @ w.W_Q) for w in weights]
    return torch.stack(rows)
