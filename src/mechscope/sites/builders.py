"""One builder per site kind: where its tensor lives in the HF modules and how to write it back.

Each builder takes the model, the layer and the site's :class:`Calls` and returns hook handles.
Sites that the model never materialises (per-head results, resid_mid, final-norm scale, expert
outputs) are computed from the module's inputs only when a hook asks for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mechscope.sites import attention
from mechscope.sites.hooks import (
    Calls,
    Model,
    _first,
    _replace_first,
    fused_slice,
    heads_view,
    hook_input,
    hook_output,
    loaded,
)
from mechscope.sites.moe import build_expert_indices, build_expert_weights, build_shared_expert_out

Tensor = torch.Tensor
Builder = Callable[[Model, Any, Calls], list[Any]]


class _AttrHandle:
    """Removes one entry from an attention module's hook lists."""

    def __init__(self, module: nn.Module, kind: str, calls: Calls) -> None:
        self.module, self.kind, self.calls = module, kind, calls
        hooks = module.__dict__.setdefault(attention.HOOKS_ATTR, {})
        hooks.setdefault(kind, []).append(calls)

    def remove(self) -> None:
        hooks = self.module.__dict__.get(attention.HOOKS_ATTR, {})
        entries = hooks.get(self.kind, [])
        if self.calls in entries:
            entries.remove(self.calls)


def _qkv(i: int) -> Builder:
    def build(m: Model, layer: int, calls: Calls) -> list[Any]:
        f, d = m.family, m.dims
        n = d.n_heads if i == 0 else d.n_kv_heads
        if f.qkv == "separate":
            path = (f.q, f.k, f.v)[i]
            get, put = heads_view(n, d.d_head)
        else:
            path = f.q
            get, put = fused_slice(f.qkv, i, n, d.d_head, d.n_kv_heads)
        return [hook_output(m.module(path, layer), calls, get, put)]

    return build


def _attn_internal(kind: str) -> Builder:
    def build(m: Model, layer: int, calls: Calls) -> list[Any]:
        return [_AttrHandle(m.module(m.family.attn, layer), kind, calls)]

    return build


def _o_per_head(module: nn.Module, n: int, d: int) -> Tensor:
    """The output projection as [head d_head d_model], for nn.Linear and GPT-2's Conv1D."""
    w = module.weight
    if isinstance(module, nn.Linear):  # [d_model, head*d_head]
        return w.view(w.shape[0], n, d).permute(1, 2, 0)
    return w.view(n, d, w.shape[-1])  # Conv1D: [head*d_head, d_model]


def _build_z(m: Model, layer: int, calls: Calls) -> list[Any]:
    get, put = heads_view(m.dims.n_heads, m.dims.d_head)
    return [hook_input(m.module(m.family.o, layer), calls, get, put)]


def _build_result(m: Model, layer: int, calls: Calls) -> list[Any]:
    n, d = m.dims.n_heads, m.dims.d_head

    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor | None:
        z = args[0].unflatten(-1, (n, d))
        with loaded(module):
            result = torch.einsum("bphd,hdm->bphm", z, _o_per_head(module, n, d))
        t, changed = calls.run(result)
        if not changed:
            return None
        with loaded(module):
            bias = getattr(module, "bias", None)
            return t.sum(-2) if bias is None else t.sum(-2) + bias

    return [m.module(m.family.o, layer).register_forward_hook(hook)]


def _scaled(s: float) -> tuple[Callable, Callable]:
    """get/put for a value the model multiplies by ``s`` outside any module (Granite)."""
    if s == 1.0:
        return (lambda x: x), (lambda _x, t: t)
    return (lambda x: x * s), (lambda _x, t: t / s)


def _write_path(m: Model, which: str) -> str:
    f = m.family
    path = (f.attn_write or f.attn) if which == "attn" else (f.mlp_write or f.mlp)
    assert path is not None
    return path


def _build_attn_out(m: Model, layer: int, calls: Calls) -> list[Any]:
    """What attention adds to the residual: after a post-norm and residual multiplier."""
    get, put = _scaled(m.dims.residual_scale)
    return [hook_output(m.module(_write_path(m, "attn"), layer), calls, get, put)]


