"""Tracr-compiled models: mechscope's GPT-2 conversion equals Tracr's forward, and the circuit
methods recover the compiled circuit (a planted ground truth).

The exports in tests/data/tracr were written by benchmarks/peers/tracr_export.py in Tracr's own
environment (jax); ``ref_logits`` are Tracr's compiled forward on 64 inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mechscope.circuits import Graph, acdc, attribute, attribute_nodes
from mechscope.circuits.tracr import (
    compiled_edges,
    exact_edge_scores,
    exact_node_scores,
    exercised_edges,
    layout_edges,
    node_recovery,
    recovery,
)
from mechscope.errors import MechscopeError
from mechscope.tasks.metrics import logit_diff
from mechscope.toys.tracr import load_tracr

DATA = Path(__file__).parents[1] / "data" / "tracr"
PROGRAMS = ["frac_prevs", "detect_abc", "count_less_freq", "pointer"]


@pytest.fixture(scope="module", params=PROGRAMS)
def tracr(request):
    return load_tracr(DATA / request.param)


def test_logits_equal_tracr(tracr):
    """The hooked GPT-2 (identity norms, padded heads) gives Tracr's logits on every input."""
    with torch.no_grad():
        logits = tracr.model(tracr.ref_tokens)[..., : tracr.n_out]
    torch.testing.assert_close(logits, tracr.ref_logits, atol=1e-5, rtol=0)
    # and the decoded outputs (argmax of a categorical program) agree at every non-BOS position
    if tracr.meta["output_vocab"] is not None:
        same = logits[:, 1:].argmax(-1) == tracr.ref_logits[:, 1:].argmax(-1)
        assert bool(same.all())


def test_internals_equal_tracr(tracr):
    """Attention scores and every residual equal Tracr's (the scale folded into W_Q, the zero
    padding of the residual untouched)."""
    model, n = tracr.model, tracr.ref_residuals.shape[1]
    L, d = model.dims.n_layers, tracr.ref_residuals.shape[-1]
    names = [f"blocks.{i}.attn.hook_attn_scores" for i in range(L)]
    names += [f"blocks.{i}.hook_resid_{s}" for i in range(L) for s in ("mid", "post")]
    _, cache = model.run_with_cache(tracr.ref_tokens[:n], names)
    lower = torch.ones(tracr.ref_tokens.shape[1], tracr.ref_tokens.shape[1]).tril().bool()
    for i in range(L):
        got = cache[f"blocks.{i}.attn.hook_attn_scores"][..., lower]
        torch.testing.assert_close(got, tracr.ref_attn_logits[i][..., lower], atol=1e-4, rtol=1e-5)
        for j, s in enumerate(("mid", "post")):
            resid = cache[f"blocks.{i}.hook_resid_{s}"]
            torch.testing.assert_close(
                resid[..., :d], tracr.ref_residuals[2 * i + j], atol=1e-5, rtol=0
            )
            assert not resid[..., d:].any()


def test_task_pairs_change_the_output(tracr):
    """Every clean/corrupted pair has a positive logit difference clean and not corrupted."""
    with torch.no_grad():
        clean = logit_diff(tracr.model(tracr.batch.clean_tokens), tracr.batch)
        corrupt = logit_diff(tracr.model(tracr.batch.corrupt_tokens), tracr.batch)
    assert bool((clean > corrupt).all())


def test_compiled_edges_are_the_layout(tracr):
    """Tracr's layout (operation -> component) gives the compiled edges, except the input's
    edges that carry only the constant ``one`` direction and BOS."""
    g = Graph.from_dims(tracr.model.dims)
    compiled, layout = compiled_edges(tracr, g), layout_edges(tracr, g)
    assert bool((layout <= compiled).all())
    extra = compiled & ~layout
    assert extra[1:].sum() == 0, g.edge_names(extra)


def test_detect_abc_edges():
    """detect_pattern(tokens, "abc"): the layout written out by hand."""
    t = load_tracr(DATA / "detect_abc")
    g = Graph.from_dims(t.model.dims)
    got = set(g.edge_names(layout_edges(t, g)))
    want = {("input", "m0"), ("m0", "a1.h0<v>"), ("m0", "a1.h1<v>"), ("m0", "m2")}
    want |= {("input", f"a1.h{h}<{c}>") for h in (0, 1) for c in "qk"}
    want |= {("a1.h0", "m1"), ("a1.h1", "m1"), ("m1", "m2"), ("m2", "logits")}
    assert got == want


METHODS = ["eap", "eap-ig", "eap-ig-activations", "exact", "acdc"]
SLOW = {"eap-ig-activations", "exact", "acdc"}  # one forward or backward per edge or layer
CASES = [("frac_prevs", m) for m in METHODS] + [
    pytest.param("detect_abc", m, marks=[pytest.mark.slow] if m in SLOW else []) for m in METHODS
]


