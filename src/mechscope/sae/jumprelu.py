"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity
with JumpReLU Sparse Autoencoders").

Steps: ``latents = pre * H(pre - threshold)`` with a learned per-latent ``threshold = exp(log_threshold) > 0``; loss
= squared error + ``c * sum_i H(pre_i - threshold_i)``, ``c`` the config's ``l0_coefficient`` or,
when that is None, a coefficient the trainer adapts until L0 reaches ``k``
(:mod:`mechscope.sae.controller`). The Heaviside step has no
useful gradient, so both the activation and the L0 penalty use straight-through estimators whose
pseudo-derivative with respect to the threshold is a rectangle kernel of width ``bandwidth``:
``d/dθ JumpReLU(z) = -(θ/ε) K((z-θ)/ε)`` and ``d/dθ H(z-θ) = -(1/ε) K((z-θ)/ε)`` with
``K(u) = 1[|u| < 1/2]``. The pre-activations get the true gradient of JumpReLU (``H(z-θ)``) and
none from the L0 term. Dead latents (silent for 50 batches) get AuxK, weighted ``8 *
aux_coefficient``: a latent whose threshold passed all its pre-activations has no other gradient
and would never come back. The decoder is not
constrained (the L0 penalty does not depend on its norms; on planted data a unit-norm
constraint cost a third of the recovered features).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.sae.base import SAE, SAEConfig, SAEOutput, register
from mechscope.sae.sparse import auxk_dense

__all__ = ["JumpReluSAE", "jumprelu", "step"]


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        grad_t = -(threshold / eps) * _rectangle((pre - threshold) / eps) * grad
        return grad_pre, grad_t.reshape(-1, threshold.shape[-1]).sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_t = -(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad
        return None, grad_t.reshape(-1, threshold.shape[-1]).sum(0), None


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``pre * H(pre - threshold)`` with the rectangle-kernel STE for the threshold."""
    return _JumpReLU.apply(pre, threshold, bandwidth)  # type: ignore[no-any-return]


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``H(pre - threshold)`` with the rectangle-kernel STE for the threshold (the L0 penalty)."""
    return _Step.apply(pre, threshold, bandwidth)  # type: ignore[no-any-return]


@register("jumprelu")
class JumpReluSAE(SAE):
    """JumpReLU latents with a learned per-latent threshold and an L0 penalty."""

    unit_norm_decoder = False
    penalty = "l0_coefficient"
    penalty_start = 0.01  # normalised units; the controller moves it from here
    uses_auxk = True  # AuxK brings back latents whose threshold passed all their pre-activations
    aux_coefficient: float = 1 / 32  # set by the trainer
    aux_scale = 8.0  # AuxK weight = aux_scale * aux_coefficient (1/4 with the default 1/32)
    dead_window_batches = 50  # default dead window: 50 batches (not a quarter of the run)

    def __init__(self, cfg: SAEConfig, *, seed: int | None = 0) -> None:
        super().__init__(cfg, seed=seed)
        # Learned in log space (as SAELens does): Adam's steps are then relative changes of the
        # threshold, which keeps it from jumping past every pre-activation and killing the latent.
        init = torch.full((cfg.d_sae,), math.log(cfg.threshold), dtype=self.W_enc.dtype)
        self.log_threshold = nn.Parameter(init)

    @property
    def threshold(self) -> Tensor:
        """``[d_sae]`` per-latent thresholds, ``exp(log_threshold)``."""
        return self.log_threshold.exp()

    def activate(self, pre_acts: Tensor) -> Tensor:
        return jumprelu(pre_acts, self.threshold, self.cfg.bandwidth)

    def penalties(
        self, out: SAEOutput, residual: Tensor, dead: Tensor | None, coef_scale: float = 1.0
    ) -> dict[str, Tensor]:
        l0 = step(out.pre_acts, self.threshold, self.cfg.bandwidth).sum(-1).mean()
        terms = {"l0_loss": self.coefficient.to(l0.dtype) * coef_scale * l0}
        aux = auxk_dense(
            out.pre_acts, residual, dead, self.W_dec, self.cfg.d_in // 2, self.batch_mean
        )
        if aux is not None and self.aux_coefficient:
            terms["auxk_loss"] = self.aux_scale * self.aux_coefficient * aux
        return terms
