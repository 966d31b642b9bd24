"""The fast training path of TopK and BatchTopK SAEs: encode densely, then stay sparse.

Only the encoder's forward matmul is dense (every pre-activation is needed to pick the top k).
Every other product touches just the selected latents:

- the selected pre-activations are gathered from the dense ``pre`` with a custom backward that
  sends gradients to ``W_enc``/``b_enc`` (a sparse ``[d_sae batch] @ [batch d_in]`` product) and
  to the centred input (an embedding bag over ``W_enc`` columns);
- decoding is ``F.embedding_bag(cols, W_dec, offsets, per_sample_weights=values)``, whose
  backward is sparse too.

With ``k`` active latents out of ``d_sae`` this replaces four of the five dense
``batch x d_in x d_sae`` products of a training step (forward decode, two backward products of
the decoder, the encoder's weight gradient) with products ``d_sae / k`` times smaller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SparseCode", "auxk_dense", "gather_pre", "sparse_decode", "to_sparse"]


@dataclass
class SparseCode:
    """Active latents of a batch as flat lists sorted by row: ``latents[rows[i], cols[i]] = values[i]``."""

    rows: Tensor  # [n] long, non-decreasing
    cols: Tensor  # [n] long
    values: Tensor  # [n], carries the gradient
    offsets: Tensor  # [batch] start of each row in the flat lists
    x_c: Tensor  # [batch d_in] the centred, normalised input the encoder saw
    n_rows: int


class _GatherPre(torch.autograd.Function):
    """``pre[rows, cols]`` where ``pre = x_c @ W_enc + b_enc`` was computed without autograd."""

    @staticmethod
    def forward(
        ctx: Any, x_c: Tensor, W_enc: Tensor, b_enc: Tensor, pre: Tensor, rows: Tensor, cols: Tensor
    ) -> Tensor:
        ctx.save_for_backward(x_c, W_enc, rows, cols)
        return pre[rows, cols]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x_c, W_enc, rows, cols = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            offsets = _offsets(rows, x_c.shape[0])
            grad_x = F.embedding_bag(
                cols, W_enc.t().contiguous(), offsets, mode="sum", per_sample_weights=grad
            )
        if ctx.needs_input_grad[1]:
            g = torch.sparse_coo_tensor(
                torch.stack([cols, rows]), grad, (d_sae, x_c.shape[0]), check_invariants=False
            )
            grad_w = torch.sparse.mm(g, x_c).t().contiguous()  # [d_in d_sae]
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(d_sae, dtype=grad.dtype).index_add_(0, cols, grad)
        return grad_x, grad_w, grad_b, None, None, None


def _offsets(rows: Tensor, n_rows: int) -> Tensor:
    return torch.searchsorted(rows, torch.arange(n_rows, device=rows.device))


def gather_pre(
    x_c: Tensor, W_enc: Tensor, b_enc: Tensor, pre: Tensor, rows: Tensor, cols: Tensor
) -> Tensor:
    """Differentiable ``pre[rows, cols]`` (``rows`` sorted) for a ``pre`` computed under no_grad."""
    return _GatherPre.apply(x_c, W_enc, b_enc, pre, rows, cols)  # type: ignore[no-any-return]


def make_code(
    x_c: Tensor, W_enc: Tensor, b_enc: Tensor, pre: Tensor, rows: Tensor, cols: Tensor
) -> SparseCode:
    """A :class:`SparseCode` with ReLU'd, differentiable values for the selected latents."""
    values = gather_pre(x_c, W_enc, b_enc, pre, rows, cols).relu()
    return SparseCode(rows, cols, values, _offsets(rows, x_c.shape[0]), x_c, x_c.shape[0])


def sparse_decode(
    code: SparseCode, W_dec: Tensor, b_dec: Tensor, values: Tensor | None = None
) -> Tensor:
    """``latents @ W_dec + b_dec`` from the sparse code (normalised units)."""
    values = code.values if values is None else values
    return (
        F.embedding_bag(code.cols, W_dec, code.offsets, mode="sum", per_sample_weights=values)
        + b_dec
    )


def to_sparse(code: SparseCode, d_sae: int) -> Tensor:
    """The ``[batch d_sae]`` latents as a sparse COO tensor without gradient (``.to_dense()`` for a
    dense copy); building it costs nothing, unlike a dense ``batch x d_sae`` tensor."""
    indices = torch.stack([code.rows, code.cols])
    return torch.sparse_coo_tensor(
        indices, code.values.detach(), (code.n_rows, d_sae), check_invariants=False
    )


def auxk_loss(
    code: SparseCode,
    pre: Tensor,
    residual: Tensor,
    dead: Tensor | None,
    W_enc: Tensor,
    b_enc: Tensor,
    W_dec: Tensor,
    k_aux: int,
    batch_mean: Callable[[Tensor], Tensor] | None = None,
) -> Tensor | None:
    """AuxK (Gao et al. 2024, appendix A.2): the top ``k_aux`` dead latents reconstruct the residual.

    ``residual`` is ``target - x_hat`` in normalised units; the loss is the squared error of that
    reconstruction (no decoder bias), scaled down when fewer than ``k_aux`` latents are dead, and
    normalised by the residual's own squared norm so its size does not shrink as training improves.
    Returns None when no latent is dead.
    """
    if dead is None or not bool(dead.any()):
        return None
    n_dead = int(dead.sum())
    k = min(k_aux, n_dead)
    with torch.no_grad():
        masked = pre.masked_fill(~dead, float("-inf"))
        cols = masked.topk(k, dim=-1, sorted=False).indices.reshape(-1)
        rows = torch.arange(pre.shape[0]).repeat_interleave(k)
    aux = make_code(code.x_c, W_enc, b_enc, pre, rows, cols)
    recon = F.embedding_bag(aux.cols, W_dec, aux.offsets, mode="sum", per_sample_weights=aux.values)
    residual = residual.detach()
    err = (recon - residual).pow(2).sum(-1).mean()
    norm = residual.pow(2).sum(-1).mean()
    norm = batch_mean(norm) if batch_mean is not None else norm  # over ranks when data-parallel
    return err / norm.clamp_min(1e-12) * min(n_dead / k_aux, 1.0)


def auxk_dense(
    pre: Tensor,
    residual: Tensor,
    dead: Tensor | None,
    W_dec: Tensor,
    k_aux: int,
    batch_mean: Callable[[Tensor], Tensor] | None = None,
) -> Tensor | None:
    """AuxK for the dense path (ReLU, JumpReLU): as :func:`auxk_loss`, from ``pre`` with its gradient.

    The top ``k_aux`` dead pre-activations of each token (through a ReLU, not the latent's own
    threshold) reconstruct the residual; a dead latent gets a gradient even below its threshold.
    """
    if dead is None or not bool(dead.any()):
        return None
    n_dead = int(dead.sum())
    k = min(k_aux, n_dead)
    pre = pre.reshape(-1, pre.shape[-1])
    with torch.no_grad():
        idx = pre.masked_fill(~dead, float("-inf")).topk(k, dim=-1, sorted=False).indices
    values = pre.gather(-1, idx).relu()
    recon = (values.unsqueeze(-1) * W_dec[idx]).sum(-2)
    residual = residual.detach().reshape(recon.shape)
    err = (recon - residual).pow(2).sum(-1).mean()
    norm = residual.pow(2).sum(-1).mean()
    norm = batch_mean(norm) if batch_mean is not None else norm  # over ranks when data-parallel
    return err / norm.clamp_min(1e-12) * min(n_dead / k_aux, 1.0)
