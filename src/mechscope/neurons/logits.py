"""The tokens a unit promotes and suppresses directly, through the final norm and the unembedding.

**Unit.** Every value is the change in a logit per unit of the unit's activation: a unit that writes
``v`` [d_model] into the residual stream per unit of activation (model units, see
:mod:`.readouts`) moves the logits by ``W_U @ J v``, where ``J`` is the Jacobian of the model's
final norm (the HF module itself, run with autograd) averaged over real residual streams
``x_p`` [n d_model] that reach it: ``J = mean_p d norm(x_p) / dx_p``. This is the logit lens of
one write (Geva et al. 2022, "Transformer Feed-Forward Layers Build Predictions by Promoting
Concepts in the Vocabulary Space"), linearised at the model's own residual scale: a write of
``eps * v`` added to the final residual of those positions changes their logits by ``eps * W_U J
v`` on average, to first order. Without residual samples (``jacobian=None``) the norm is skipped
(``W_U @ v``, the raw direct path). Rows are computed in chunks, so memory stays ``chunk *
d_vocab`` floats; the mean Jacobian costs ``d_model`` batched backward passes through the norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor

__all__ = ["JACOBIAN_POSITIONS", "LogitEffects", "logit_effects", "norm_jacobian"]

CHUNK = 256  # rows of [chunk d_vocab] at a time
JACOBIAN_POSITIONS = 256  # residual samples averaged by a scan's norm Jacobian
JACOBIAN_CHUNK = 32  # positions per batched backward ([d_model chunk d_model] floats)


@dataclass(frozen=True, eq=False)
class LogitEffects:
    """Per unit, the ``k`` most promoted and most suppressed token ids, with their logit changes."""

    promote_ids: Tensor  # [unit k] int64, most promoted first
    promote_values: Tensor  # [unit k] float32: logit change per unit of activation
    suppress_ids: Tensor  # [unit k] int64, most suppressed first
    suppress_values: Tensor  # [unit k] float32


def norm_jacobian(model: HookedModel, resid: Tensor) -> Tensor:
    """The final norm's Jacobian [d_model d_model] (out, in), averaged over ``resid`` [n d_model].

    ``resid`` holds final residual streams (``blocks.{n_layers-1}.hook_resid_post``) of the
    positions the effects should describe.
    """
    resid = resid.detach().float().cpu().reshape(-1, resid.shape[-1])
    if not len(resid):
        raise MechscopeError("no residual positions to average the final norm over")
    norm = model.final_norm
    params = list(norm.parameters())
    dtype = params[0].dtype if params else torch.float32
    d = resid.shape[1]
    eye = torch.eye(d, dtype=dtype)
    total = torch.zeros(d, d, dtype=torch.float64)
    for start in range(0, len(resid), JACOBIAN_CHUNK):
        x = resid[start : start + JACOBIAN_CHUNK].to(dtype).requires_grad_(True)
        with torch.enable_grad():
            y = norm(x)  # [n d]; the norm acts on each position alone
            seeds = eye[:, None, :].expand(d, len(x), d)  # one backward per output coordinate
            (grad,) = torch.autograd.grad(y, x, seeds, is_grads_batched=True)
        total += grad.double().sum(1)  # [out n in] -> [out in]
    return (total / len(resid)).float()


def logit_effects(
    model: HookedModel, writes: Tensor, k: int = 10, *, jacobian: Tensor | None = None
) -> LogitEffects:
    """Top-``k`` promoted and suppressed tokens of each write [unit d_model] (module docstring)."""
    w_u = model.unembed.weight.detach().float().cpu()
    v = writes.float().cpu()
    if jacobian is not None:
        v = v @ jacobian.float().cpu().T  # [unit d_model]: J v for every write
    k = min(k, w_u.shape[0])
    parts: list[tuple[Tensor, ...]] = []
    for start in range(0, len(v), CHUNK):
        effect = v[start : start + CHUNK] @ w_u.T  # [chunk d_vocab]
        up = effect.topk(k, dim=-1)
        down = effect.topk(k, dim=-1, largest=False)
        parts.append((up.indices, up.values, down.indices, down.values))
    cat = [torch.cat(column) for column in zip(*parts, strict=True)]
    return LogitEffects(*cat)
