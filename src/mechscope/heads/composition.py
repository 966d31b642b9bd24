"""Composition scores between heads (Elhage et al. 2021, "A Mathematical Framework").

For a head A in an earlier layer and a head B in a later one, with ``W_OV = W_V W_O`` and
``W_QK = W_Q W_K^T`` ([d_model d_model], row-vector convention, input norms folded in):

    Q-composition: ||W_OV^A W_QK^B||_F   / (||W_OV^A||_F ||W_QK^B||_F)  (A writes B's queries)
    K-composition: ||W_OV^A W_QK^B^T||_F / (||W_OV^A||_F ||W_QK^B||_F)  (A writes B's keys)
    V-composition: ||W_OV^A W_OV^B||_F   / (||W_OV^A||_F ||W_OV^B||_F)  (A writes B's values)

as TransformerLens's ``all_composition_scores`` computes them. The products have rank d_head, so
we never form a d_model x d_model matrix: with QR factorisations W_V^A = Q R_V^A and
W_K^B = Q' R_K^B, ``||W_V^A W_O^A W_Q^B W_K^B^T||_F = ||(R_V^A W_O^A) (W_Q^B R_K^B^T)||_F``, a
d_head x d_head product per pair (likewise for K with R_Q^B, for V with W_O^B^T = Q'' R_O^B).
Pairs with A not in an earlier layer than B are NaN. Under GQA each query head has its own
(repeated) key/value weights.
"""

from __future__ import annotations

import torch

from mechscope.errors import MechscopeError
from mechscope.heads.weights import all_head_weights
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor
KINDS = ("q", "k", "v")


def _r(w: Tensor) -> Tensor:
    """R of the QR factorisation of each [head d_model d_head] matrix: [head d_head d_head]."""
    return torch.linalg.qr(w.double(), mode="r").R


def composition_scores(model: HookedModel, kind: str = "k") -> Tensor:
    """[layer_A head_A layer_B head_B]: the ``kind`` (q/k/v) composition score of A into B."""
    if kind not in KINDS:
        raise MechscopeError(f"composition kind must be one of q, k, v, not {kind!r}")
    weights = all_head_weights(model)
    if kind != "v" and any(w.qk_norm for w in weights):
        raise MechscopeError(
            "this model normalises q and k per head, so Q/K composition is not in the weights; "
            "use kind='v'"
        )
    n_layers, n_heads = model.dims.n_layers, model.dims.n_heads
    with torch.no_grad():
        left = torch.stack([_r(w.W_V) @ w.W_O.double() for w in weights])  # [L h r d_model]
        if kind == "q":
            right = [w.W_Q.double() @ _r(w.W_K).transpose(1, 2) for w in weights]
        elif kind == "k":
            right = [w.W_K.double() @ _r(w.W_Q).transpose(1, 2) for w in weights]
        else:
            right = [w.W_V.double() @ _r(w.W_O.transpose(1, 2)).transpose(1, 2) for w in weights]
        left, right_t = left.float(), torch.stack(right).float()  # right_t: [L h d_model r]
        left_norm = left.flatten(2).norm(dim=-1)  # [L h]
        right_norm = right_t.flatten(2).norm(dim=-1)
        out = torch.full((n_layers, n_heads, n_layers, n_heads), float("nan"))
        for lb in range(1, n_layers):
            a = left[:lb].flatten(0, 1)  # [A r d_model]
            prod = torch.einsum("ard,bds->abrs", a, right_t[lb])  # [A B r r]
            norms = prod.flatten(2).norm(dim=-1)
            denom = left_norm[:lb].flatten()[:, None] * right_norm[lb][None, :]
            out[:lb, :, lb] = (norms / denom).view(lb, n_heads, n_heads)
    return out.float()