def _build_resid_mid(m: Model, layer: int, calls: Calls) -> list[Any]:
    """resid_mid = resid_pre + attn_out; a replacement X is written as attn_out := X - resid_pre."""
    stash: dict[str, Tensor] = {}
    get, put = _scaled(m.dims.residual_scale)

    def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        stash["resid_pre"] = args[0] if args else kwargs["hidden_states"]

    def post(_m: nn.Module, _args: Any, out: Any) -> Any:
        resid_pre = stash.pop("resid_pre")
        x = _first(out)
        t, changed = calls.run(resid_pre + get(x))
        return _replace_first(out, put(x, t - resid_pre)) if changed else None

    layer_mod = m.module(m.family.layers).get_submodule(str(layer))
    return [
        layer_mod.register_forward_pre_hook(pre, with_kwargs=True),
        m.module(_write_path(m, "attn"), layer).register_forward_hook(post),
    ]


def _mlp_site(kind: str) -> Builder:
    """MLP sites: fused [gate | up] halves (Phi-3), rows reshaped back to [batch pos] (OPT),
    the write scaled (Granite) and copied where the layer adds into it in place (Falcon)."""

    def build(m: Model, layer: int, calls: Calls) -> list[Any]:
        f, d = m.family, m.dims
        path = {"mlp_pre": f.mlp_in, "mlp_pre_linear": f.mlp_up, "mlp_post": f.mlp_out}.get(
            kind, _write_path(m, "mlp")
        )
        assert path is not None
        get, put = _scaled(d.residual_scale) if kind == "mlp_out" else _scaled(1.0)
        if f.mlp_gate_up and kind in ("mlp_pre", "mlp_pre_linear"):
            get, put = _half(0 if kind == "mlp_pre" else 1, d.d_mlp)
        if f.mlp_out_mutated and kind == "mlp_out":
            get, put = _copied(get, put)
        handles: list[Any] = []
        if f.flat_mlp:
            get, put, handle = _unflatten_rows(m, layer, get, put)
            handles.append(handle)
        hook = hook_input if kind == "mlp_post" else hook_output
        return [*handles, hook(m.module(path, layer), calls, get, put)]

    return build


def _build_mlp_in(m: Model, layer: int, calls: Calls) -> list[Any]:
    """The MLP block's input (after its norm): the MLP module's first input; OPT, whose layer
    has no MLP module, reads the up projection's input with its rows back to [batch pos]."""
    f = m.family
    if f.flat_mlp:
        get, put, handle = _unflatten_rows(m, layer, lambda x: x, lambda x, t: t)
        return [handle, hook_input(m.module(f.mlp_in, layer), calls, get, put)]
    return [hook_input(m.module(f.mlp, layer), calls)]


def _half(i: int, n: int) -> tuple[Callable, Callable]:
    def get(x: Tensor) -> Tensor:
        return x[..., i * n : (i + 1) * n]

    def put(x: Tensor, t: Tensor) -> Tensor:
        return torch.cat([t, x[..., n:]] if i == 0 else [x[..., :n], t], dim=-1)

    return get, put


def _copied(get: Callable, put: Callable) -> tuple[Callable, Callable]:
    return (lambda x: get(x).clone()), (lambda x, t: put(x, t).clone())


def _unflatten_rows(m: Model, layer: int, get: Callable, put: Callable) -> tuple[Any, ...]:
    stash: dict[str, Any] = {}

    def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        stash["shape"] = (args[0] if args else kwargs["hidden_states"]).shape[:-1]

    handle = m.module(m.family.layers).get_submodule(str(layer))
    handle = handle.register_forward_pre_hook(pre, with_kwargs=True)

    def get_rows(x: Tensor) -> Tensor:
        return get(x).reshape(*stash["shape"], -1)

    def put_rows(x: Tensor, t: Tensor) -> Tensor:
        return put(x, t.reshape(*x.shape[:-1], -1))

    return get_rows, put_rows, handle


def _moe_shape_stash(m: Model, layer: int) -> tuple[dict[str, Any], Any]:
    stash: dict[str, Any] = {}

    def pre(_m: nn.Module, args: tuple) -> None:
        stash["shape"] = args[0].shape[:-1]

    return stash, m.module(m.family.mlp, layer).register_forward_pre_hook(pre)


