"""Expert pruning and merging evaluated like ``mechscope compress`` (compress.evaluate.measure):
on the planted MoE the causal-effect guide is no worse than random (paired 95% interval over
held-out windows) and CKA-guided merging beats random pruning; the reported numbers equal a
direct computation on a Mixtral whose pruned experts were cut out of the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import MixtralForCausalLM

from mechscope.moe import moe_analysis
from mechscope.moe.planted import chain_batch, chain_task
from mechscope.moe.prune import prune_curves, prune_plan, prune_report
from mechscope.stats import bootstrap_ci


def _windows(planted, seed: int, n: int = 32):  # type: ignore[no-untyped-def]
    ids = torch.tensor(sorted(planted.classes))
    g = torch.Generator().manual_seed(seed)
    return chain_batch(planted.successor, ids[torch.randint(len(ids), (n,), generator=g)], 16)


@pytest.fixture(scope="module", params=["planted", "planted_three"])
def case(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """(planted, analysis on guide windows, held-out sets, pruning report)."""
    planted = request.getfixturevalue(request.param)
    result = moe_analysis(planted.model, _windows(planted, 5, 16), classes=planted.classes,
                          class_names=planted.class_names, cka_windows=4, causal_windows=16)  # fmt: skip
    sets = {"lm": _windows(planted, 9), "chain": chain_task(planted, 32, seed=3)}
    before = [p.clone() for p in planted.model.hf.parameters()]
    report = prune_report(planted.model, result, sets)
    assert all(torch.equal(a, b) for a, b in zip(before, planted.model.hf.parameters()))
    return planted, result, sets, report


def test_causal_guide_is_no_worse_than_random_and_merging_beats_it(case) -> None:
    _, _, _, report = case
    curves = report["curves"]
    assert set(curves) == {"reroute_effect", "ablate_effect", "load", "router_weight", "random",
                           "cka_merge"}  # fmt: skip
    for row in curves["reroute_effect"]:
        d = row["vs_random"]["lm"]  # paired (guided - random) held-out loss over windows
        assert d["mean"] <= 0 and d["low"] < 0, row["n"]
        assert row["delta"]["lm"]["low"] > 0  # removing an expert of the planted model costs
    assert curves["cka_merge"][0]["vs_random"]["lm"]["high"] < 0  # separated from random
    base = report["base"]["chain"]
    assert base["low"] > 5  # the planted model does its task (logit difference)
    for m in report["merge"]:
        assert m["merge_loss_delta"] < m["prune_loss_delta"]


def _cut(model, plan: dict[int, list[int]]) -> MixtralForCausalLM:  # type: ignore[no-untyped-def]
    """A Mixtral with the experts of ``plan`` removed from its weights (router rows included)."""
    cfg = model.hf.config
    n = cfg.num_local_experts
    removed = {len(v) for v in plan.values()}.pop()
    small = MixtralForCausalLM(type(cfg)(**{**cfg.to_dict(), "num_local_experts": n - removed}))
    state = {}
    for name, p in model.hf.state_dict().items():
        layer = int(name.split(".")[2]) if name.startswith("model.layers.") else -1
        if layer >= 0 and ("mlp.gate." in name or "mlp.experts." in name):
            keep = [e for e in range(n) if e not in plan[layer]]
            p = p[keep]
        state[name] = p
    small.load_state_dict(state)
    return small.eval()


@torch.no_grad()
def test_the_evaluation_equals_a_direct_computation(case) -> None:
    planted, result, sets, report = case
    scores = {"reroute_effect": result.effects.reroute}
    ref = torch.cat([planted.model.hf(w).logits for w in sets["lm"].split(8)]).float()
    got = prune_curves(planted.model, sets, scores, max_pruned=1, seeds=0, reference=ref)
    small = _cut(planted.model, prune_plan(result.effects.reroute, 1))
    logits = small(sets["lm"]).logits.float()
    task = sets["chain"]
    last = small(task.clean_tokens).logits[torch.arange(len(task)), task.last_pos]
    lm = F.cross_entropy(logits[:, :-1].transpose(1, 2), sets["lm"][:, 1:], reduction="none")
    kl = F.kl_div(logits.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none")
    direct = {
        "lm": lm.mean(1),
        "kl": kl.sum(-1).mean(1),
        "agreement": (logits.argmax(-1) == ref.argmax(-1)).float().mean(1),
        "chain": last.gather(1, task.answer_ids[:, None])[:, 0]
        - last.gather(1, task.wrong_ids[:, None])[:, 0],
    }
    point = got["reroute_effect"][0]
    for k, v in direct.items():
        assert np.allclose(point[k], v.numpy(), atol=2e-4), k
    row = report["curves"]["reroute_effect"][0]["value"]
    for k, v in direct.items():
        assert abs(row[k]["mean"] - float(v.mean())) < 2e-4, k
        low, high = bootstrap_ci(np.asarray(point[k]))
        assert (row[k]["low"], row[k]["high"]) == pytest.approx((low, high), abs=2e-4)
