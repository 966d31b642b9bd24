"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen and Nanda 2025, "Learning Multi-Level
Features with Matryoshka Sparse Autoencoders"; Nabeshima 2024).

The dictionary is split into nested prefixes ``W_dec[:m_1] ⊂ W_dec[:m_2] ⊂ ... ⊂ W_dec[:d_sae]``
(``cfg.matryoshka_widths``; default ``d_sae/2, d_sae``: on planted dictionaries without a
hierarchy every extra level lowers the fraction of true features recovered, see docs/sae.md).
Steps:

1. latents are chosen as by BatchTopK (``k * batch`` over the batch; per token in the first
   steps, see :mod:`mechscope.sae.batchtopk`), with the same learned inference threshold;
2. every prefix reconstructs the input on its own: ``x_hat_m = latents[:, :m] @ W_dec[:m] + b_dec``;
3. the loss is the sum of the prefixes' squared errors (the full dictionary's is the ``mse`` term,
   the others ``inner_mse_<m>``), plus AuxK for dead latents.

Early latents must reconstruct without help from later ones, so general features stay in the
early prefixes instead of being absorbed into specific ones. Inference is BatchTopK's (a JumpReLU
at the learned threshold); SAELens saves the architecture as a JumpReLU SAE, and so does
:func:`mechscope.sae.save_sae` (the widths ride along in ``metadata.mechscope``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mechscope.sae.base import SAEOutput, register
from mechscope.sae.batchtopk import BatchTopKSAE
from mechscope.sae.sparse import SparseCode

__all__ = ["MatryoshkaSAE", "widths"]


def widths(d_sae: int, given: tuple[int, ...] | None) -> tuple[int, ...]:
    """The prefix widths, ending at ``d_sae`` (appended when missing)."""
    if given is None:
        given = (d_sae // 2,) if d_sae >= 2 else ()
    return tuple(dict.fromkeys((*given, d_sae)))


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK latents; every prefix of the dictionary trained to reconstruct on its own."""

    @property
    def widths(self) -> tuple[int, ...]:
        return widths(self.cfg.d_sae, self.cfg.matryoshka_widths)

    def penalties(
        self, out: SAEOutput, residual: Tensor, dead: Tensor | None, coef_scale: float = 1.0
    ) -> dict[str, Tensor]:
        terms = super().penalties(out, residual, dead, coef_scale)  # AuxK
        for m in self.widths[:-1]:
            # x - x_hat_m = (x - x_hat) + the contribution of latents m: (normalised units)
            rest = self._tail(out, m)
            terms[f"inner_mse_{m}"] = (residual + rest).pow(2).sum(-1).mean()
        return terms

    def _tail(self, out: SAEOutput, m: int) -> Tensor:
        code = out.sparse
        if isinstance(code, SparseCode):
            weights = code.values * (code.cols >= m).to(code.values.dtype)
            return F.embedding_bag(
                code.cols, self.W_dec, code.offsets, mode="sum", per_sample_weights=weights
            )
        latents = out.latents.to_dense() if out.latents.is_sparse else out.latents
        return latents[..., m:] @ self.W_dec[m:]
