"""Attaching user functions to sites as scoped PyTorch hooks on the HF modules.

A hook function has TransformerLens's signature ``fn(activation, hook) -> replacement | None``.
A replacement must have the activation's shape and be finite; it flows downstream exactly as the
model's own value would. A backward function ``fn(grad, hook) -> grad | None`` sees the gradient
of the site's canonical tensor. :func:`attach` returns handles; callers remove them in ``finally``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mechscope.errors import MechscopeError
from mechscope.families.base import Dims, Family
from mechscope.sites.table import Site

Tensor = torch.Tensor
HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]


@dataclass(frozen=True)
class HookPoint:
    """What a hook function is told about where it runs (``hook.name``, ``hook.layer()``)."""

    name: str
    layer_index: int | None

    def layer(self) -> int | None:
        return self.layer_index


@dataclass
class Calls:
    """The forward and backward functions attached to one site, run in order."""

    site: Site
    fwd: list[HookFn] = field(default_factory=list)
    bwd: list[HookFn] = field(default_factory=list)

    def run(self, t: Tensor) -> tuple[Tensor, bool]:
        """Run the functions on the canonical tensor; say whether the model must use a new one."""
        point = HookPoint(self.site.name, self.site.layer)
        changed = False
        for fn in self.fwd:
            r = fn(t, point)
            if r is not None:
                _check_replacement(self.site.name, t, r)
                t, changed = r, True
        if self.bwd:
            if not t.requires_grad:
                raise MechscopeError(
                    f"backward hook on {self.site.name} got no gradient; run outside torch.no_grad()"
                )
            for fn in self.bwd:
                t.register_hook(lambda g, fn=fn: fn(g, point))
            changed = True
        return t, changed


def _check_replacement(name: str, old: Tensor, new: Any) -> None:
    if not isinstance(new, torch.Tensor):
        raise MechscopeError(f"hook on {name} returned {type(new).__name__}, not a tensor or None")
    if new.shape != old.shape:
        raise MechscopeError(
            f"hook on {name} returned shape {tuple(new.shape)}, expected {tuple(old.shape)}"
        )
    # -inf is allowed: it is how attention scores are masked.
    if new.is_floating_point() and (torch.isnan(new).any() or torch.isposinf(new).any()):
        raise MechscopeError(f"hook on {name} returned NaN or +inf values; check the intervention")


def loaded(module: nn.Module) -> Any:
    """A context in which ``module``'s own weights are real tensors: accelerate offloads the
    weights of a disk- or CPU-offloaded module again right after its forward, before forward
    hooks run (``device_map`` with offloading); a no-op for any other module."""
    if getattr(module, "_hf_hook", None) is None:
        return contextlib.nullcontext()
    from accelerate.utils import align_module_device

    return align_module_device(module)


# -- generic module hooks -------------------------------------------------------------------


def _first(o: Any) -> Tensor:
    return o[0] if isinstance(o, tuple) else o


def _replace_first(o: Any, t: Tensor) -> Any:
    return (t, *o[1:]) if isinstance(o, tuple) else t


def _same(x: Tensor) -> Tensor:
    return x


def _keep(_: Tensor, t: Tensor) -> Tensor:
    return t


def hook_output(module: nn.Module, calls: Calls, get=_same, put=_keep) -> Any:
    """Forward hook on a module's output (its first element if a tuple)."""

    def hook(_m: nn.Module, _args: Any, out: Any) -> Any:
        x = _first(out)
        t, changed = calls.run(get(x))
        return _replace_first(out, put(x, t)) if changed else None

    return module.register_forward_hook(hook)


def hook_input(module: nn.Module, calls: Calls, get=_same, put=_keep) -> Any:
    """Forward pre-hook on a module's first input (positional or ``hidden_states=``)."""

    def hook(_m: nn.Module, args: tuple, kwargs: dict) -> Any:
        x = args[0] if args else kwargs["hidden_states"]
        t, changed = calls.run(get(x))
        if not changed:
            return None
        if args:
            return (put(x, t), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": put(x, t)}

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def heads_view(n: int, d: int) -> tuple[Callable, Callable]:
    """get/put between [batch pos n*d] and [batch pos n d]."""
    return (lambda x: x.view(*x.shape[:-1], n, d)), (lambda x, t: t.reshape(x.shape))


def fused_slice(
    layout: str, i: int, n: int, d: int, n_kv: int | None = None
) -> tuple[Callable, Callable]:
    """get/put for q (i=0), k (1) or v (2) inside a fused qkv projection output.

    ``n`` is the number of heads of the part asked for; ``n_kv`` (needed by the ``concat`` and
    ``falcon_grouped`` layouts, whose k and v are narrower than q) is the number of kv heads.
    """
    if layout in ("concat", "falcon_grouped") and n_kv is None:
        raise ValueError(f"the {layout} qkv layout needs n_kv")
    if layout in ("gpt2_fused", "concat"):  # [q | k | v]
        return _concat_slice(i, n, d, n_kv)
    if layout == "falcon_grouped":  # per kv group [q * g | k | v]
        return _grouped_slice(i, d, n_kv)

    # neox: per head [q | k | v], each d wide
    def get(x: Tensor) -> Tensor:
        return x.unflatten(-1, (n, 3, d))[..., i, :]

    def put(x: Tensor, t: Tensor) -> Tensor:
        parts = list(x.unflatten(-1, (n, 3, d)).unbind(-2))
        parts[i] = t
        return torch.stack(parts, dim=-2).flatten(-3)

    return get, put


def _concat_slice(i: int, n: int, d: int, n_kv: int | None) -> tuple[Callable, Callable]:
    def widths(x: Tensor) -> list[int]:
        kv = (n_kv or n) * d
        return [x.shape[-1] - 2 * kv, kv, kv]

    def get(x: Tensor) -> Tensor:
        return x.split(widths(x), dim=-1)[i].unflatten(-1, (n, d))

    def put(x: Tensor, t: Tensor) -> Tensor:
        parts = list(x.split(widths(x), dim=-1))
        parts[i] = t.flatten(-2)
        return torch.cat(parts, dim=-1)

    return get, put


def _grouped_slice(i: int, d: int, n_kv: int | None) -> tuple[Callable, Callable]:
    def grouped(x: Tensor) -> Tensor:  # [... n_kv g+2 d]
        return x.unflatten(-1, (n_kv, -1, d))

    def get(x: Tensor) -> Tensor:
        g = grouped(x)
        return g[..., :-2, :].flatten(-3, -2) if i == 0 else g[..., i - 3, :]

    def put(x: Tensor, t: Tensor) -> Tensor:
        g = grouped(x).clone()
        if i == 0:
            g[..., :-2, :] = t.unflatten(-2, (n_kv, -1))
        else:
            g[..., i - 3, :] = t
        return g.flatten(-3)

    return get, put


@dataclass
class Model:
    """What attaching needs: the HF model, its family and dims."""

    hf: nn.Module
    family: Family
    dims: Dims

    def module(self, path: str, layer: int | None = None) -> nn.Module:
        if layer is not None:
            path = f"{self.family.layers}.{layer}.{path}"
        return self.hf.get_submodule(path)
