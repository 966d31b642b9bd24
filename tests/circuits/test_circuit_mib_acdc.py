"""MIB's CPR and CMD of ACDC: every edge ranked by what ACDC measured when it tried it.

On Tracr-compiled models (the planted circuit is known) the ranking must put the compiled circuit
first: CMD near exact edge patching's and far below the random baseline's, and the signed curve
must reach the full model early (a sign error would rank the circuit last).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.circuits import Graph, acdc
from mechscope.circuits.mib import acdc_ranking, mib_score, score_edges
from mechscope.circuits.tracr import exact_edge_scores
from mechscope.errors import MechscopeError
from mechscope.tasks.metrics import logit_diff
from mechscope.toys.tracr import load_tracr

DATA = Path(__file__).parents[1] / "data" / "tracr"


@pytest.mark.parametrize("program", ["frac_prevs", "pointer"])
def test_acdc_ranking_puts_the_compiled_circuit_first(program: str) -> None:
    t = load_tracr(DATA / program)
    m, b = t.model, t.batch
    g = Graph.from_dims(m.dims)
    with torch.no_grad():
        gap = float((logit_diff(m(b.clean_tokens), b) - logit_diff(m(b.corrupt_tokens), b)).mean())
    found = acdc(m, b, threshold=0.01 * gap, metric=logit_diff)
    ranked = acdc_ranking(found)
    assert torch.equal(ranked.mask, g.edge_mask) and torch.equal(ranked.scores, -found.scores)
    assert ranked.meta["acdc_edges"] == found.n_edges
    r = mib_score(m, b, logit_diff, scored=ranked, n_boot=100)
    exact = mib_score(m, b, logit_diff, scored=exact_edge_scores(m, b), n_boot=100)
    rand = mib_score(m, b, logit_diff, scored=score_edges(m, b, logit_diff, "random", 1, g),
                     n_boot=100)  # fmt: skip
    assert r.cmd == pytest.approx(exact.cmd, abs=0.02) and r.cmd < rand.cmd - 0.3
    assert r.cpr == pytest.approx(exact.cpr, abs=0.02) and r.cpr > rand.cpr + 0.3


def test_acdc_ranking_needs_an_acdc_circuit() -> None:
    t = load_tracr(DATA / "frac_prevs")
    with pytest.raises(MechscopeError, match="needs an ACDC circuit"):
        acdc_ranking(exact_edge_scores(t.model, t.batch))
