"""Intervals where findings are reported: DLA's top heads and DAS's held-out IIA."""

from __future__ import annotations

import pytest
import torch

from mechscope.attribution import direct_logit_attribution
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model
from mechscope.stats import bootstrap_ci, signflip_pvalues
from mechscope.tasks.base import TaskBatch


def test_dla_top_heads_carry_bootstrap_intervals() -> None:
    model = HookedModel(tiny_model("llama"))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, 100, (12, 6), generator=g)
    mask = torch.ones_like(tokens)
    ids = torch.randint(2, 100, (2, 12), generator=g)
    last = torch.full((12,), 5)
    batch = TaskBatch("t", tokens, tokens, mask, mask, ids[0], ids[1], last, last)
    result = direct_logit_attribution(model, batch)
    tops = result.to_dict(per_prompt=False)["top_heads"]
    for h in tops[:3]:
        per_prompt = result.heads[h["layer"], h["head"]]
        assert h["ci"] == pytest.approx(list(bootstrap_ci(per_prompt)))
        assert h["ci"][0] <= h["dla"] <= h["ci"][1]
        assert h["p"] == pytest.approx(signflip_pvalues(per_prompt.numpy()))
        # the interval and the test agree: an interval away from 0 comes with a small p
        if h["ci"][0] > 0 or h["ci"][1] < 0:
            assert h["p"] < 0.1
