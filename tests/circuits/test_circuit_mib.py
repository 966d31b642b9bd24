"""MIB's CPR and CMD: the area arithmetic by hand, the curve against the library's faithfulness,
intervals and circuit stability on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope.circuits import faithfulness
from mechscope.circuits.mib import (
    PERCENTAGES,
    areas,
    mib_score,
    ranked,
    stability,
    stability_sizes,
    subset,
)
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model
from mechscope.tasks.base import TaskBatch


def hooked(kind: str) -> HookedModel:
    return HookedModel(tiny_model(kind))


def toy_batch(seed: int = 0, b: int = 3, p: int = 6) -> TaskBatch:
    """Random prompts whose corrupted twins differ at positions 1 and 3 (as conftest's)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(2, 101, (b, p), generator=g)
    corrupt = clean.clone()
    corrupt[:, [1, 3]] = torch.randint(2, 101, (b, 2), generator=g)
    mask = torch.ones(b, p, dtype=torch.long)
    answers = torch.randint(2, 101, (2, b), generator=g)
    last = torch.full((b,), p - 1)
    return TaskBatch("toy", clean, corrupt, mask, mask, answers[0], answers[1], last, last)


def logit_diff64(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    rows = torch.arange(len(batch))
    last = logits[rows, batch.last_pos]
    return last[rows, batch.answer_ids] - last[rows, batch.wrong_ids]


def test_areas_by_hand() -> None:
    assert areas([1.0] * 10) == pytest.approx((0.999, 0.0, 1.0))
    assert areas([0.0] * 10) == pytest.approx((0.0, 0.999, 0.0))
    f = [0, 0, 0, 0, 0, 0, 0, 0, 0.5, 1.5]  # only the last two intervals count
    under = 0.3 * 0.25 + 0.5 * 1.0
    from_1 = 0.001 + 0.003 + 0.005 + 0.01 + 0.03 + 0.05 + 0.1 + 0.3 * 0.75 + 0.5 * 0.5
    assert areas(f) == pytest.approx((under, from_1, 0.2))
    assert len(PERCENTAGES) == 10 and PERCENTAGES[0] == 0.001 and PERCENTAGES[-1] == 1.0


@pytest.fixture(scope="module")
def setup():
    model, batch = hooked("llama"), toy_batch(b=8)
    return model, batch, mib_score(model, batch, method="eap", n_boot=200)


def test_curve_matches_faithfulness(setup) -> None:
    model, batch, score = setup
    assert score.signed[-1] == pytest.approx(1.0, abs=1e-5)  # every edge: the clean run
    assert score.absolute[-1] == pytest.approx(1.0, abs=1e-5)
    assert score.cpr == pytest.approx(areas(score.signed)[0])
    assert score.cmd == pytest.approx(areas(score.absolute)[1])
    from mechscope.circuits.eap import attribute

    scored = attribute(model, batch, method="eap")
    for i in (4, 6):  # the |score| ranking is the library's top_n
        n = score.n_edges[i]
        want = faithfulness(model, batch, scored.top_n(n).pruned())
        assert score.absolute[i] == pytest.approx(want, abs=1e-4)
    signed = ranked(scored, score.n_edges[6], absolute=False)
    # MIB ranks the loss's scores (-metric): the edges whose patching lowers the metric most
    assert bool(
        signed.scores[signed.mask].max()
        <= signed.scores[~signed.mask & signed.graph.edge_mask].min()
    )


def test_intervals_are_seeded(setup) -> None:
    model, batch, score = setup
    # percentile intervals of a ratio need not hold the point estimate; they must be ordered
    assert score.cpr_ci[0] < score.cpr_ci[1] and score.cmd_ci[0] < score.cmd_ci[1]
    again = mib_score(model, batch, method="eap", n_boot=200)
    assert again.cpr_ci == score.cpr_ci and again.cmd_ci == score.cmd_ci
    d = score.to_dict()
    assert d["cpr_ci"] == list(score.cpr_ci) and d["n_prompts"] == 8


def test_stability_of_the_whole_graph_is_one() -> None:
    model, batch = hooked("llama"), toy_batch(b=6)
    from mechscope.circuits.graph import Graph

    total = Graph.from_dims(model.dims).n_edges
    whole = stability(model, batch, method="eap", n_edges=total, n_boot=3)
    assert whole["mean_jaccard"] == 1.0
    few = stability(model, batch, method="eap", n_edges=5, n_boot=3)
    assert 0.0 <= few["min_jaccard"] <= few["mean_jaccard"] <= 1.0
    # several sizes from one scoring per resample: the same figures as one size at a time
    both = stability_sizes(model, batch, method="eap", sizes=[5, total], n_boot=3)
    assert both[0] == few and both[1] == whole


def test_subset_keeps_rows() -> None:
    batch = toy_batch(b=4)
    sub = subset(batch, [3, 3, 0])
    assert torch.equal(sub.clean_tokens[0], batch.clean_tokens[3]) and len(sub) == 3


def test_faithfulness_ci_brackets_a_planted_spread() -> None:
    from mechscope.circuits.eap import attribute
    from mechscope.circuits.faithfulness import Evaluator

    model, batch = hooked("llama"), toy_batch(b=8)
    scored = attribute(model, batch, method="eap")
    ev = Evaluator(model, batch, logit_diff64, scored.graph)
    whole = ev.faithfulness_ci(ev.values(scored.mask))  # every edge: exactly 1
    assert whole == pytest.approx((1.0, 1.0), abs=1e-5)
    part = scored.top_n(40)
    lo, hi = ev.faithfulness_ci(ev.values(part.mask), n_boot=300)
    assert lo < faithfulness(model, batch, part, logit_diff64) < hi
    # by hand: resample prompts, ratio of the resampled means
    v, c, k = ev.values(part.mask).numpy(), ev.clean_values.numpy(), ev.corrupt_values.numpy()
    idx = np.random.default_rng(0).integers(0, 8, size=(300, 8))
    boots = [(v[i].mean() - k[i].mean()) / (c[i].mean() - k[i].mean()) for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), abs=1e-9)


def test_discover_gives_every_curve_point_its_interval() -> None:
    from mechscope.circuits import discover

    model, batch = hooked("llama"), toy_batch(b=8)
    found = discover(model, batch, logit_diff64, method="eap", edges=40, curve=[10, 40, 80])
    data = found.to_dict()
    lo, hi = data["faithfulness_ci"]
    assert lo <= found.circuit.faithfulness <= hi and hi - lo > 1e-4
    for point in data["curve"]:
        assert point["ci"][0] - 1e-9 <= point["faithfulness"] <= point["ci"][1] + 1e-9
    # the point of 40 edges is the kept circuit: the same interval
    assert data["curve"][1]["ci"] == pytest.approx([lo, hi])
    # one prompt: no interval
    single = discover(model, subset(batch, [0]), logit_diff64, method="eap", edges=40, curve=[10])
    assert (
        single.to_dict()["faithfulness_ci"] is None and single.to_dict()["curve"][0]["ci"] is None
    )


def test_mib_submission_json() -> None:
    from mechscope.circuits.eap import attribute
    from mechscope.circuits.graph import Graph
    from mechscope.circuits.mib import to_mib_json
    from mechscope.errors import MechscopeError

    model, batch = hooked("llama"), toy_batch()
    scored = attribute(model, batch, method="eap", graph=Graph.from_dims(model.dims, True))
    data = to_mib_json(scored.top_n(7), model)
    assert set(data) == {"cfg", "nodes", "edges"} and data["cfg"]["n_layers"] == 3
    assert len(data["edges"]) == scored.total_edges
    assert sum(e["in_graph"] for e in data["edges"].values()) == 7
    assert "input->a0.h0<q>" in data["edges"] and "a0.h1->a1.h0<k>" in data["edges"]
    top = max(data["edges"].items(), key=lambda kv: abs(kv[1]["score"]))
    assert top[1]["in_graph"] and data["nodes"]["logits"]["in_graph"] in (True, False)
    with pytest.raises(MechscopeError, match="ungroup_kv=True"):
        to_mib_json(attribute(model, batch, method="eap"), model)


def test_every_edge_method_scores() -> None:
    """Each ranking method of MIB's table runs through mib_score; with every edge kept the circuit
    is the clean run, and a method's CPR beats MIB's random baseline on this pair."""
    model, batch = hooked("llama"), toy_batch(b=4)
    cpr = {}
    for method in ("eap-ig-activations", "random"):
        score = mib_score(model, batch, method=method, steps=2, n_boot=50)
        assert score.signed[-1] == pytest.approx(1.0, abs=1e-5)
        cpr[method] = score.cpr
    assert cpr["eap-ig-activations"] > cpr["random"]
