"""Resampling dead latents (Bricken et al. 2023, "Towards Monosemanticity", with the residual as target).

Every ``resample_every`` steps during the first ``resample_until`` of training, each latent that
has not fired for ``dead_window_tokens`` tokens is given a fresh direction:

1. pick tokens of the current batch with probability proportional to their squared
   reconstruction error (a generator seeded by the step, so resuming stays exact);
2. the decoder row becomes the unit direction of that token's residual ``target - x_hat`` (what
   the SAE fails to explain), the encoder column the same direction (for a transcoder: the unit
   direction of its input) scaled to 0.2 x the mean norm of the living latents' encoder columns;
3. ``b_enc`` (and a JumpReLU threshold) go back to their initial values and Adam's moments for
   those entries are zeroed.

Useful for ReLU and JumpReLU SAEs, where a latent below threshold gets no gradient at all.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mechscope.sae.base import SAE, SAEOutput

__all__ = ["resample_dead"]

ENCODER_SCALE = 0.2  # Bricken et al.: new encoder columns at 0.2 x the living latents' mean norm


@torch.no_grad()
def resample_dead(
    sae: SAE,
    opt: torch.optim.Optimizer,
    x: Tensor,
    target: Tensor | None,
    out: SAEOutput,
    dead: Tensor,
    seed: int,
) -> int:
    """Re-initialise the ``dead`` latents from badly reconstructed tokens; returns how many."""
    idx = dead.nonzero().squeeze(1)
    if idx.numel() == 0:
        return 0
    goal = sae.scale_in(x if target is None else target)
    resid = goal - sae.scale_in(out.x_hat.detach())
    weights = resid.pow(2).sum(-1)
    if not bool(weights.sum() > 0):
        return 0
    g = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(
        weights, idx.numel(), replacement=idx.numel() > weights.numel(), generator=g
    )
    dirs = _unit(resid[picks])
    enc_dirs = dirs if not sae.cfg.is_transcoder else _unit(sae.scale_in(x)[picks])
    alive = ~dead
    norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else torch.tensor(1.0)
    sae.W_dec[idx] = dirs.to(sae.W_dec.dtype)
    sae.W_enc[:, idx] = (enc_dirs.T * norm * ENCODER_SCALE).to(sae.W_enc.dtype)
    sae.b_enc[idx] = 0.0
    log_threshold = getattr(sae, "log_threshold", None)
    if log_threshold is not None:
        log_threshold[idx] = math.log(sae.cfg.threshold)
    for param, select in (
        (sae.W_dec, (idx,)),
        (sae.W_enc, (slice(None), idx)),
        (sae.b_enc, (idx,)),
    ):
        _zero_moments(opt, param, select)
    if log_threshold is not None:
        _zero_moments(opt, log_threshold, (idx,))
    return int(idx.numel())


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _zero_moments(opt: torch.optim.Optimizer, param: Tensor, select: tuple) -> None:
    state = opt.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][select] = 0.0
