"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Steps: ``latents = ReLU(TopK_k(x W_enc + b_enc))``: the ``k`` largest pre-activations of each
token are kept, the rest zeroed, so L0 <= k by construction and no sparsity penalty is needed.
Decoder rows are kept at unit norm. Dead latents (no activation for a window of tokens) get the
AuxK loss: the top ``k_aux = d_in / 2`` dead pre-activations reconstruct the residual error,
weighted by the trainer's ``aux_coefficient`` (1/32 in the paper).

Training batches (2-D input, train mode, grad enabled) take the sparse path of
:mod:`mechscope.sae.sparse`; there ``out.latents`` is a sparse COO tensor (``.to_dense()``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechscope.sae.base import SAE, SAEOutput, register
from mechscope.sae.sparse import SparseCode, auxk_loss, make_code, sparse_decode, to_sparse

__all__ = ["TopKSAE"]


@register("topk")
class TopKSAE(SAE):
    """``k`` active latents per token."""

    uses_auxk = True
    aux_coefficient: float = 1 / 32  # set by the trainer
    sparse_training: bool = True  # False: plain dense autograd (for comparison; no AuxK)

    def activate(self, pre_acts: Tensor) -> Tensor:
        values, idx = pre_acts.topk(self.cfg.k, dim=-1, sorted=False)  # type: ignore[arg-type]
        return torch.zeros_like(pre_acts).scatter(-1, idx, values.relu())

    def select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """Rows and columns (sorted by row) of the latents kept for a ``[batch d_sae]`` pre-activation."""
        k = self.cfg.k
        assert k is not None
        cols = pre.topk(k, dim=-1, sorted=False).indices.reshape(-1)
        rows = torch.arange(pre.shape[0]).repeat_interleave(k)
        return rows, cols

    def forward(self, x: Tensor) -> SAEOutput:  # type: ignore[override]
        if not (
            self.sparse_training and self.training and torch.is_grad_enabled() and x.dim() == 2
        ):
            return super().forward(x)
        self.check_input(x)
        x_c = self.scale_in(x)
        if self.cfg.centre_input:
            x_c = x_c - self.b_dec
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, x_c, self.W_enc)
            rows, cols = self.select(pre)
        code = make_code(x_c, self.W_enc, self.b_enc, pre, rows, cols)
        x_hat = sparse_decode(code, self.W_dec, self.b_dec)
        if self.cfg.normalize_scale is not None:
            x_hat = x_hat / self.cfg.normalize_scale
        return SAEOutput(x_hat, to_sparse(code, self.cfg.d_sae), pre, code)

    def penalties(
        self, out: SAEOutput, residual: Tensor, dead: Tensor | None, coef_scale: float = 1.0
    ) -> dict[str, Tensor]:
        if dead is None or self.aux_coefficient == 0:
            return {}
        code = out.sparse if isinstance(out.sparse, SparseCode) else None
        if code is None:  # dense path: build the code the AuxK loss needs from the pre-activations
            return {}
        aux = auxk_loss(
            code,
            out.pre_acts,
            residual,
            dead,
            self.W_enc,
            self.b_enc,
            self.W_dec,
            self.cfg.d_in // 2,
            self.batch_mean,
        )
        return {} if aux is None else {"auxk_loss": self.aux_coefficient * aux}
