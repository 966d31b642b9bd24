"""EAP scores are exact first-order effects: delta . gradient equals the derivative of the patched
metric along the edge's patch, measured by finite differences through the intervention engine
(a separate code path: forward hooks, no backward), in float64."""

from __future__ import annotations

import pytest
import torch

from conftest import hooked, logit_diff64, toy_batch
from mechscope.circuits import Evaluator, Graph, attribute
from mechscope.errors import MechscopeError


def _directional(ev: Evaluator, i: int, j: int, eps: float) -> float:
    """d metric / d(fraction of edge (i, j) patched) by central differences."""
    lo = torch.ones(ev.graph.edge_mask.shape, dtype=torch.float64)
    hi = lo.clone()
    lo[i, j], hi[i, j] = 1 - eps, 1 + eps
    return (ev.value(lo) - ev.value(hi)) / (2 * eps)


# RMSNorm computes in float32 even in a float64 model, hence the looser check for Llama.
@pytest.mark.parametrize(
    ("kind", "eps", "rtol"),
    [
        ("gpt2", 1e-4, 1e-6),
        ("gpt_neox", 1e-4, 1e-6),
        ("gpt_neox_sequential", 1e-4, 1e-6),
        ("llama", 3e-3, 1e-3),
    ],
)
def test_eap_equals_directional_derivative(kind: str, eps: float, rtol: float) -> None:
    model, batch = hooked(kind, torch.float64), toy_batch()
    scored = attribute(model, batch, metric=logit_diff64, method="eap")
    ev = Evaluator(model, batch, metric=logit_diff64)
    edges = scored.graph.edge_mask.nonzero()
    pick = torch.randperm(len(edges), generator=torch.Generator().manual_seed(0))[:12]
    top = scored.scores.abs().max().item()
    for i, j in edges[pick].tolist():
        fd = _directional(ev, i, j, eps)
        assert scored.scores[i, j].item() == pytest.approx(fd, abs=rtol * top), (i, j)


def test_eap_ig_averages_gradients() -> None:
    """Scores are linear in the gradients, so IG with 2 steps = mean of the gradients at the
    corrupted input and halfway (k = 0, 1 of 2, the reference library's points)."""
    from mechscope.circuits.eap import edge_scores, port_grads
    from mechscope.circuits.nodes import qkv_maps, run_nodes
    from mechscope.tasks.metrics import logit_diff

    model, batch = hooked("gpt2"), toy_batch()
    graph = Graph.from_dims(model.dims)
    _, clean = run_nodes(model, batch.clean_tokens, batch.clean_mask)
    _, corrupt = run_nodes(model, batch.corrupt_tokens, batch.clean_mask)
    maps = [qkv_maps(model, layer) for layer in range(model.dims.n_layers)]
    mid = (clean[:, :, 0] + corrupt[:, :, 0]) / 2
    g = port_grads(model, graph, batch, logit_diff, mid, maps)
    g = (g + port_grads(model, graph, batch, logit_diff, corrupt[:, :, 0], maps)) / 2
    want = edge_scores(graph, corrupt - clean, g)
    got = attribute(model, batch, method="eap-ig", steps=2).scores
    torch.testing.assert_close(got, want)


