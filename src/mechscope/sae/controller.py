"""The sparsity controller: ReLU and JumpReLU SAEs trained to a target L0 ``k``.

A ReLU (L1) or JumpReLU (L0) SAE gets its sparsity from a penalty coefficient, and the value that
gives a wanted L0 depends on the data (its scale, how many features are active, the dictionary
size). When the config fixes no coefficient (``l1_coefficient`` / ``l0_coefficient`` is None) the
trainer adapts it to reach ``k`` instead:

1. the coefficient starts at the architecture's ``penalty_start`` (in normalised units);
2. the target falls geometrically from the first batch's L0 (the SAE is dense at initialisation)
   to ``k`` over the first ``anneal`` fraction of the steps (default 0.5), then stays at ``k``:
   forcing L0 down at once kills latents before they have learned a feature (a JumpReLU latent
   whose threshold passed all its pre-activations never comes back), so sparsity is tightened no
   faster than a schedule the dictionary can follow;
3. after each optimiser step, ``log c += gain * clip(log((L0 + 1) / (target + 1)), -1, 1)`` with
   ``L0`` the batch's mean number of active latents per token: a too-dense SAE raises the
   coefficient, a too-sparse one lowers it, by relative steps, so the same gain serves every input
   scale and dictionary size (the ``+ 1`` keeps the error finite when L0 reaches 0; the clip bounds
   a step to a factor ``exp(gain)``);
   while the target is still above ``k`` the coefficient only rises (an SAE already sparser than
   the schedule is left to learn);
4. during the sparsity warm-up (the coefficient ramps up from 0) the controller waits;
5. after ``until`` (a fraction of the steps, default 0.8) the coefficient is frozen, so the last
   part of training, where the learning rate decays, optimises one fixed objective.

The coefficient and the first L0 are buffers of the SAE (``sae.coefficient``, ``sae.l0_start``), so checkpoints resume it exactly and
``save_sae`` records its final value. An explicit coefficient in the config turns the controller off.
"""

from __future__ import annotations

import math

import torch

from mechscope.errors import MechscopeError
from mechscope.sae.base import SAE

__all__ = ["adapt", "check_target", "target"]


def check_target(sae: SAE) -> None:
    """A ReLU/JumpReLU SAE trains to ``k`` or with a fixed coefficient: one of the two is needed."""
    if sae.adaptive and sae.cfg.k is None:
        field = sae.penalty
        raise MechscopeError(
            f"a {sae.cfg.arch} SAE needs a target L0 to train: pass k (or a fixed {field})"
        )


def target(k: int, l0_start: float, progress: float, anneal: float) -> float:
    """The L0 aimed at after ``progress`` (fraction of the steps done): ``l0_start`` -> ``k``."""
    if progress >= anneal or l0_start <= k:
        return float(k)
    return k * (l0_start / k) ** (1.0 - progress / anneal)


@torch.no_grad()
def adapt(sae: SAE, l0: float, progress: float, gain: float, anneal: float) -> None:
    """One controller step: move ``sae.coefficient`` towards the value that gives the target L0."""
    k = sae.cfg.k
    assert k is not None and sae.adaptive
    if not math.isfinite(float(sae.l0_start)):
        sae.l0_start.fill_(l0)
    aim = target(k, float(sae.l0_start), progress, anneal)
    error = math.log((l0 + 1.0) / (aim + 1.0))
    if aim > k:  # while annealing, only tighten: a sparser SAE than the schedule is left alone
        error = max(error, 0.0)
    step = gain * max(-1.0, min(1.0, error))
    sae.coefficient.mul_(math.exp(step))