@pytest.mark.parametrize(("program", "method"), CASES)
def test_methods_recover_the_circuit(program, method):
    """Top-n edges (n = the exercised edges) are exactly the exercised edges; ACDC keeps them."""
    t = load_tracr(DATA / program)
    g = Graph.from_dims(t.model.dims)
    compiled, exercised = compiled_edges(t, g), exercised_edges(t, g)
    n = int(exercised.sum())
    if method == "exact":
        circuit = exact_edge_scores(t.model, t.batch).top_n(n)
    elif method == "acdc":
        gap = float(np.subtract(*_metrics(t)))
        circuit = acdc(t.model, t.batch, threshold=0.01 * gap, metric=logit_diff)
    else:
        circuit = attribute(t.model, t.batch, method=method).top_n(n)
    r = recovery(circuit, compiled, exercised)
    assert (r["edge_precision"], r["edge_recall"]) == (1.0, 1.0), r
    assert (r["node_precision"], r["node_recall"]) == (1.0, 1.0), r


@pytest.mark.parametrize("method", ["node-ap", "exact-node"])
def test_node_methods_recover_the_components(method):
    t = load_tracr(DATA / "detect_abc")
    g = Graph.from_dims(t.model.dims)
    compiled, exercised = compiled_edges(t, g), exercised_edges(t, g)
    fn = attribute_nodes if method == "node-ap" else exact_node_scores
    r = node_recovery(fn(t.model, t.batch), 6, compiled, exercised)  # the input + 5 components
    assert (r["node_precision"], r["node_recall"]) == (1.0, 1.0), r


def test_count_less_freq_blind_spots():
    """Two exact facts of the compiled count_less_freq: the selector-width MLP is a step, so the
    gradient through it is 0 (EAP scores the head -> MLP1 edge 0, though patching it flips the
    answer); the second selector ignores its query, so the query edge's exact effect is 0."""
    t = load_tracr(DATA / "count_less_freq")
    g = Graph.from_dims(t.model.dims)
    exercised = exercised_edges(t, g)
    exact = exact_edge_scores(t.model, t.batch).scores
    eap = attribute(t.model, t.batch, method="eap").scores
    head_mlp = g.nodes.index("a1.h0"), g.ports.index("m1")
    query = g.nodes.index("m0"), g.ports.index("a1.h0<q>")
    assert eap[head_mlp] == 0 and exact[head_mlp] == pytest.approx(-2.0)
    assert exact[query] == 0
    others = exercised.clone()
    others[query] = False
    assert bool((exact[others] != 0).all())


def test_pointer_q_composition():
    """tokens[tokens[0]]: head L0H0 feeds head L1H0's query. Tracr's attention is hard, so the
    gradient through L1H0's softmax vanishes: EAP scores the composition edge 0 (exact effect
    -0.625) while EAP-IG, integrating from the corrupted input, recovers the circuit."""
    t = load_tracr(DATA / "pointer")
    g = Graph.from_dims(t.model.dims)
    compiled, exercised = compiled_edges(t, g), exercised_edges(t, g)
    assert ("a0.h0", "a1.h0<q>") in g.edge_names(exercised)
    edge = g.nodes.index("a0.h0"), g.ports.index("a1.h0<q>")
    eap = attribute(t.model, t.batch, method="eap").scores.detach()
    exact = exact_edge_scores(t.model, t.batch).scores
    assert abs(float(eap[edge])) < 1e-9 and float(exact[edge]) == pytest.approx(-0.625)
    ig = attribute(t.model, t.batch, method="eap-ig").top_n(int(exercised.sum()))
    r = recovery(ig, compiled, exercised)
    assert (r["edge_precision"], r["edge_recall"]) == (1.0, 1.0), r


def _metrics(t):
    with torch.no_grad():
        clean = logit_diff(t.model(t.batch.clean_tokens), t.batch).mean()
        corrupt = logit_diff(t.model(t.batch.corrupt_tokens), t.batch).mean()
    return clean, corrupt


def test_bad_exports(tmp_path):
    with pytest.raises(MechscopeError, match="no Tracr export"):
        load_tracr(tmp_path / "missing")
    for name in ("detect_abc.npz", "detect_abc.json"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    meta = json.loads((tmp_path / "detect_abc.json").read_text())
    meta["config"]["causal"] = False
    (tmp_path / "detect_abc.json").write_text(json.dumps(meta))
    with pytest.raises(MechscopeError, match="compile with causal=True"):
        load_tracr(tmp_path / "detect_abc")


def test_separation_is_the_auroc_of_exercised_against_outside_edges() -> None:
    """count_less_freq: EAP scores some exercised edges zero, tying with the outside edges; the
    AUROC counts a tie one half (by hand over every pair)."""
    from mechscope.circuits.tracr import separation

    t = load_tracr(DATA / "count_less_freq")
    g = Graph.from_dims(t.model.dims)
    compiled, exercised = compiled_edges(t, g), exercised_edges(t, g)
    scored = attribute(t.model, t.batch, method="eap")
    a = scored.scores.detach().abs()[exercised]
    b = scored.scores.detach().abs()[g.edge_mask & ~compiled]
    pairs = [(x > y) + 0.5 * (x == y) for x in a.tolist() for y in b.tolist()]
    want = sum(pairs) / len(pairs)
    assert separation(scored, compiled, exercised) == pytest.approx(want)
    assert 0.5 < want < 1  # the blind edges tie, the rest separate
