"""What a detector reads from one forward pass: site activations, logits and attributions.

One batch of right-padded token windows goes through the model once with hooks at the requested
sites. ``attribution`` also takes the gradient of the output (the summed logit of the model's own top
next-token prediction at every real position) with respect to each site, and
returns gradient x activation per token; ``dla`` the direct logit attribution of the top logit
to every component (:mod:`mechscope.anomaly.dla`); ``attention`` every head's attention weight on
each token itself (:mod:`mechscope.anomaly.attention`). Without logits, gradients or DLA the forward
stops after the last requested site. Every activation is checked to be finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.anomaly.attention import diagonal, pattern_sites
from mechscope.anomaly.dla import dla_sites, top_logit_dla
from mechscope.errors import MechscopeError

__all__ = ["BatchActs", "extract"]


@dataclass
class BatchActs:
    """Per site, activations [batch pos d] (and gradient x activation); logits [batch pos vocab];
    the top logit's direct attribution per component [batch pos 2 n_layers + 1]."""

    acts: dict[str, Tensor] = field(default_factory=dict)
    attributions: dict[str, Tensor] = field(default_factory=dict)
    logits: Tensor | None = None
    dla: Tensor | None = None
    self_attention: Tensor | None = None  # [batch pos n_layers * n_heads]: each head's
    # attention weight on the token itself (mechscope.anomaly.attention)


def _check_finite(name: str, t: Tensor, mask: Tensor) -> None:
    # NaN and inf survive a sum (inf - inf is NaN), so one reduction finds them without a
    # bool copy of the tensor: on the logits that copy cost 14% of a forward pass
    bad = ~torch.isfinite(t.sum(-1)) & mask.bool()
    if bool(bad.any()):
        row, pos = (int(i) for i in bad.nonzero()[0])
        raise MechscopeError(
            f"non-finite activation at {name} (input {row} of the batch, position {pos}); "
            "the model produces NaN/inf here: load it in float32 or check its weights"
        )


def extract(
    model: Any,
    tokens: Tensor,
    mask: Tensor,
    sites: list[str],
    *,
    logits: bool = False,
    attribution: bool = False,
    dla: bool = False,
    attention: bool = False,
) -> BatchActs:
    """Activations at ``sites`` for ``tokens`` [batch pos] (``mask`` 1 on real tokens)."""
    out = BatchActs()
    asked = list(sites)
    diagonals: dict[str, Tensor] = {}
    patterns = pattern_sites(model.dims.n_layers) if attention else []

    def keep_diagonal(t: Tensor, hook: Any) -> None:  # not the whole [b h q k] pattern
        diagonals[hook.name] = diagonal(t.detach())

    fwd = [(s, keep_diagonal) for s in patterns]
    if dla:
        logits = True
        extra = dla_sites(model.dims.n_layers, "hook_pos_embed" in model.sites)
        sites = asked + [s for s in extra if s not in asked]
    if not attribution:
        with torch.inference_mode():
            if logits:
                out.logits, cache = model.run_with_cache(
                    tokens, names=sites, attention_mask=mask, fwd_hooks=fwd
                )
                out.acts = dict(cache.items())
            else:
                kept: dict[str, Tensor] = {}

                def keep(t: Tensor, hook: Any) -> None:
                    kept[hook.name] = t.detach()

                with model.hooks([(s, keep) for s in sites] + fwd, stop_after=sites + patterns):
                    model.forward(tokens, mask)
                out.acts = kept
    else:
        with torch.enable_grad():
            result, cache = model.run_with_cache(
                tokens, names=sites, attention_mask=mask, detach_cache=False, fwd_hooks=fwd
            )
            # the top logit, not its log-probability: a confident prediction (as a backdoor's)
            # saturates the softmax and would give a zero gradient
            target = result.float().max(-1).values * mask
            grads = torch.autograd.grad(target.sum(), [cache[s] for s in asked])
        out.acts = {s: cache[s].detach() for s in sites}
        out.attributions = {s: (cache[s].detach() * g).detach() for s, g in zip(asked, grads)}
        out.logits = result.detach()
    if attention:
        out.self_attention = torch.cat([diagonals[s] for s in patterns], -1).float()
        _check_finite("the attention patterns", out.self_attention, mask)
    for name, t in out.acts.items():
        _check_finite(name, t, mask)
    if out.logits is not None:
        _check_finite("the logits", out.logits, mask)
    if dla:
        assert out.logits is not None
        out.dla = top_logit_dla(model, out.acts, out.logits).cpu()
        _check_finite("the direct logit attributions", out.dla, mask)
        out.acts = {s: out.acts[s] for s in asked}
    return out
