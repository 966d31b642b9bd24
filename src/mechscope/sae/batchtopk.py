"""BatchTopK SAE (Bussmann, Leask and Nanda 2024, "BatchTopK Sparse Autoencoders").

Steps, in training: the ``k * batch`` largest ReLU'd pre-activations over the whole batch are
kept, so L0 is ``k`` on average but varies from token to token. Inference must not depend on the
batch, so a single threshold is learned while training (a bias-corrected running mean, rate
``THRESHOLD_RATE``, of the smallest kept activation per batch) and then used like a JumpReLU:
``latents = pre * H(pre - threshold)``. Decoder rows at unit norm and AuxK as for TopK.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechscope.sae.base import SAEConfig, SAEOutput, register
from mechscope.sae.topk import TopKSAE

__all__ = ["BatchTopKSAE"]

THRESHOLD_RATE = 0.01


@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    """``k`` active latents per token on average over a batch; a learned threshold at inference."""

    per_token: bool = False  # set by the trainer: choose k per token (TopK) in the first steps

    def __init__(self, cfg: SAEConfig, *, seed: int | None = 0) -> None:
        super().__init__(cfg, seed=seed)
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float64))
        self.register_buffer("threshold_avg", torch.zeros((), dtype=torch.float64))
        self.register_buffer("threshold_steps", torch.zeros((), dtype=torch.int64))

    def activate(self, pre_acts: Tensor) -> Tensor:
        if self.training and pre_acts.dim() == 2:
            return super().activate(pre_acts) if self.per_token else self._batch_topk(pre_acts)
        return pre_acts * (pre_acts > self.threshold.to(pre_acts.dtype))

    def _batch_topk(self, pre: Tensor) -> Tensor:
        rows, cols = self.select(pre)
        out = torch.zeros_like(pre)
        out[rows, cols] = pre[rows, cols].relu()
        return out

    def select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        if self.per_token:
            return super().select(pre)
        if self.batch_gather is not None:  # data-parallel: the whole batch's threshold
            return self._select_global(pre)
        n = min(self.cfg.k * pre.shape[0], pre.numel())  # type: ignore[operator]
        flat = pre.reshape(-1).topk(n, sorted=False).indices.sort().values
        return flat // pre.shape[1], flat % pre.shape[1]

    def _select_global(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """The entries of this rank's slice among the ``k x rows`` largest of the global batch:
        the global n-th largest value is among the ranks' own n largest, which are gathered."""
        assert self.batch_gather is not None
        local = pre.detach().reshape(-1)
        everyone = self.batch_gather(local.new_tensor([pre.shape[0]]))
        n_global = int(self.cfg.k * everyone.sum())  # type: ignore[operator]
        top = self.batch_gather(local.topk(min(n_global, local.numel())).values)
        threshold = top.topk(min(n_global, top.numel())).values[-1]
        flat = (local >= threshold).nonzero().flatten()
        return flat // pre.shape[1], flat % pre.shape[1]

    @torch.no_grad()
    def after_step(self, out: SAEOutput) -> None:
        if self.per_token:  # the threshold is the batch selection's: learn it from those steps only
            return
        values = out.sparse.values.detach() if out.sparse is not None else out.latents
        active = values[values > 0]
        if self.batch_gather is not None:  # the smallest kept activation of the global batch
            lowest = active.min() if active.numel() else values.new_tensor(float("inf"))
            active = self.batch_gather(lowest.reshape(1))
            active = active[torch.isfinite(active)]
        if active.numel() == 0:
            return
        self.threshold_steps += 1
        self.threshold_avg.mul_(1 - THRESHOLD_RATE).add_(THRESHOLD_RATE * active.min().double())
        self.threshold.copy_(
            self.threshold_avg / (1 - (1 - THRESHOLD_RATE) ** self.threshold_steps.double())
        )