def _build_router(m: Model, layer: int, calls: Calls) -> list[Any]:
    moe = m.family.moe
    assert moe is not None
    stash, handle = _moe_shape_stash(m, layer)

    def hook(router: nn.Module, _args: Any, out: tuple) -> Any:
        logits = out[0]
        t, changed = calls.run(logits.view(*stash["shape"], -1))
        if not changed:
            return None
        flat = t.reshape(logits.shape)
        weights, indices = moe.route(router, flat)
        return (flat, weights, indices)

    return [handle, m.module(moe.router, layer).register_forward_hook(hook)]


def _build_expert_out(m: Model, layer: int, calls: Calls) -> list[Any]:
    moe = m.family.moe
    assert moe is not None
    stash, handle = _moe_shape_stash(m, layer)

    def hook(experts: nn.Module, args: tuple, out: Tensor) -> Tensor | None:
        x, indices, weights = args[:3]
        with loaded(experts):
            per = moe.expert_outputs(experts, x, indices, weights)  # [tokens expert d_model]
        t, changed = calls.run(per.view(*stash["shape"], *per.shape[1:]))
        return t.sum(-2).reshape(out.shape).to(out.dtype) if changed else None

    return [handle, m.module(moe.experts, layer).register_forward_hook(hook)]


def build_final_norm(m: Model, scale: Calls | None, normalized: Calls | None) -> list[Any]:
    """ln_final.hook_scale [batch pos 1] and hook_normalized (before the norm's weight)."""
    norm = m.module(m.family.final_norm)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-5)
    centre = m.dims.norm == "layer"

    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor | None:
        x = args[0].to(torch.promote_types(args[0].dtype, torch.float32))
        xc = x - x.mean(-1, keepdim=True) if centre else x
        s = (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        changed_s = changed_n = False
        if scale:
            s, changed_s = scale.run(s)
        t = xc / s
        if normalized:
            t, changed_n = normalized.run(t)
        if not (changed_s or changed_n):
            return None
        with loaded(module):
            weight = module.weight + m.family.norm_offset if m.family.norm_offset else module.weight
            y = weight * t.to(out.dtype)
            bias = getattr(module, "bias", None)
            return y if bias is None else y + bias

    return [norm.register_forward_hook(hook)]


def _layer_in(m: Model, layer: int, calls: Calls) -> list[Any]:
    return [hook_input(m.module(m.family.layers).get_submodule(str(layer)), calls)]


def _layer_out(m: Model, layer: int, calls: Calls) -> list[Any]:
    return [hook_output(m.module(m.family.layers).get_submodule(str(layer)), calls)]


BUILDERS: dict[str, Builder] = {
    "embed": lambda m, _, c: [
        hook_output(m.module(m.family.embed), c, *_scaled(m.dims.embed_scale))
    ],
    "pos_embed": lambda m, _, c: [hook_output(m.module(m.family.pos_embed), c)],
    "resid_pre": _layer_in,
    "q": _qkv(0),
    "k": _qkv(1),
    "v": _qkv(2),
    "scores": _attn_internal("scores"),
    "pattern": _attn_internal("pattern"),
    "z": _build_z,
    "result": _build_result,
    "attn_out": _build_attn_out,
    "resid_mid": _build_resid_mid,
    "mlp_in": _build_mlp_in,
    "mlp_pre": _mlp_site("mlp_pre"),
    "mlp_pre_linear": _mlp_site("mlp_pre_linear"),
    "mlp_post": _mlp_site("mlp_post"),
    "router_logits": _build_router,
    "expert_indices": build_expert_indices,
    "expert_weights": build_expert_weights,
    "expert_out": _build_expert_out,
    "shared_expert_out": build_shared_expert_out,
    "mlp_out": _mlp_site("mlp_out"),
    "resid_post": _layer_out,
}


def attach(m: Model, requests: dict[str, Calls]) -> list[Any]:
    """Attach every requested site's calls; returns the handles (remove them in ``finally``)."""
    handles: list[Any] = []
    try:
        for calls in requests.values():
            if calls.site.kind in ("final_scale", "final_normalized"):
                continue
            handles += BUILDERS[calls.site.kind](m, calls.site.layer, calls)
        scale = requests.get("ln_final.hook_scale")
        normalized = requests.get("ln_final.hook_normalized")
        if scale or normalized:
            handles += build_final_norm(m, scale, normalized)
    except BaseException:
        detach(handles)
        raise
    return handles


def detach(handles: list[Any]) -> None:
    for h in reversed(handles):
        h.remove()
