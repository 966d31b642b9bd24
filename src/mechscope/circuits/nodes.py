"""Shared plumbing for the circuit algorithms: writer outputs, reader modules, projection maps.

- Writer outputs come from three sites: ``blocks.0.hook_resid_pre`` (the input node: token and,
  for GPT-2, position embeddings), ``blocks.L.attn.hook_result`` (each head's write, without the
  output bias, which is the same in every run) and ``blocks.L.hook_mlp_out``.
- A head's q/k/v port reads the residual through the layer's own ``ln1`` and projection module.
  The projection is affine, so :func:`qkv_maps` takes its weight and bias from the HF module (bias
  by calling it on zero) and slices them with the site's own layout (fused or separate): per-port
  (per-head) projections are then one einsum instead of ``n_heads`` full projections.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mechscope.circuits.graph import Graph
from mechscope.errors import MechscopeError, NotAvailable
from mechscope.models.hooked import HookedModel
from mechscope.sites.hooks import fused_slice, heads_view

Tensor = torch.Tensor


def node_sites(model: HookedModel) -> list[str]:
    """Sites whose outputs are the writers, in :class:`Graph` node order per layer."""
    names = ["blocks.0.hook_resid_pre"]
    for layer in range(model.dims.n_layers):
        names += [f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.hook_mlp_out"]
    return names


def stack_nodes(cache: dict[str, Tensor], n_layers: int) -> Tensor:
    """Writer outputs [batch pos node d_model] in graph order from a cache of :func:`node_sites`."""
    parts = [cache["blocks.0.hook_resid_pre"][:, :, None]]
    for layer in range(n_layers):
        parts += [
            cache[f"blocks.{layer}.attn.hook_result"],
            cache[f"blocks.{layer}.hook_mlp_out"][:, :, None],
        ]
    return torch.cat(parts, dim=2)


def run_nodes(model: HookedModel, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, writer outputs [batch pos node d_model]) of one run, without gradients."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names=node_sites(model), attention_mask=mask)
    return logits, stack_nodes(cache, model.dims.n_layers)


def layer_module(model: HookedModel, layer: int, path: str) -> nn.Module:
    return model.block(layer).get_submodule(path)


def qkv_maps(model: HookedModel, layer: int) -> list[tuple[Tensor, Tensor]]:
    """For q, k, v: (weight [d_model head d_head], bias [head d_head]) of the layer's projection.

    The bias is ``module(0)``; the weight is the module's own (Linear or GPT-2 Conv1D), or read
    off any other affine module as ``module(I) - module(0)``.
    """
    f, d = model.family, model.dims
    ref = next(model.hf.parameters())
    eye = torch.eye(d.d_model, dtype=ref.dtype, device=ref.device)[None]
    zero = torch.zeros_like(eye[:, :1])
    maps = []
    with torch.no_grad():
        for i in range(3):
            n = d.n_heads if i == 0 else d.n_kv_heads
            if f.qkv == "separate":
                module = layer_module(model, layer, (f.q, f.k, f.v)[i])
                get = heads_view(n, d.d_head)[0]
            else:
                module = layer_module(model, layer, f.q)
                get = fused_slice(f.qkv, i, n, d.d_head, d.n_kv_heads)[0]
            maps.append(_affine(module, get, eye, zero))
    return maps


def _affine(module: nn.Module, get: Any, eye: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
    """(weight [d_model head d_head], bias [head d_head]) of an affine projection module."""
    bias = get(module(zero))[0, 0]
    w = getattr(module, "weight", None)
    if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
        # Linear stores [out, in], GPT-2's Conv1D [in, out]; the module's output layout is the
        # same either way, so ``get`` slices its columns.
        assert w is not None
        return get((w.T if isinstance(module, nn.Linear) else w)[None])[0], bias
    return get(module(eye))[0] - bias, bias  # any other affine module: read it off


def _unsupported(model: HookedModel) -> str | None:
    """Why the edge graph cannot be evaluated exactly on this family (None if it can)."""
    f = model.family
    if f.residual_only:
        return "it has no family file (generic fallback)"
    if f.ln1 is None:
        return "it has no norm before attention"
    if f.attn_write or f.mlp_write:
        return "post-norms follow attention and MLP"
    if model.dims.residual_scale != 1.0:
        return "its blocks scale their writes (residual_multiplier)"
    if f.flat_mlp:
        return "its MLP runs on flattened rows"
    return None


def graph_for(model: HookedModel, graph: Graph | None) -> Graph:
    why = _unsupported(model)
    if why:
        raise NotAvailable(
            f"circuit discovery does not support {model.family.name} models: {why}; use patching "
            "or attribution patching instead"
        )
    g = Graph.from_dims(model.dims) if graph is None else graph
    d = model.dims
    same = (g.n_layers, g.n_heads, g.parallel) == (d.n_layers, d.n_heads, d.parallel)
    if not same or g.n_kv not in (d.n_kv_heads, d.n_heads):
        raise MechscopeError(f"graph {g} does not match the model's dims {d}")
    return g


def kv_repeat(model: HookedModel, graph: Graph) -> int:
    """Query heads per key/value head when the graph ungroups grouped-query attention, else 1."""
    return graph.n_kv // model.dims.n_kv_heads
