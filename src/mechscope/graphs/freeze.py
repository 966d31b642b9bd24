"""The local replacement model of one prompt: the HF model with its non-linear parts frozen.

For one prompt (Ameisen et al. 2025, "Circuit Tracing", section 2):

1. :func:`snapshot` runs the real model once and records every attention pattern, the scale
   (denominator) of every LayerNorm/RMSNorm call, the MLP inputs and outputs, the token
   embeddings and the unembedding output at the last position.
2. :func:`frozen_forward` runs the same HF modules again (no forward is re-implemented), with
   every attention pattern replaced by the recorded one, every norm computed with its recorded
   denominator (``y = (x - mean) / s0 * g + b`` or ``x / s0 * g``), the token embeddings and the
   MLP outputs replaced by given tensors, and the MLP inputs read (and cut from the MLPs, whose
   outputs are replaced anyway). With the recorded embeddings and MLP outputs it reproduces the
   real model; as a function of them it is affine, so gradients are exact direct effects.

Norms are found by their class (``nn.LayerNorm`` or a class named ``*Norm`` with a weight); each
one's recorded formula is checked against its real output on the prompt, so a norm of another
kind is an error instead of a wrong graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.errors import MechscopeError
from mechscope.graphs.transcoders import in_site, out_site

__all__ = ["NormState", "Snapshot", "frozen_forward", "norm_modules", "snapshot"]


@dataclass
class NormState:
    """One norm module: its kind, gain offset and the denominators of its calls on the prompt."""

    centre: bool
    eps: float
    offset: float = 0.0
    scales: list[Tensor] = field(default_factory=list)  # per call [1 ... 1]


@dataclass
class Snapshot:
    """What the real model computed on one prompt (batch 1, positions ``pos``)."""

    tokens: Tensor  # [pos]
    embed: Tensor  # [pos d_model]: hook_embed
    mlp_in: Tensor  # [layer pos d_model]
    mlp_out: Tensor  # [layer pos d_model]
    patterns: list[Tensor]  # per layer [1 head query_pos key_pos]
    norms: dict[str, NormState]
    unembed: Tensor  # [d_vocab]: the unembedding's output at the last position
    logits: Tensor  # [d_vocab]: the model's logits at the last position


def norm_modules(hf: nn.Module) -> dict[str, nn.Module]:
    """Every LayerNorm / RMSNorm-like module of the HF model, by name."""
    out = {}
    for name, mod in hf.named_modules():
        cls = type(mod).__name__
        if isinstance(mod, nn.LayerNorm) or (
            cls.endswith("Norm") and isinstance(getattr(mod, "weight", None), torch.Tensor)
        ):
            out[name] = mod
    return out


def _input(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _normalise(state: NormState, x: Tensor, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(x_centred / s, s)``; ``s`` recomputed from ``x`` unless given."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    xc = x - x.mean(-1, keepdim=True) if state.centre else x
    if scale is None:
        scale = (xc.pow(2).mean(-1, keepdim=True) + state.eps).sqrt()
    return xc / scale, scale


def _affine(mod: nn.Module, u: Tensor, offset: float) -> Tensor:
    y = u * (mod.weight.to(u.dtype) + offset)
    bias = getattr(mod, "bias", None)
    return y + bias.to(u.dtype) if isinstance(bias, torch.Tensor) else y


def _record_hook(name: str, state: NormState, family_offset: float) -> Any:
    def hook(mod: nn.Module, args: tuple, kwargs: dict, out: Tensor) -> None:
        u, scale = _normalise(state, _input(args, kwargs).detach())
        ref = out.detach().to(u.dtype)
        tol = 1e-4 * float(ref.abs().max()) + 1e-6
        for offset in dict.fromkeys((family_offset, 0.0, 1.0)):
            if float((_affine(mod, u, offset) - ref).abs().max()) <= tol:
                state.offset = offset
                state.scales.append(scale)
                return
        raise MechscopeError(
            f"norm {name} ({type(mod).__name__}) is not a LayerNorm or RMSNorm that the "
            "replacement model can freeze; this model is not supported by graphs"
        )

    return hook


def _frozen_hook(state: NormState, calls: list[int]) -> Any:
    def hook(mod: nn.Module, args: tuple, kwargs: dict, out: Tensor) -> Tensor:
        i = calls[0]
        calls[0] += 1
        x, scale = _input(args, kwargs), state.scales[i]
        if x.shape[0] != scale.shape[0] and x.ndim == scale.ndim:  # rows flattened (OPT's MLP)
            scale = scale.repeat(x.shape[0] // scale.shape[0], *[1] * (x.ndim - 1))
        u, _ = _normalise(state, x, scale)
        return _affine(mod, u, state.offset).to(out.dtype)

    return hook


@contextmanager
def _norm_hooks(model: Any, norms: dict[str, NormState] | None) -> Iterator[dict[str, NormState]]:
    """Record (``norms`` None) or freeze every norm's denominators during the block."""
    mods = norm_modules(model.hf)
    states = norms if norms is not None else {}
    handles = []
    try:
        for name, mod in mods.items():
            if norms is None:
                eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", 1e-6)
                states[name] = NormState(isinstance(mod, nn.LayerNorm), float(eps))
                hook = _record_hook(name, states[name], model.family.norm_offset)
            else:
                hook = _frozen_hook(states[name], [0])
            handles.append(mod.register_forward_hook(hook, with_kwargs=True))
        yield states
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _unembed_capture(model: Any, into: list[Tensor]) -> Iterator[None]:
    handle = model.unembed.register_forward_hook(lambda _m, _a, out: into.append(out[:, -1]))
    try:
        yield
    finally:
        handle.remove()


