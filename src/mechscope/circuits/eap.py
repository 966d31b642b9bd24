"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024, "Have Faith in
Faithfulness"), scores for every edge of the :class:`Graph` in a constant number of passes.

Patching edge u -> p replaces u's contribution to p's input by its corrupted value, which moves
p's input by ``delta_u = out_u(corrupt) - out_u(clean)``. To first order the metric moves by
``score(u -> p) = delta_u . dmetric/d(input of p)``. A port's input is the sum of its writers, so
its gradient is the same for all of them and one backward pass yields every edge's score:

1. Run clean and corrupted inputs without gradients; stack each writer's output
   ``[batch pos node d_model]`` (input: ``blocks.0.hook_resid_pre``; heads: ``attn.hook_result``;
   MLPs: ``hook_mlp_out``) and take ``delta = corrupt - clean``.
2. For each gradient point (EAP: the clean input; EAP-IG: the ``steps`` inputs
   ``corrupt + k/steps (clean - corrupt)``, k = 0..steps-1 as in the reference implementation,
   interpolated on the input embeddings ``blocks.0.hook_resid_pre``; every point runs the clean
   tokens, so attention masks and positions are the clean run's), run forward and backward once,
   keeping the gradients of
   ``attn.hook_q/k/v``, ``hook_resid_pre/mid`` and the final ``hook_resid_post``.
3. Port gradients: a q/k/v port's input is the residual read through ``ln1`` and the head's
   projection; pull ``dmetric/dq_h`` back through the projection (its weight, read off the
   module) and then through the layer's own ``ln1`` with autograd, all ports of a layer at once.
   The MLP port's gradient is ``d/d resid_mid - d/d resid_post`` (the MLP branch of the chain
   rule); in a parallel block ``d/d resid_pre - d/d resid_post - sum of the attention ports``.
   The logits port's gradient is ``d/d resid_post`` of the last layer. EAP-IG averages them.
   (Ungrouped GQA ports: k/v gradients are split per query head, see :mod:`.gqa`.)
   EAP-IG with activations (``"eap-ig-activations"``, MIB's EAP-IG-activations, the reference
   library's ``get_scores_ig_activations``) interpolates one layer component at a time instead of
   the input: for the input and every layer's attention and MLP output, and k = 1..steps, that
   component's output is set to ``corrupt + k/steps (clean - corrupt)`` (a constant, so no
   gradient flows through it), the clean tokens run forward and backward, and the port gradients
   of all ``(1 + 2 n_layers) steps`` runs are averaged.
4. ``scores = einsum("bpnd,bpkd->nk", delta, grads)`` with the gradients of the batch-mean
   metric: the first-order change of that mean when the edge alone is patched (0 off the graph).
