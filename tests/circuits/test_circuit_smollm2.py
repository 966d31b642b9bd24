"""EAP-IG on SmolLM2-135M IOI (8 prompts) against the reference library's own figures.

Setting of issue 3's figures: the graph ungroups grouped-query attention as the reference's
TransformerLens model does (123,211 edges), BOS is prepended (the reference always does), and the
corruption swaps the second-clause subject for the indirect object (``corruption="swap"``; the
reference's ``corrupted_hard``). The expected values were measured with hannamw/EAP-IG (commit
795f560, benchmarks/peers/run_eap_ig.py) on exactly these prompts and tokens: top-n faithfulness
0.7731 at 0.5% and 1.0006 at 1% of edges (clean logit difference 4.3082, corrupted -4.8541). Its
edge scores equal mechscope's times -1/8 (a loss instead of the metric, and a second division by
the batch size), so the same circuits come out and the faithfulness must agree closely.
"""

from __future__ import annotations

import pytest

from mechscope.circuits import Evaluator, Graph, attribute
from mechscope.tasks import load_task

REFERENCE = {0.005: 0.7731, 0.01: 1.0006}


@pytest.mark.slow
def test_eap_ig_matches_the_reference_library(smollm2) -> None:
    task = load_task("ioi", smollm2, n=8, corruption="swap")
    batch = task.tokenize(smollm2, prepend_bos=True)
    graph = Graph.from_dims(smollm2.dims, ungroup_kv=True)
    assert graph.n_edges == 123_211
    scored = attribute(smollm2, batch, method="eap-ig", steps=5, graph=graph)
    ev = Evaluator(smollm2, batch, graph=graph)
    assert ev.clean_value == pytest.approx(4.3082, abs=2e-3)
    assert ev.corrupt_value == pytest.approx(-4.8541, abs=2e-3)
    for fraction, want in REFERENCE.items():
        f = ev.faithfulness(scored.top_fraction(fraction).mask)
        print(f"EAP-IG top {fraction:.1%}: faithfulness {f:.4f} (reference {want})")
        assert f == pytest.approx(want, abs=0.01)
