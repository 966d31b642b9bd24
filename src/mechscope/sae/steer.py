"""Steering with an SAE latent: add, scale or clamp its decoder direction during generation.

At the SAE's site (``hook_name``; for a transcoder, its output site), every position of the prompt
and of each generated token is edited:

- ``add``: ``x + scale * d`` where ``d`` is the latent's decoder direction in model units
  (``decode(e_i) - decode(0)``, i.e. ``W_dec[i] / normalize_scale``);
- ``scale``: the latent's own contribution multiplied by ``scale``: ``x + (scale - 1) * a_i * d``;
- ``clamp``: the latent's activation set to ``scale``: ``x + (scale - a_i) * d``, leaving the SAE's
  reconstruction error in place (as in Templeton et al. 2024, "Scaling Monosemanticity").

Generation is greedy (or sampled with a temperature and seed) without a KV cache, so the edit sees
every position on every step exactly as a plain forward would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.sae.base import SAE
from mechscope.sae.splice import sae_sites

__all__ = ["MODES", "SteerResult", "generate", "steer", "steering_hook"]

MODES = ("add", "scale", "clamp")


@dataclass
class SteerResult:
    """Generations without and with steering, for one prompt."""

    prompt: str
    latent: int
    mode: str
    scale: float
    hook_name: str
    baseline: str
    steered: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def direction(sae: SAE, latent: int) -> Tensor:
    """The latent's decoder direction in model units [d_out]."""
    if not 0 <= latent < sae.cfg.d_sae:
        raise MechscopeError(f"latent {latent} out of range; the SAE has {sae.cfg.d_sae} latents")
    one = torch.zeros(sae.cfg.d_sae, dtype=sae.W_dec.dtype)
    one[latent] = 1.0
    with torch.no_grad():
        return sae.decode(one) - sae.decode(torch.zeros_like(one))


def steering_hook(sae: SAE, latent: int, scale: float, mode: str = "add") -> Callable:
    """A forward hook ``(x, hook) -> x'`` applying one steering edit (see the module docstring)."""
    if mode not in MODES:
        raise MechscopeError(f"unknown steering mode {mode!r}; use one of {', '.join(MODES)}")
    if sae.cfg.out_hook_name and mode != "add":
        raise MechscopeError("scale and clamp need an SAE (a transcoder's input is another site)")
    d = direction(sae, latent)

    def hook(x: Tensor, hook: Any) -> Tensor:
        if mode == "add":
            return x + scale * d.to(x.dtype)
        with torch.no_grad():
            a = sae.encode(x.to(sae.W_dec.dtype))[..., latent : latent + 1].to(x.dtype)
        factor = (scale - 1) * a if mode == "scale" else scale - a
        return x + factor * d.to(x.dtype)

    return hook


@torch.no_grad()
def generate(
    model: HookedModel,
    prompt: str,
    *,
    max_new_tokens: int = 30,
    fwd_hooks: list | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """Continue ``prompt`` token by token (greedy when ``temperature`` is 0) under ``fwd_hooks``."""
    tokens = model.to_tokens(prompt)
    prompt_len = tokens.shape[1]
    gen = torch.Generator().manual_seed(seed)
    eos = model.tokenizer.eos_token_id
    for _ in range(max_new_tokens):
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks or [])[0, -1].float()
        if temperature > 0:
            probs = (logits / temperature).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
        else:
            nxt = logits.argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, nxt[None]], dim=1)
        if eos is not None and int(nxt) == eos:
            break
    return model.tokenizer.decode(tokens[0, prompt_len:].tolist())


def steer(
    model: HookedModel,
    sae: SAE,
    prompt: str,
    *,
    latent: int,
    scale: float,
    mode: str = "add",
    max_new_tokens: int = 30,
    temperature: float = 0.0,
    seed: int = 0,
) -> SteerResult:
    """Generate from ``prompt`` without and with the latent steered at the SAE's site."""
    _, site = sae_sites(model, sae)
    sae = sae.eval()
    kwargs = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    baseline = generate(model, prompt, **kwargs)
    hooks = [(site, steering_hook(sae, latent, scale, mode))]
    steered = generate(model, prompt, fwd_hooks=hooks, **kwargs)
    return SteerResult(prompt, latent, mode, scale, site, baseline, steered)
