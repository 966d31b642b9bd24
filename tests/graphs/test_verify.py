"""graph verify: the graph's prediction equals the intervention in the replacement model, and
the real-model intervention runs and reports."""

from __future__ import annotations

import pytest
import torch
from graphkit import random_set

from mechscope.errors import MechscopeError
from mechscope.graphs import GraphConfig, attribute
from mechscope.graphs.graph import node_id
from mechscope.graphs.verify import verify
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model


@pytest.mark.parametrize("cross", [False, True])
def test_prediction_exact_in_replacement_model(cross: bool) -> None:
    model = HookedModel(tiny_model("llama", dtype=torch.float64))
    tcs = random_set(model, cross_layer=cross, activation="jumprelu")
    tokens = torch.randint(1, 100, (6,), generator=torch.Generator().manual_seed(5))
    g = attribute(model, tcs, tokens, GraphConfig(batch_size=64), quiet=True)
    first = [i for i in range(g.n_features) if int(g.features[i, 0]) == 0][:3]
    nodes = [node_id(g, i) for i in first]
    checks = verify(model, tcs, g, nodes, mode="steer", scale=1 + 1e-6, frozen=True)
    for c in checks:
        p, m = torch.tensor(c.predicted), torch.tensor(c.measured)
        assert m.abs().max() > 0
        assert float((p - m).abs().max() / m.abs().max()) < 1e-4
    real = verify(model, tcs, g, nodes[:1], mode="ablate")
    assert real[0].to_dict()["relative_error"] >= 0
    with pytest.raises(MechscopeError, match="not a feature node"):
        verify(model, tcs, g, ["99_0_0"])
