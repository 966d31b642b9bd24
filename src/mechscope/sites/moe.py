"""Builders for the routing sites of a mixture-of-experts block (beside ``router_logits`` and
``expert_out`` in :mod:`mechscope.sites.builders`).

- ``mlp.hook_expert_indices`` [batch pos top_k]: the experts the router chose, best first. A
  replacement re-routes each token to the given experts with the same slot weights.
- ``mlp.hook_expert_weights`` [batch pos expert]: each expert's routing weight, zero for experts
  not chosen (TransformerLens's layout). A replacement that keeps weight only on the chosen
  experts re-weights them (zero ablates one); one that puts weight on another expert re-routes the
  token to the top k of the edited weights.
- ``mlp.hook_shared_expert_out`` [batch pos d_model]: the shared expert's gated write
  ``sigmoid(shared_expert_gate(x)) * shared_expert(x)`` (Qwen2-MoE). A replacement is passed
  through by setting the gate's logit to a value whose sigmoid is exactly 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mechscope.errors import MechscopeError
from mechscope.sites.hooks import Calls, Model, loaded

Tensor = torch.Tensor


def _shape_stash(m: Model, layer: int) -> tuple[dict[str, Any], Any]:
    stash: dict[str, Any] = {}

    def pre(_m: nn.Module, args: tuple) -> None:
        stash["shape"] = args[0].shape[:-1]

    return stash, m.module(m.family.mlp, layer).register_forward_pre_hook(pre)


def build_expert_indices(m: Model, layer: int, calls: Calls) -> list[Any]:
    moe = m.family.moe
    assert moe is not None
    stash, handle = _shape_stash(m, layer)
    n_experts = m.dims.n_experts

    def hook(_router: nn.Module, _args: Any, out: tuple) -> Any:
        logits, weights, indices = out
        t, changed = calls.run(indices.view(*stash["shape"], -1))
        if not changed:
            return None
        if t.is_floating_point() or bool(((t < 0) | (t >= n_experts)).any()):
            raise MechscopeError(
                f"hook on {calls.site.name} must return expert ids (integers in [0, {n_experts}))"
            )
        return (logits, weights, t.reshape(indices.shape).to(indices.dtype))

    return [handle, m.module(moe.router, layer).register_forward_hook(hook)]


def build_expert_weights(m: Model, layer: int, calls: Calls) -> list[Any]:
    moe = m.family.moe
    assert moe is not None
    stash, handle = _shape_stash(m, layer)

    def hook(_router: nn.Module, _args: Any, out: tuple) -> Any:
        logits, weights, indices = out
        full = weights.new_zeros(*indices.shape[:-1], logits.shape[-1])
        full.scatter_(-1, indices, weights)
        t, changed = calls.run(full.view(*stash["shape"], -1))
        if not changed:
            return None
        t = t.reshape(full.shape)
        chosen = torch.zeros_like(full, dtype=torch.bool).scatter_(-1, indices, True)
        if bool(t.masked_fill(chosen, 0).ne(0).any()):  # weight on an unchosen expert: re-route
            indices = torch.topk(t, indices.shape[-1], dim=-1).indices.to(indices.dtype)
        return (logits, t.gather(-1, indices).to(weights.dtype), indices)

    return [handle, m.module(moe.router, layer).register_forward_hook(hook)]


def build_shared_expert_out(m: Model, layer: int, calls: Calls) -> list[Any]:
    moe = m.family.moe
    assert moe is not None and moe.shared_expert and moe.shared_expert_gate
    stash, handle = _shape_stash(m, layer)
    gate = m.module(moe.shared_expert_gate, layer)
    passed: dict[str, bool] = {}

    def on_shared(_mod: nn.Module, args: tuple, out: Tensor) -> Tensor | None:
        x = args[0]
        with loaded(gate):
            g = torch.sigmoid(F.linear(x, gate.weight, gate.bias))
        t, changed = calls.run((g * out).view(*stash["shape"], -1))
        passed["on"] = changed
        return t.reshape(out.shape).to(out.dtype) if changed else None

    def on_gate(_mod: nn.Module, _args: tuple, out: Tensor) -> Tensor | None:
        if not passed.pop("on", False):
            return None
        return torch.full_like(out, 1e4)  # sigmoid(1e4) == 1 exactly: the write is the hook's

    return [
        handle,
        m.module(moe.shared_expert, layer).register_forward_hook(on_shared),
        gate.register_forward_hook(on_gate),
    ]