"""

from __future__ import annotations

import time

import torch

from mechscope.circuits.circuit import Circuit
from mechscope.circuits.gqa import split_kv_grads
from mechscope.circuits.graph import Graph
from mechscope.circuits.nodes import (
    graph_for,
    kv_repeat,
    layer_module,
    qkv_maps,
    run_nodes,
)
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric, logit_diff

Tensor = torch.Tensor
Replace = tuple[str, Tensor]  # a site whose output is set to a constant
METHODS = ("eap", "eap-ig", "eap-ig-activations")


def attribute(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric = logit_diff,
    method: str = "eap-ig",
    steps: int = 5,
    graph: Graph | None = None,
) -> Circuit:
    """Score every edge with EAP or EAP-IG; returns the full :class:`Circuit` with its scores."""
    if method not in METHODS:
        raise MechscopeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if steps < 1:
        raise MechscopeError(f"steps must be at least 1, got {steps}")
    batch.require_aligned()
    graph = graph_for(model, graph)
    start = time.perf_counter()
    mask = batch.clean_mask
    clean_logits, clean = run_nodes(model, batch.clean_tokens, mask)
    corrupt_logits, corrupt = run_nodes(model, batch.corrupt_tokens, mask)
    delta = corrupt - clean
    e_clean, e_corrupt = clean[:, :, 0], corrupt[:, :, 0]
    points: list[tuple[Tensor | None, Replace | None]] = [(None, None)]
    if method == "eap-ig":
        points = [(e_corrupt + k / steps * (e_clean - e_corrupt), None) for k in range(steps)]
    elif method == "eap-ig-activations":
        points = _activation_points(model, batch, e_clean, e_corrupt, steps)
    maps = [qkv_maps(model, layer) for layer in range(model.dims.n_layers)]
    grads = sum(port_grads(model, graph, batch, metric, e, maps, r) for e, r in points)
    grads = grads / len(points)
    scores = edge_scores(graph, delta, grads)
    meta = {
        "model": model.provenance.get("name", model.hf.config.model_type),
        "task": batch.name,
        "metric": getattr(metric, "__name__", str(metric)),
        "steps": steps if method != "eap" else 1,
        "n_prompts": len(batch),
        "clean_metric": float(metric(clean_logits, batch).mean()),
        "corrupt_metric": float(metric(corrupt_logits, batch).mean()),
        "seconds": time.perf_counter() - start,
    }
    return Circuit(graph, scores, graph.edge_mask, method=method, meta=meta)


def edge_scores(graph: Graph, delta: Tensor, grads: Tensor) -> Tensor:
    """[node port] ``delta . grads`` summed over batch and positions, one layer's ports at a time
    (each reads only a prefix of the writers)."""
    scores = delta.new_zeros(len(graph.nodes), len(graph.ports))
    per = graph.ports_per_layer
    blocks = [(b, b + per) for b in range(0, len(graph.ports) - 1, per)]
    for a, b in [*blocks, (len(graph.ports) - 1, len(graph.ports))]:
        n_up = int(graph.n_up[a:b].max())
        scores[:n_up, a:b] = torch.einsum("bpnd,bpkd->nk", delta[:, :, :n_up], grads[:, :, a:b])
    return scores.masked_fill(~graph.edge_mask, 0.0)


def _activation_points(
    model: HookedModel, batch: TaskBatch, e_clean: Tensor, e_corrupt: Tensor, steps: int
) -> list[tuple[Tensor | None, Replace | None]]:
    """EAP-IG-activations' gradient points: each component's output interpolated, k = 1..steps."""
    sites = [
        f"blocks.{i}.hook_{c}_out" for i in range(model.dims.n_layers) for c in ("attn", "mlp")
    ]
    runs = []
    with torch.no_grad():
        for tokens in (batch.clean_tokens, batch.corrupt_tokens):
            runs.append(
                model.run_with_cache(tokens, names=sites, attention_mask=batch.clean_mask)[1]
            )
    a = [k / steps for k in range(1, steps + 1)]
    points: list[tuple[Tensor | None, Replace | None]] = [
        (e_corrupt + x * (e_clean - e_corrupt), None) for x in a
    ]
    for site in sites:
        c, k = runs[0][site], runs[1][site]
        points += [(None, (site, k + x * (c - k))) for x in a]
    return points


def _site_grads(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric,
    embed: Tensor | None,
    rep: int,
    replace: Replace | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(gradients, forward values) of the sites step 2 needs, from one forward and backward.

    With ``rep > 1`` (ungrouped GQA ports) the k/v gradients are split per query head;
    ``replace=(site, value)`` sets that site's output to the constant ``value``.
    """
    n = model.dims.n_layers
    grads: dict[str, Tensor] = {}
    acts: dict[str, Tensor] = {}
    live: dict[str, Tensor] = {}
    leaf: dict[str, Tensor] = {}

    def start(x: Tensor, hook: object) -> Tensor:
        leaf["x"] = (x if embed is None else embed).detach().clone().requires_grad_(True)
        return leaf["x"]

    def keep_act(x: Tensor, hook: object) -> None:
        acts[hook.name] = x.detach()  # type: ignore[attr-defined]

    def keep_grad(g: Tensor, hook: object) -> None:
        grads[hook.name] = g.detach()  # type: ignore[attr-defined]

    def keep_live(x: Tensor, hook: object) -> None:
        live[hook.name] = x  # type: ignore[attr-defined]

    bwd = ["blocks.*.hook_resid_pre", "blocks.*.attn.hook_[qkv]", f"blocks.{n - 1}.hook_resid_post"]
    if not model.dims.parallel:
        bwd.append("blocks.*.hook_resid_mid")
    fwd = [("blocks.0.hook_resid_pre", start), ("blocks.*.hook_resid_pre", keep_act)]
    if replace is not None:
        fwd.append((replace[0], lambda x, hook: replace[1]))
    if rep > 1:
        bwd += ["blocks.*.attn.hook_attn_scores", "blocks.*.attn.hook_z"]
        fwd += [("blocks.*.attn.hook_k", keep_live), ("blocks.*.attn.hook_attn_scores", keep_live)]
        fwd += [("blocks.*.attn.hook_pattern", keep_act)]
    with torch.enable_grad(), model.hooks(fwd=fwd, bwd=[(b, keep_grad) for b in bwd]):
        logits = model(batch.clean_tokens, batch.clean_mask)
        torch.autograd.grad(metric(logits, batch).mean(), leaf["x"], retain_graph=rep > 1)
        for layer in range(n if rep > 1 else 0):
            split_kv_grads(grads, acts, live, layer, rep)
    return grads, acts


