"""What a neuron scan reads: MLP neurons, attention heads, residual directions or SAE latents.

A :class:`Readout` names one site and turns its activation into ``[batch pos unit]`` values, one
column per unit, in the model's own scale. ``writes`` [unit d_model] is the residual-stream vector
that one unit of activation adds, in model units: an MLP neuron's row of the down projection; for
a direction ``d`` read as ``x . d``, the vector ``d / |d|^2`` (adding it raises ``x . d`` by one),
pushed through ``W_O`` for a head's ``z``; for an SAE latent, its unit decoder direction, the latent
being read as ``a_i |d_i|`` (its activation times the length of its decoder row ``d_i`` in model
units, i.e. the length of what it adds to the residual stream). It gives the tokens a unit promotes
and suppresses (:mod:`.logits`) and is ``None`` where the readout is not linear in a write (a head
output's norm).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor

__all__ = [
    "Readout",
    "head_outputs",
    "mlp_neurons",
    "residual_directions",
    "rows_of",
    "sae_latents",
]

VECTOR_SITES = ("embed", "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True, eq=False)
class Readout:
    """One site read as ``n_units`` scalar units per token."""

    site: str  # the hook name, e.g. blocks.5.mlp.hook_post
    kind: str  # "neuron", "head", "direction" or "latent"
    units: tuple[int, ...]  # each unit's index (neuron, head or direction number)
    read: Callable[[Tensor], Tensor]  # site activation [batch pos ...] -> [batch pos unit]
    writes: Tensor | None  # [unit d_model] float32, or None when the readout is not linear

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def layer(self) -> int | None:
        parts = self.site.split(".")
        return int(parts[1]) if parts[0] == "blocks" else None


def rows_of(module: nn.Module) -> Tensor:
    """A projection's weight as [d_in d_out]: row k is what input unit k writes."""
    if isinstance(module, nn.Linear):
        return module.weight.T
    return module.weight  # GPT-2's Conv1D stores [d_in d_out]


def _check_layer(model: HookedModel, layer: int) -> None:
    n = model.dims.n_layers
    if not 0 <= layer < n:
        raise MechscopeError(f"layer {layer} is out of range: the model has layers 0-{n - 1}")


def _indices(chosen: Sequence[int] | None, n: int, what: str) -> list[int]:
    if chosen is None:
        return list(range(n))
    chosen = [int(i) for i in chosen]
    if not chosen:
        raise MechscopeError(f"empty {what} list; name at least one {what}")
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise MechscopeError(f"{what} {bad[0]} is out of range: the layer has {what}s 0-{n - 1}")
    return chosen


def mlp_neurons(model: HookedModel, layer: int, neurons: Sequence[int] | None = None) -> Readout:
    """MLP neurons ``blocks.L.mlp.hook_post[..., i]`` (all ``d_mlp`` when ``neurons`` is None)."""
    _check_layer(model, layer)
    family = model.family
    if family.moe is not None or family.mlp_out is None:
        raise MechscopeError(
            "this model's MLP is a mixture of experts with no dense neurons; scan a direction "
            f"at blocks.{layer}.hook_mlp_out with residual_directions instead"
        )
    idx = _indices(neurons, model.dims.d_mlp, "neuron")
    down = model.block(layer).get_submodule(family.mlp_out)
    writes = rows_of(down).detach().float()[idx].cpu()
    whole = neurons is None
    index = torch.tensor(idx)

    def read(t: Tensor) -> Tensor:
        return t if whole else t.index_select(-1, index.to(t.device))

    return Readout(f"blocks.{layer}.mlp.hook_post", "neuron", tuple(idx), read, writes)


def o_per_head(model: HookedModel, layer: int) -> Tensor:
    """The output projection as [head d_head d_model] (float32, CPU)."""
    f, d = model.family, model.dims
    module = model.block(layer).get_submodule(f.o)
    rows = rows_of(module).detach().float().cpu()  # [head*d_head d_model]
    return rows.view(d.n_heads, d.d_head, d.d_model)


def _per_head(direction: Tensor, n_heads: int, width: int, what: str) -> Tensor:
    direction = torch.as_tensor(direction, dtype=torch.float32).cpu()
    if direction.shape == (width,):
        direction = direction.expand(n_heads, width)
    if direction.shape != (n_heads, width):
        raise MechscopeError(
            f"{what} direction must be [{width}] or [{n_heads} {width}], "
            f"got {list(direction.shape)}"
        )
    return direction


def per_unit(dirs: Tensor) -> Tensor:
    """``d / |d|^2`` per row of ``dirs`` [n width]: adding it raises ``x . d`` by exactly one."""
    sq = dirs.pow(2).sum(-1, keepdim=True)
    if bool((sq == 0).any()):
        raise MechscopeError(
            f"direction {int((sq[:, 0] == 0).nonzero()[0])} is zero; pass a nonzero one"
        )
    return dirs / sq


