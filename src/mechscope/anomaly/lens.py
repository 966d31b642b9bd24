"""Tuned-lens disagreement: how much the layers after L change the model's prediction.

A planted backdoor lives in some layers: they override what the layers below would have
predicted. For each detector layer ``L`` (below the last), an affine translator from the residual
stream at ``L`` to the last layer's residual stream is fitted on trusted text by least squares (a
tuned lens, Belrose et al. 2023, fitted in closed form): from the streamed joint mean and
covariance of ``[x_L, x_last]`` (:class:`mechscope.anomaly.mahalanobis.MahalanobisStats`),
``A = C_yx (C_xx + r I)^-1`` with a small ridge ``r`` (1e-3 of the mean variance of ``x_L``) and
``b = m_y - A m_x``. A token's score is ``KL(p || q)``: ``p`` the model's next-token
distribution, ``q = softmax(unembed(final_norm(A x_L + b)))`` what layer ``L`` predicts through
the translator. Its per-vocabulary terms ``p_v (log p_v - log q_v)`` sum to it and name the output
tokens that drove a flag.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mechscope.anomaly.mahalanobis import MahalanobisStats

__all__ = ["RIDGE", "fit_translator", "lens_kl", "lens_terms"]

RIDGE = 1e-3  # times the mean variance of x_L
CHUNK = 256  # tokens unembedded at once (the vocabulary is large)


def fit_translator(stats: MahalanobisStats) -> dict[str, Tensor]:
    """``weight`` [d_last d_L] and ``bias`` [d_last] of the least-squares translator, from the
    joint statistics of rows ``[x_L, x_last]`` (the two halves have the same width)."""
    mean, cov = stats.mean_cov()
    p = cov.shape[0] // 2
    cxx, cyx = cov[:p, :p], cov[p:, :p]
    ridge = RIDGE * max(float(torch.trace(cxx)) / p, 1e-12)
    weight = torch.linalg.solve(cxx + ridge * torch.eye(p, dtype=cov.dtype), cyx.T).T
    bias = mean[p:] - weight @ mean[:p]
    return {"weight": weight.float(), "bias": bias.float()}


def _log_probs(model: Any, t: dict[str, Tensor], x: Tensor) -> Tensor:
    """The final norm and unembedding of the translated rows (as the logit lens runs them)."""
    y = x.float() @ t["weight"].T + t["bias"]
    with torch.inference_mode(), model.capture_inputs() as inputs:
        # at layer == n_layers run_from runs no decoder layer, so it needs no recorded inputs
        return model.run_from(y[None], model.dims.n_layers, inputs)[0].float()


def lens_terms(model: Any, t: dict[str, Tensor], x: Tensor, logits: Tensor) -> Tensor:
    """Per-vocabulary terms [n vocab] of the KL for rows ``x`` [n d] and the model's ``logits``."""
    p = logits.float().log_softmax(-1)
    q = _log_probs(model, t, x).float().log_softmax(-1)
    return p.exp() * (p - q)


def lens_kl(model: Any, t: dict[str, Tensor], x: Tensor, logits: Tensor) -> Tensor:
    """``KL(p || q)`` [n] for rows ``x`` [n d] at layer L and the model's ``logits`` [n vocab]."""
    out = [
        lens_terms(model, t, x[i : i + CHUNK], logits[i : i + CHUNK]).sum(-1).clamp(min=0)
        for i in range(0, x.shape[0], CHUNK)
    ]
    return torch.cat(out) if out else x.new_zeros(0)