def port_grads(
    model: HookedModel,
    graph: Graph,
    batch: TaskBatch,
    metric: Metric,
    embed: Tensor | None,
    maps: list[list[tuple[Tensor, Tensor]]],
    replace: Replace | None = None,
) -> Tensor:
    """d metric / d(input of each port) [batch pos port d_model] at one gradient point (the input
    ``embed``, or the clean input with ``replace=(site, constant value)``)."""
    grads, acts = _site_grads(model, batch, metric, embed, kv_repeat(model, graph), replace)
    n, per = model.dims.n_layers, graph.ports_per_layer
    x0 = acts["blocks.0.hook_resid_pre"]
    out = x0.new_zeros(*x0.shape[:2], len(graph.ports), x0.shape[-1])
    final = grads.get(f"blocks.{n - 1}.hook_resid_post", torch.zeros_like(x0))
    for layer in range(n):
        resid = acts[f"blocks.{layer}.hook_resid_pre"]
        g_attn = _attn_port_grads(model, layer, grads, resid, maps[layer])
        b = layer * per
        out[:, :, b : b + per - 1] = g_attn
        g_post = grads.get(f"blocks.{layer + 1}.hook_resid_pre", final) if layer < n - 1 else final
        if graph.parallel:
            g_pre = grads.get(f"blocks.{layer}.hook_resid_pre", torch.zeros_like(x0))
            out[:, :, b + per - 1] = g_pre - g_post - g_attn.sum(2)
        else:
            g_mid = grads.get(f"blocks.{layer}.hook_resid_mid", torch.zeros_like(x0))
            out[:, :, b + per - 1] = g_mid - g_post
    out[:, :, -1] = final
    return out


def _attn_port_grads(
    model: HookedModel,
    layer: int,
    grads: dict[str, Tensor],
    resid: Tensor,
    maps: list[tuple[Tensor, Tensor]],
) -> Tensor:
    """Gradients of a layer's q, k, v ports [batch pos port d_model] (q heads, k, v heads)."""
    parts = []
    for (weight, _), c in zip(maps, "qkv"):
        g = grads.get(f"blocks.{layer}.attn.hook_{c}")
        if g is None:  # nothing downstream depends on it (e.g. keys of a one-token prompt)
            g = resid.new_zeros(*resid.shape[:2], *weight.shape[1:])
        if g.shape[2] != weight.shape[1]:  # ungrouped k/v ports: one per query head
            weight = weight.repeat_interleave(g.shape[2] // weight.shape[1], dim=1)
        parts.append(torch.einsum("bphe,dhe->bphd", g, weight))
    g_normed = torch.cat(parts, dim=2)  # gradient w.r.t. ln1's output, per port
    x = resid[:, :, None].expand(-1, -1, g_normed.shape[2], -1).contiguous().requires_grad_(True)
    ln1 = layer_module(model, layer, model.family.ln1)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(ln1(x), x, g_normed)
    return g