def head_outputs(
    model: HookedModel,
    layer: int,
    heads: Sequence[int] | None = None,
    *,
    direction: Tensor | None = None,
    site: str = "z",
) -> Readout:
    """Each head's output at ``attn.hook_z`` (``site="z"``) or ``attn.hook_result`` (``"result"``).

    Without ``direction`` a unit is the output's L2 norm (no write vector). With it, the output is
    projected onto the direction ([d_head] for z, [d_model] for result; or one row per head), and
    the write is ``direction @ W_O[h]`` (z) or the direction itself (result).
    """
    _check_layer(model, layer)
    d = model.dims
    if site not in ("z", "result"):
        raise MechscopeError(f"head site must be 'z' or 'result', not {site!r}")
    idx = _indices(heads, d.n_heads, "head")
    width = d.d_head if site == "z" else d.d_model
    name = f"blocks.{layer}.attn.hook_{site}"
    index = torch.tensor(idx)
    if direction is None:

        def read(t: Tensor) -> Tensor:  # [batch pos head width] -> [batch pos unit]
            return t.index_select(2, index.to(t.device)).float().norm(dim=-1)

        return Readout(name, "head", tuple(idx), read, None)
    u = _per_head(direction, d.n_heads, width, site)[idx]  # [unit width]
    step = per_unit(u)  # what raises z_h . u (or result_h . d) by one
    writes = (
        torch.einsum("hd,hdm->hm", step, o_per_head(model, layer)[idx]) if site == "z" else step
    )

    def project(t: Tensor) -> Tensor:
        picked = t.index_select(2, index.to(t.device)).float()
        return torch.einsum("bphw,hw->bph", picked, u.to(t.device))

    return Readout(name, "head", tuple(idx), project, writes.contiguous())


def residual_directions(model: HookedModel, site: str, directions: Tensor) -> Readout:
    """Directions [unit d_model] (or one [d_model]) read at a [batch pos d_model] site."""
    if site not in model.sites:
        from mechscope.sites.table import unknown_site_error

        raise unknown_site_error(site, model.sites)
    if model.sites[site].kind not in VECTOR_SITES:
        raise MechscopeError(
            f"{site} is not a residual-stream site; use a [batch pos d_model] site such as "
            "blocks.L.hook_resid_post, hook_attn_out or hook_mlp_out"
        )
    dirs = torch.as_tensor(directions, dtype=torch.float32).cpu()
    dirs = dirs[None] if dirs.ndim == 1 else dirs
    if dirs.ndim != 2 or dirs.shape[1] != model.dims.d_model or not len(dirs):
        raise MechscopeError(
            f"directions must be [d_model] or [n d_model] with d_model={model.dims.d_model}, "
            f"got {list(torch.as_tensor(directions).shape)}"
        )

    writes = per_unit(dirs)

    def read(t: Tensor) -> Tensor:
        return t.float() @ dirs.T.to(t.device)

    return Readout(site, "direction", tuple(range(len(dirs))), read, writes.contiguous())


def sae_latents(sae: Any, latents: Sequence[int] | None = None) -> Readout:
    """SAE (or transcoder) latents at the SAE's input site, in model units (module docstring).

    A latent ``i`` with activation ``a_i`` (what ``sae.encode`` gives, the scale ``mechscope
    steer --mode clamp`` takes) and decoder row ``d_i`` in model units (``W_dec[i] /
    normalize_scale``) reads as ``a_i |d_i|`` and writes ``d_i / |d_i|`` per unit; a transcoder's
    latent writes at its output site, which adds into the residual stream too.
    """
    idx = _indices(latents, sae.cfg.d_sae, "latent")
    index = torch.tensor(idx)
    scale = sae.cfg.normalize_scale or 1.0
    rows = sae.W_dec.detach().float().cpu()[index] / scale  # [unit d_out]: decode(e_i) - decode(0)
    lengths = rows.norm(dim=-1)
    if bool((lengths == 0).any()):
        raise MechscopeError("an SAE latent has a zero decoder row; it writes nothing to read")

    every = idx == list(range(sae.cfg.d_sae))

    def read(t: Tensor) -> Tensor:
        with torch.no_grad():
            acts = sae.encode(t.to(sae.W_dec.dtype)).float()
        if not every:
            acts = acts.index_select(-1, index.to(t.device))
        return acts.mul_(lengths.to(t.device))

    return Readout(sae.cfg.hook_name, "latent", tuple(idx), read, rows / lengths[:, None])
