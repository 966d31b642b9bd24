"""Layer-by-layer representational similarity, streamed: debiased linear CKA and Procrustes.

Both scores are functions of a handful of sums over tokens, so they are accumulated batch by batch
and memory does not grow with the number of tokens ``N`` (it is ``O(La * Lb * d_a * d_b)``).

Debiased linear CKA (Kornblith et al. 2019 with the unbiased HSIC estimator of Song et al. 2012,
as in Nguyen et al. 2021): with ``K = X X^T``, ``L = Y Y^T`` (``[N N]``), ``K~``, ``L~`` their
copies with a zero diagonal, and ``a_i = |x_i|^2``, ``b_i = |y_i|^2``, ``s_x = sum_i x_i``::

    HSIC_u(K, L) = [tr(K~ L~) + (1'K~1)(1'L~1) / ((N-1)(N-2)) - 2/(N-2) 1'K~L~1] / (N(N-3))
    tr(K~ L~)  = |X'Y|_F^2 - sum_i a_i b_i
    1'K~1      = |s_x|^2 - sum_i a_i
    1'K~L~1    = s_x' (X'Y) s_y - (sum_i a_i y_i)' s_y - (sum_i b_i x_i)' s_x + sum_i a_i b_i
    CKA        = HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))

so the sums ``X'Y``, ``X'X``, ``s_x``, ``sum a``, ``sum a^2``, ``sum a x``, ``sum a y``,
``sum a b`` suffice. Orthogonal Procrustes similarity (Ding et al. 2021): with centred,
Frobenius-normalised ``X``, ``Y``, the best orthogonal fit leaves ``2 - 2 |X'Y|_*``; the score is
the nuclear norm ``|Xc'Yc|_* / (|Xc|_F |Yc|_F)`` in [0, 1] (1: equal up to rotation and scale),
also from the same sums. Widths may differ (the map is then semi-orthogonal).

Each layer's activations are shifted by the mean of the first batch before summing (both scores
are invariant to a shift), each batch's products are float32 and the running sums float64, so
the large common offset of a residual stream does not cancel away the digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = ["Similarity", "SimilarityStats", "cka_direct", "procrustes_direct"]


@dataclass
class _Side:
    """Per-layer sums of one model: ``x`` is ``[n L d]``."""

    shift: Tensor  # [L d]
    gram: Tensor  # [L d d]  sum x x'
    s: Tensor  # [L d]  sum x
    a: Tensor  # [L]  sum |x|^2
    a2: Tensor  # [L]  sum |x|^4
    ax: Tensor  # [L d]  sum |x|^2 x

    @classmethod
    def new(cls, x: Tensor) -> _Side:
        n_layers, d = x.shape[1:]
        z = torch.zeros
        shift = x.double().mean(0)
        return cls(shift, z(n_layers, d, d).double(), z(n_layers, d).double(), *_zeros(n_layers, d))

    def add(self, x: Tensor) -> Tensor:
        """Add a batch; returns the shifted float64 batch and its squared norms ``[n L]``."""
        x = (x.double() - self.shift).float()
        sq = x.pow(2).sum(-1)
        self.gram += torch.einsum("nld,nle->lde", x, x)
        self.s += x.double().sum(0)
        self.a += sq.double().sum(0)
        self.a2 += sq.double().pow(2).sum(0)
        self.ax += torch.einsum("nl,nld->ld", sq, x)
        return x, sq


def _zeros(n_layers: int, d: int) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.zeros(n_layers, dtype=torch.float64),
        torch.zeros(n_layers, dtype=torch.float64),
        torch.zeros(n_layers, d, dtype=torch.float64),
    )


@dataclass
class SimilarityStats:
    """Running sums for every (layer of A, layer of B) pair; :meth:`add` a batch, then
    :meth:`result`. ``self_compare``: A and B are the same activations (B's sums are A's)."""

    n: int = 0
    a_side: _Side | None = None
    b_side: _Side | None = None
    cross: Tensor | None = None  # [La Lb da db]  sum x y'
    ab: Tensor | None = None  # [La Lb]  sum |x|^2 |y|^2
    ay: Tensor | None = None  # [La Lb db]  sum |x|^2 y
    bx: Tensor | None = None  # [La Lb da]  sum |y|^2 x

    def add(self, x: Tensor, y: Tensor) -> None:
        """``x [n La da]`` and ``y [n Lb db]``: the activations of the same ``n`` tokens."""
        if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0]:
            raise MechscopeError(
                f"activations must be [tokens layers d] for the same tokens, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.shape[0] == 0:
            return
        if self.a_side is None:
            self.a_side, self.b_side = _Side.new(x), _Side.new(y)
            la, da, lb, db = *x.shape[1:], *y.shape[1:]
            self.cross = torch.zeros(la, lb, da, db, dtype=torch.float64)
            self.ab = torch.zeros(la, lb, dtype=torch.float64)
            self.ay = torch.zeros(la, lb, db, dtype=torch.float64)
            self.bx = torch.zeros(la, lb, da, dtype=torch.float64)
        assert self.b_side is not None and self.cross is not None
        xs, a = self.a_side.add(x)
        ys, b = self.b_side.add(y)
        flat_y = ys.reshape(ys.shape[0], -1)  # [n Lb*db]
        for layer in range(xs.shape[1]):  # one matmul per layer of A keeps the peak small
            block = (xs[:, layer].T @ flat_y).reshape(xs.shape[-1], ys.shape[1], ys.shape[-1])
            self.cross[layer] += block.transpose(0, 1)
        self.ab += a.T @ b
        self.ay += torch.einsum("nl,nmd->lmd", a, ys)
        self.bx += torch.einsum("nm,nld->lmd", b, xs)
        self.n += x.shape[0]

    def result(self) -> Similarity:
        if self.a_side is None or self.n < 4:
            raise MechscopeError(
                f"debiased CKA needs at least 4 tokens, got {self.n}; pass more tokens"
            )
        assert self.b_side is not None and self.cross is not None
        assert self.ab is not None and self.ay is not None and self.bx is not None
        A, B, n = self.a_side, self.b_side, self.n
        hsic_aa = _hsic_self(A, n)  # [La]
        hsic_bb = _hsic_self(B, n)  # [Lb]
        tr = self.cross.pow(2).sum((-1, -2)) - self.ab
        one_k = A.s.pow(2).sum(-1) - A.a  # [La]
        one_l = B.s.pow(2).sum(-1) - B.a  # [Lb]
        kl1 = (
            torch.einsum("ld,lmde,me->lm", A.s, self.cross, B.s)
            - torch.einsum("lme,me->lm", self.ay, B.s)
            - torch.einsum("lmd,ld->lm", self.bx, A.s)
            + self.ab
        )
        hsic = _combine(tr, one_k[:, None] * one_l[None, :], kl1, n)
        cka = hsic / (hsic_aa[:, None] * hsic_bb[None, :]).clamp_min(1e-300).sqrt()
        # Procrustes: centred cross-covariance and centred Frobenius norms
        cross_c = self.cross - torch.einsum("ld,me->lmde", A.s, B.s) / n
        norm_a = (torch.diagonal(A.gram, dim1=-2, dim2=-1).sum(-1) - A.s.pow(2).sum(-1) / n).sqrt()
        norm_b = (torch.diagonal(B.gram, dim1=-2, dim2=-1).sum(-1) - B.s.pow(2).sum(-1) / n).sqrt()
        nuclear = torch.linalg.matrix_norm(cross_c, ord="nuc")
        proc = nuclear / (norm_a[:, None] * norm_b[None, :]).clamp_min(1e-300)
        return Similarity(cka.tolist(), proc.tolist(), n)


def _hsic_self(side: _Side, n: int) -> Tensor:
    tr = side.gram.pow(2).sum((-1, -2)) - side.a2
    one = side.s.pow(2).sum(-1) - side.a
    kl1 = torch.einsum("ld,lde,le->l", side.s, side.gram, side.s) - 2 * (side.ax * side.s).sum(-1)
    return _combine(tr, one * one, kl1 + side.a2, n)


def _combine(tr: Tensor, ones: Tensor, kl1: Tensor, n: int) -> Tensor:
    return (tr + ones / ((n - 1) * (n - 2)) - 2 * kl1 / (n - 2)) / (n * (n - 3))


@dataclass
class Similarity:
    """``cka[i][j]`` and ``procrustes[i][j]``: layer ``layers_a[i]`` of A vs ``layers_b[j]`` of B."""

    cka: list[list[float]]
    procrustes: list[list[float]]
    n_tokens: int
    layers_a: list[int] = field(default_factory=list)
    layers_b: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "layers_a": self.layers_a,
            "layers_b": self.layers_b,
            "cka": self.cka,
            "procrustes": self.procrustes,
            "n_tokens": self.n_tokens,
        }


# -- direct computations on stored activations (the oracle for the streamed sums) ------------


def cka_direct(x: Tensor, y: Tensor) -> float:
    """Debiased linear CKA from the ``[N N]`` Gram matrices (``x [N da]``, ``y [N db]``)."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    k, lm = x @ x.T, y @ y.T

    def hsic(k: Tensor, lm: Tensor) -> float:
        k, lm = k.clone().fill_diagonal_(0), lm.clone().fill_diagonal_(0)
        one = torch.ones(n, dtype=torch.float64)
        value = (
            (k * lm).sum()
            + (one @ k @ one) * (one @ lm @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ k @ lm @ one)
        )
        return float(value / (n * (n - 3)))

    return hsic(k, lm) / (hsic(k, k) * hsic(lm, lm)) ** 0.5


def procrustes_direct(x: Tensor, y: Tensor) -> float:
    """``|Xc'Yc|_* / (|Xc|_F |Yc|_F)`` from the centred activations."""
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    return float(torch.linalg.matrix_norm(x.T @ y, ord="nuc") / (x.norm() * y.norm()))
