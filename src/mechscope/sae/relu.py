"""ReLU SAE with a decoder-norm-weighted L1 penalty (Anthropic, "Circuits Updates - April 2024").

Steps: ``latents = ReLU(x W_enc + b_enc)``; loss = squared error + ``c * sum_i latents_i *
||W_dec[i]||`` with ``c`` the config's ``l1_coefficient`` or, when that is None, a coefficient the
trainer adapts until L0 reaches ``k`` (:mod:`mechscope.sae.controller`). The decoder is left unconstrained: weighting the penalty by the
decoder norms stops the SAE from shrinking latents and growing decoder rows to dodge the penalty
(the earlier fix was to renormalise the rows after every step).
"""

from __future__ import annotations

from torch import Tensor

from mechscope.sae.base import SAE, SAEOutput, register

__all__ = ["ReluSAE"]


@register("relu")
class ReluSAE(SAE):
    """``latents = ReLU(pre_acts)``, L1 penalty weighted by decoder row norms."""

    unit_norm_decoder = False
    penalty = "l1_coefficient"
    penalty_start = 0.3  # normalised units; the controller moves it from here

    def activate(self, pre_acts: Tensor) -> Tensor:
        return pre_acts.relu()

    def penalties(
        self, out: SAEOutput, residual: Tensor, dead: Tensor | None, coef_scale: float = 1.0
    ) -> dict[str, Tensor]:
        l1 = (out.latents * self.W_dec.norm(dim=1)).sum(-1).mean()
        return {"l1_loss": self.coefficient.to(l1.dtype) * coef_scale * l1}