def test_eap_ig_activations_averages_its_points() -> None:
    """EAP-IG-activations = mean gradient over (the input and each layer's attention and MLP
    output) x (k = 1..steps), the reference library's points; scores are linear in gradients."""
    from mechscope.circuits.eap import edge_scores, port_grads
    from mechscope.circuits.nodes import qkv_maps, run_nodes
    from mechscope.tasks.metrics import logit_diff

    model, batch = hooked("llama"), toy_batch()
    graph = Graph.from_dims(model.dims)
    mask = batch.clean_mask
    _, clean = run_nodes(model, batch.clean_tokens, mask)
    _, corrupt = run_nodes(model, batch.corrupt_tokens, mask)
    _, c_cache = model.run_with_cache(batch.clean_tokens, attention_mask=mask)
    _, k_cache = model.run_with_cache(batch.corrupt_tokens, attention_mask=mask)
    maps = [qkv_maps(model, layer) for layer in range(model.dims.n_layers)]
    grads, count = 0, 0
    for a in (0.5, 1.0):
        e = corrupt[:, :, 0] + a * (clean[:, :, 0] - corrupt[:, :, 0])
        grads, count = grads + port_grads(model, graph, batch, logit_diff, e, maps), count + 1
        for layer in range(model.dims.n_layers):
            for site in (f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"):
                value = k_cache[site] + a * (c_cache[site] - k_cache[site])
                g = port_grads(model, graph, batch, logit_diff, None, maps, (site, value))
                grads, count = grads + g, count + 1
    want = edge_scores(graph, corrupt - clean, grads / count)
    got = attribute(model, batch, method="eap-ig-activations", steps=2)
    assert count == 2 * (1 + 2 * model.dims.n_layers) and got.meta["steps"] == 2
    torch.testing.assert_close(got.scores, want)


def test_a_replaced_component_passes_no_gradient() -> None:
    """At k = steps the component's output is its clean value, so the forward is the clean run:
    ports after the component get EAP's clean gradients, and the component's own input port gets
    none (its output is a constant)."""
    from mechscope.circuits.eap import port_grads
    from mechscope.circuits.nodes import qkv_maps

    model, batch = hooked("llama", torch.float64), toy_batch()
    graph = Graph.from_dims(model.dims)
    maps = [qkv_maps(model, layer) for layer in range(model.dims.n_layers)]
    site = "blocks.0.hook_mlp_out"
    _, cache = model.run_with_cache(batch.clean_tokens, attention_mask=batch.clean_mask)
    cut = port_grads(model, graph, batch, logit_diff64, None, maps, (site, cache[site]))
    full = port_grads(model, graph, batch, logit_diff64, None, maps)
    m0 = graph.ports.index("m0")
    assert cut[:, :, m0].abs().max() == 0 and full[:, :, m0].abs().max() > 1e-3
    torch.testing.assert_close(cut[:, :, m0 + 1 :], full[:, :, m0 + 1 :])
    assert (cut[:, :, :m0] - full[:, :, :m0]).abs().max() > 1e-6  # paths through m0 are cut


def test_bad_method() -> None:
    with pytest.raises(MechscopeError, match="unknown method"):
        attribute(hooked("gpt2"), toy_batch(), method="acdc")


def test_ungrouped_kv_ports_equal_directional_derivative() -> None:
    """Per-query-head k/v ports under GQA (6 heads, 2 kv heads): the split gradients (autograd
    through the scores, pattern^T dz) against the replica-batch intervention."""
    model, batch = hooked("llama", torch.float64), toy_batch()
    graph = Graph.from_dims(model.dims, ungroup_kv=True)
    assert graph.n_kv == 6 and graph.ports[graph.port_index(1, "k", 4)] == "a1.h4<k>"
    scored = attribute(model, batch, metric=logit_diff64, method="eap", graph=graph)
    ev = Evaluator(model, batch, metric=logit_diff64, graph=graph)
    kv = [j for j, p in enumerate(graph.ports) if p.endswith(("<k>", "<v>"))]
    edges = [(i, j) for i, j in graph.edge_mask.nonzero().tolist() if j in kv]
    top = scored.scores.abs().max().item()
    for n in torch.randperm(len(edges), generator=torch.Generator().manual_seed(0))[:10].tolist():
        i, j = edges[n]
        fd = _directional(ev, i, j, 3e-3)
        assert scored.scores[i, j].item() == pytest.approx(fd, abs=1e-3 * top), (i, j)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gpt_neox"])
def test_qkv_maps_reproduce_the_projection_modules(kind: str) -> None:
    from mechscope.circuits.nodes import layer_module, qkv_maps
    from mechscope.sites.hooks import fused_slice, heads_view

    model = hooked(kind)
    f, d = model.family, model.dims
    x = torch.randn(2, 3, d.d_model)
    for i, (weight, bias) in enumerate(qkv_maps(model, 1)):
        n = d.n_heads if i == 0 else d.n_kv_heads
        if f.qkv == "separate":
            module, get = layer_module(model, 1, (f.q, f.k, f.v)[i]), heads_view(n, d.d_head)[0]
        else:
            module, get = layer_module(model, 1, f.q), fused_slice(f.qkv, i, n, d.d_head)[0]
        with torch.no_grad():
            want = get(module(x))
        torch.testing.assert_close(torch.einsum("bpd,dhe->bphe", x, weight) + bias, want)