def _check_family(model: Any) -> None:
    if model.family.residual_only:
        raise MechscopeError(
            f"{model.family.name} models load through the generic fallback (no attention or MLP "
            "sites); attribution graphs need a family file"
        )


@torch.no_grad()
def snapshot(model: Any, tokens: Tensor) -> Snapshot:
    """Run the real model on ``tokens`` ([pos] or [1 pos]) and record what the graph freezes."""
    _check_family(model)
    tokens = tokens.reshape(1, -1)
    n = model.dims.n_layers
    names = ["hook_embed"]
    for layer in range(n):
        names += [in_site(layer), out_site(layer), f"blocks.{layer}.attn.hook_pattern"]
    kept: list[Tensor] = []
    with _norm_hooks(model, None) as norms, _unembed_capture(model, kept):
        logits, cache = model.run_with_cache(tokens, names=names)
    return Snapshot(
        tokens=tokens[0],
        embed=cache["hook_embed"][0],
        mlp_in=torch.stack([cache[in_site(i)][0] for i in range(n)]),
        mlp_out=torch.stack([cache[out_site(i)][0] for i in range(n)]),
        patterns=[cache[f"blocks.{i}.attn.hook_pattern"] for i in range(n)],
        norms=norms,
        unembed=kept[0][0],
        logits=logits[0, -1],
    )


@contextmanager
def _no_param_grad(model: Any) -> Iterator[None]:
    params = [p for p in model.hf.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def frozen_forward(
    model: Any, snap: Snapshot, embed: Tensor, mlp_out: list[Tensor]
) -> tuple[list[Tensor], Tensor]:
    """The replacement model on a batch: ``embed [batch pos d_model]`` and per-layer ``mlp_out``
    in, per-layer MLP inputs ``[batch pos d_model]`` and the unembedding output at the last
    position ``[batch d_vocab]`` out. Differentiable in its inputs when they require grad."""
    batch, n_pos = embed.shape[:2]
    n = model.dims.n_layers
    mlp_in: list[Tensor] = [embed] * n
    kept: list[Tensor] = []

    def read_in(layer: int) -> Any:
        def fn(t: Tensor, hook: Any) -> Tensor:
            mlp_in[layer] = t
            return t.detach()

        return fn

    fwd: list[tuple[str, Any]] = [("hook_embed", lambda t, hook: embed)]
    for layer in range(n):
        pattern = snap.patterns[layer]
        fwd += [
            (f"blocks.{layer}.attn.hook_pattern", lambda t, h, p=pattern: p.expand_as(t)),
            (in_site(layer), read_in(layer)),
            (out_site(layer), lambda t, h, x=mlp_out[layer]: x),
        ]
    tokens = snap.tokens[None].expand(batch, n_pos)
    with (
        _no_param_grad(model),
        _norm_hooks(model, snap.norms),
        _unembed_capture(model, kept),
        model.hooks(fwd),
    ):
        model.forward(tokens, read_pos=torch.tensor([n_pos - 1]))
    return mlp_in, kept[0]
